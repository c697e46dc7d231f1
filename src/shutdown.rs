//! Process lifecycle: the draining flag and the signal that starts the shutdown sequence
//! (DESIGN §9). The sequence itself is driven by `app::Application::run_until_stopped`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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

/// SIGTERM/SIGINT as two one-shot events: the first starts the drain, the second means "now".
///
/// The handlers are registered when this is built, before the process says it is listening,
/// and stay registered: a signal that arrives while start-up is still running, or between two
/// phases of it, is remembered instead of killing the process or going unseen.
#[derive(Clone, Debug)]
pub struct Signals {
    first: CancellationToken,
    second: CancellationToken,
    name: Arc<OnceLock<&'static str>>,
}

impl Signals {
    /// Registers the handlers now and watches them from a task.
    pub fn listen() -> std::io::Result<Signals> {
        let signals =
            Signals { first: CancellationToken::new(), second: CancellationToken::new(), name: Arc::default() };
        let mut stream = os::Stream::register()?;
        let watch = signals.clone();
        tokio::spawn(async move {
            let name = stream.recv().await;
            let _ = watch.name.set(name);
            watch.first.cancel();
            stream.recv().await;
            watch.second.cancel();
        });
        Ok(signals)
    }

    /// Cancelled on the first signal (start-up waits give up on it).
    pub fn first(&self) -> &CancellationToken {
        &self.first
    }

    /// Resolves on the first signal with its name.
    pub async fn received(&self) -> &'static str {
        self.first.cancelled().await;
        self.name.get().copied().unwrap_or("signal")
    }

    /// Resolves on the second signal.
    pub async fn again(&self) {
        self.second.cancelled().await
    }
}

#[cfg(unix)]
mod os {
    use tokio::signal::unix::{signal, Signal, SignalKind};

    pub struct Stream {
        term: Signal,
        int: Signal,
    }

    impl Stream {
        pub fn register() -> std::io::Result<Stream> {
            Ok(Stream { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }

        pub async fn recv(&mut self) -> &'static str {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
    }
}

#[cfg(not(unix))]
mod os {
    pub struct Stream;

    impl Stream {
        pub fn register() -> std::io::Result<Stream> {
            Ok(Stream)
        }

        pub async fn recv(&mut self) -> &'static str {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
