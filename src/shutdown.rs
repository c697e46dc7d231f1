//! Process lifecycle: the draining flag and the signal that starts the shutdown sequence
//! (DESIGN §9). The sequence itself is driven by `app::Application::run_until_stopped`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::metrics as m;

#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
    /// Requests that completed after draining began (reported in the summary line).
    pub drained_requests: AtomicU64,
    /// Cancelled when listeners must stop accepting connections.
    pub stop_accepting: CancellationToken,
    /// Cancelled when workers must stop claiming jobs.
    pub stop_claiming: CancellationToken,
}

impl Lifecycle {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        metrics::gauge!(m::APP_DRAINING).set(1.0);
    }
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
pub async fn signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT will stop the process");
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
