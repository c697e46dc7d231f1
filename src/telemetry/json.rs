//! One flat JSON object per line: the request's ids (from `telemetry::context`) and the fields
//! of every enclosing span (a job's) are merged into the event, so `trace_id` and `request_id`
//! sit at the top level of every line logged inside a request or a job, where log shippers and
//! `jq .trace_id` find them.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Writes each line straight into a reused buffer: every API request logs one, and
/// building a `serde_json::Map` for it (a `String` per key, a `Value` per field, a BTreeMap,
/// then serialising it) cost ~26 000 instructions a line, more than the rest of a refused
/// request. Keys are unique: an event's own fields win over its spans' (innermost first),
/// and those over the request context's ids.
pub struct FlatJson;

/// `"name":value` pairs of the event, in the order it recorded them.
struct Fields<'a> {
    out: &'a mut String,
    names: Vec<&'static str>,
}

impl Fields<'_> {
    fn pair(&mut self, field: &Field, value: impl FnOnce(&mut String)) {
        if self.names.contains(&field.name()) {
            return;
        }
        self.names.push(field.name());
        key(self.out, field.name());
        value(self.out);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field, |w| string(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, |w| w.push_str(itoa::Buffer::new().format(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.pair(field, |w| w.push_str(itoa::Buffer::new().format(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let mut buf = ryu::Buffer::new();
        self.pair(field, |w| w.push_str(if value.is_finite() { buf.format_finite(value) } else { "null" }));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, |w| w.push_str(if value { "true" } else { "false" }));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.pair(field, |w| quoted(w, format_args!("{value}")));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, |w| quoted(w, format_args!("{value:?}")));
    }
}

/// `,"name":` (the comma: every key follows `timestamp` and `level`). Field names are Rust
/// identifiers and need no escaping; a span's keys (any JSON) go through `string`.
fn key(w: &mut String, name: &str) {
    w.push_str(",\"");
    w.push_str(name);
    w.push_str("\":");
}

fn escaped_key(w: &mut String, name: &str) {
    w.push(',');
    string(w, name);
    w.push(':');
}

/// `s` as a JSON string, quotes included (the problem bodies use it too).
pub(crate) fn string(w: &mut String, s: &str) {
    w.push('"');
    escape_into(w, s);
    w.push('"');
}

fn quoted(w: &mut String, args: fmt::Arguments<'_>) {
    w.push('"');
    let _ = Escaped(w).write_fmt(args);
    w.push('"');
}

/// True if `s` holds a control character, a quote or a backslash. Eight bytes at a time (the
/// "has a byte less than n / equal to c" word tricks): a byte at a time cost ~8 instructions a
/// byte, the most of any step of a log line.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// JSON string escaping (RFC 8259 §7); most values need none and are copied whole.
fn escape_into(w: &mut String, s: &str) {
    if !needs_escape(s.as_bytes()) {
        w.push_str(s);
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        w.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(w, "\\u{b:04x}");
        } else {
            w.push_str(escape);
        }
        plain = i + 1;
    }
    w.push_str(&s[plain..]);
}

/// `Debug`/`Display` output escaped on its way into the line.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// RFC 3339 UTC with microseconds; the part down to the second is formatted once a second.
fn timestamp(w: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            let at = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            *text = at.format("%Y-%m-%dT%H:%M:%S").to_string();
            *cached = secs;
        }
        w.push_str(text);
    });
    let micros = now.subsec_micros();
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(micros);
    w.push('.');
    w.push_str(&"000000"[digits.len()..]);
    w.push_str(digits);
    w.push('Z');
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a buffer of this thread's, then handed over in one piece: the
        // formatter's own writer is a `dyn fmt::Write`, a virtual call per comma and quote.
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        LINE.with(|cell| {
            // Borrowed already only if formatting a field logged in turn: then a fresh one.
            let (mut held, mut fresh) = (cell.try_borrow_mut(), String::new());
            let line = match &mut held {
                Ok(line) => {
                    line.clear();
                    &mut **line
                }
                Err(_) => &mut fresh,
            };
            render(line, ctx, event);
            writer.write_str(line)
        })
    }
}

