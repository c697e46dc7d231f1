//! The accept loop: hyper with a header-read timeout (slowloris) and graceful shutdown.
//! On `stop`, the listener closes; idle keep-alive connections are closed, busy ones finish
//! their request and answer with `Connection: close`, all bounded by `drain_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Service;

/// How the listener ended.
#[derive(Debug, Clone, Copy)]
pub struct ServeOutcome {
    /// Connections still open when the drain timeout hit (0 = clean drain).
    pub abandoned: bool,
}

pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
    drain_timeout: Duration,
) -> ServeOutcome {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            router.clone().call(req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(listener = name, "stopped accepting; draining connections");
    tokio::select! {
        _ = graceful.shutdown() => ServeOutcome { abandoned: false },
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(listener = name, timeout_s = drain_timeout.as_secs(), "drain timeout: closing remaining connections");
            ServeOutcome { abandoned: true }
        }
    }
}
