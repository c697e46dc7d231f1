//! Logging setup and the per-request trace context.

pub mod context;
pub(crate) mod json;
pub mod redact;
mod writer;

use std::time::Duration;

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber: one flat JSON object per line (or human-readable text).
/// JSON lines carry the enclosing spans' fields, so lines logged inside a request or a job
/// carry its `trace_id` and `request_id`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let stdout = || writer::STDOUT.get_or_init(writer::Batched::stdout).clone();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .fmt_fields(fmt::format::JsonFields::new())
                    .event_format(json::FlatJson)
                    .with_writer(stdout()),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact().with_writer(stdout())).try_init(),
    };
    // A second init (tests, or `check-config` after `serve` in one process) keeps the first.
    let _ = result;
}

/// Writes out the log lines still waiting (at most 2 s, for a stalled stdout): the last thing
/// a process does before it exits.
pub fn flush() {
    if let Some(b) = writer::STDOUT.get() {
        b.flush(Duration::from_secs(2));
    }
}