fn render<S>(w: &mut String, ctx: &FmtContext<'_, S, JsonFields>, event: &Event<'_>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    w.push_str("{\"timestamp\":\"");
    timestamp(w);
    w.push_str("\",\"level\":\"");
    w.push_str(event.metadata().level().as_str());
    w.push('"');
    let mut fields = Fields { out: w, names: Vec::with_capacity(16) };
    event.record(&mut fields);
    let names = fields.names;
    // Spans' fields (a job's), innermost first; formatted once per span as a JSON object.
    let mut from_spans: Vec<String> = Vec::new();
    if let Some(scope) = ctx.event_scope() {
        for span in scope {
            let ext = span.extensions();
            let Some(formatted) = ext.get::<FormattedFields<JsonFields>>() else { continue };
            let Ok(obj) = serde_json::from_str::<Map<String, Value>>(formatted.as_str()) else { continue };
            for (k, v) in obj {
                if k == "target" || names.contains(&k.as_str()) || from_spans.contains(&k) {
                    continue;
                }
                escaped_key(w, &k);
                w.push_str(&v.to_string());
                from_spans.push(k);
            }
        }
    }
    let taken = |k: &str| names.contains(&k) || from_spans.iter().any(|s| s == k);
    super::context::with_current(|c| {
        for (k, v) in [
            ("trace_id", c.trace_id.as_str()),
            ("request_id", c.request_id.as_str()),
            ("method", c.method.as_str()),
            ("route", &*c.route),
        ] {
            if !taken(k) {
                key(w, k);
                string(w, v);
            }
        }
    });
    key(w, "target");
    string(w, event.metadata().target());
    w.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, OnceLock};

    use tracing_subscriber::fmt::{self, format::JsonFields};
    use tracing_subscriber::prelude::*;

    use super::FlatJson;
    use crate::telemetry::context::{RequestContext, CURRENT};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn needs_escape_finds_every_byte_json_must_escape_wherever_it_sits() {
        for len in 0..24 {
            for at in 0..len {
                for b in 0u8..=255 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let expected = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(super::needs_escape(&s), expected, "byte {b:#04x} at {at} of {len}");
                }
            }
        }
    }

    fn lines(buf: &Buf) -> Vec<serde_json::Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn lines_logged_inside_a_request_or_a_job_carry_its_ids_at_the_top_level() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer().fmt_fields(JsonFields::new()).event_format(FlatJson).with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);

        let ctx = Arc::new(RequestContext {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            request_id: "req-1".into(),
            method: http::Method::POST,
            route: "/api/v1/jobs".into(),
            uri: http::Uri::from_static("/api/v1/jobs"),
            client_ip: [192, 0, 2, 1].into(),
            user: OnceLock::new(),
        });
        CURRENT.scope(ctx, async { tracing::warn!(detail = "x", "inside a request") }).await;
        tracing::info_span!("job", job_id = "j-1", trace_id = "aaaa").in_scope(|| tracing::info!("inside a job"));
        tracing::info!("outside");

        let l = lines(&buf);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(l[0]["request_id"], "req-1");
        assert_eq!(l[0]["method"], "POST");
        assert_eq!(l[0]["route"], "/api/v1/jobs");
        assert_eq!(l[0]["detail"], "x");
        assert_eq!(l[0]["level"], "WARN");
        assert_eq!(l[1]["job_id"], "j-1");
        assert_eq!(l[1]["trace_id"], "aaaa");
        assert!(l[2].get("trace_id").is_none(), "no ids outside a request: {}", l[2]);
    }

    #[test]
    fn every_line_is_one_valid_json_object_whatever_the_fields_hold() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            fmt::layer().fmt_fields(JsonFields::new()).event_format(FlatJson).with_writer(move || writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
        let err = std::io::Error::other("disk \"full\"\n");
        tracing::info_span!("outer", job_id = "outer", attempt = 1u64).in_scope(|| {
            tracing::info_span!("inner", job_id = "inner").in_scope(|| {
                tracing::warn!(
                    detail = nasty,
                    debugged = ?nasty,
                    error = &err as &(dyn std::error::Error + 'static),
                    n = -3i64,
                    big = u64::MAX,
                    ratio = 0.25f64,
                    nan = f64::NAN,
                    ok = true,
                    "message with {} and \"quotes\"",
                    "args"
                )
            })
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        let l: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(l["detail"], nasty);
        assert_eq!(l["debugged"], format!("{nasty:?}"));
        assert_eq!(l["error"], "disk \"full\"\n");
        assert_eq!(l["message"], "message with args and \"quotes\"");
        assert_eq!((l["n"].as_i64(), l["big"].as_u64(), l["ratio"].as_f64()), (Some(-3), Some(u64::MAX), Some(0.25)));
        assert!(l["nan"].is_null());
        assert_eq!(l["ok"], true);
        assert_eq!(l["job_id"], "inner", "the innermost span wins");
        assert_eq!(l["attempt"], 1);
        assert_eq!(l["level"], "WARN");
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(text.matches("\"job_id\"").count(), 1, "keys are unique: {text}");
    }
}
