//! The outermost layer: trace context, request id, one access-log line, the RED metrics and
//! the security headers of every response, with load shedding and the deadline around what
//! it wraps. Everything inside (errors, auth, handlers, log lines) sees the ids through
//! `telemetry::context`.
//!
//! A tower service written out rather than `axum::middleware::from_fn`: that costs a clone of
//! the inner stack, a boxed `Next` and a boxed future per layer and request, measurable on a
//! route that does nothing else.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::future::CatchUnwind;
use futures::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::config::LogFormat;
use crate::http::client_ip;
use crate::http::error::{panic_response, ErrorNote};
use crate::http::middleware::limits::{self, Limits};
use crate::http::middleware::{headers, red};
use crate::metrics as m;
use crate::state::AppState;
use crate::telemetry::context::{self, RequestContext};
use crate::telemetry::redact;

/// Response headers `finish` adds (ids, `traceparent`, security headers): inner layers that
/// add their own reserve room for these too, so the map grows once.
pub const HEADERS_ADDED: usize = 9;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Decrements the in-flight gauge even when the request future is dropped mid-way.
struct InFlight;
static IN_FLIGHT: LazyLock<metrics::Gauge> = LazyLock::new(|| metrics::gauge!(m::HTTP_IN_FLIGHT));
impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.increment(1.0);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.decrement(1.0);
    }
}

fn is_quiet(route: &str) -> bool {
    route.starts_with("/health") || route == "/metrics" || route == "/info"
}

#[derive(Clone)]
pub struct ObserveLayer {
    state: AppState,
    limits: Limits,
}

impl ObserveLayer {
    pub fn new(state: AppState, limits: Limits) -> Self {
        ObserveLayer { state, limits }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.state.clone(), limits: self.limits.clone() }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
    limits: Limits,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Error = Infallible> + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let in_flight = InFlight::new();
        let state = &self.state;
        let headers = req.headers();
        let trace_id = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(context::parse_traceparent)
            .unwrap_or_else(context::new_trace_id);
        let request_id = headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(context::sanitize_request_id)
            .unwrap_or_else(context::new_request_id);
        let route = red::route(req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()));
        let client_ip = client_ip::resolve(&req, &state.settings.http.trusted_proxies);
        let request_size =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok());
        let is_docs = req.uri().path() == "/docs";
        let is_upload = req.method() == Method::POST && req.uri().path() == "/api/v1/files";
        let method_label = red::method_label(req.method());
        let req_query = req.uri().query().map(redact::redact_query);

        // The JSON formatter takes trace_id, request_id, method and route of every line logged
        // inside the request from this context: no span whose fields are formatted per request.
        let ctx = Arc::new(RequestContext {
            trace_id,
            span_id: context::new_span_id(),
            request_id,
            method: req.method().clone(),
            route: route.name.clone(),
            uri: req.uri().clone(),
            client_ip,
            user: OnceLock::new(),
        });
        // Human-readable logs have no such formatter: there a span carries the ids.
        let span = match state.settings.log_format {
            LogFormat::Pretty => tracing::info_span!(
                "request", trace_id = %ctx.trace_id, request_id = %ctx.request_id, method = %ctx.method, route = %ctx.route
            ),
            LogFormat::Json => tracing::Span::none(),
        };
        // Shedding comes before any work. Admitted, the request goes to the instance that was
        // polled ready, now: the future needs no service of its own, so nothing is cloned.
        // Panics, in building the future or in running it, become a 500 problem here: the
        // worker thread survives and the response still gets its ids, headers and log line.
        let admitted = self.limits.admit().map(|permit| (permit, call_guarded(&mut self.inner, req)));
        let (state, timeout) = (self.state.clone(), self.limits.request_timeout);
        let seen = Seen { started, method_label, route, request_size, is_docs, req_query };
        Box::pin(async move {
            let run = async {
                let Some((permit, called)) = admitted else {
                    return limits::shed();
                };
                let resp = limits::deadline(timeout, is_upload, settle(called)).await;
                drop(permit);
                resp
            };
            let resp = context::CURRENT.scope(ctx.clone(), run.instrument(span)).await;
            drop(in_flight);
            Ok(finish(&state, ctx, seen, resp))
        })
    }
}

/// `a.b.c.d` by hand: `Display` of an IPv4 address took ~2 000 instructions per log line.
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(itoa::Buffer::new().format(octet));
            }
            text
        }
        v6 => v6.to_string(),
    }
}

type Guarded<F> = Pin<Box<CatchUnwind<AssertUnwindSafe<F>>>>;

/// Calls `inner`, catching a panic in the call itself; the future comes back boxed at once
/// (the stack's future is ~1 KiB and every combinator around it would move it).
fn call_guarded<S: Service<Request>>(inner: &mut S, req: Request) -> Result<Guarded<S::Future>, Box<dyn Any + Send>> {
    std::panic::catch_unwind(AssertUnwindSafe(move || inner.call(req)))
        .map(|future| Box::pin(AssertUnwindSafe(future).catch_unwind()))
}

/// The response of a guarded call: a panic, then or later, is a 500 problem.
async fn settle<F, R>(called: Result<Guarded<F>, Box<dyn Any + Send>>) -> Response
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
{
    match called {
        Ok(future) => match future.await {
            Ok(Ok(resp)) => resp.into_response(),
            Ok(Err(never)) => match never {},
            Err(panic) => panic_response(panic),
        },
        Err(panic) => panic_response(panic),
    }
}

/// What `finish` needs of the request once the response is there.
struct Seen {
    started: Instant,
    method_label: &'static str,
    route: Arc<red::RouteEntry>,
    request_size: Option<f64>,
    is_docs: bool,
    req_query: Option<String>,
}

/// The response's way out: RED metrics, the access-log line, the ids and security headers.
fn finish(state: &AppState, ctx: Arc<RequestContext>, seen: Seen, mut resp: Response) -> Response {
    let Seen { started, method_label, route: route_entry, request_size, is_docs, req_query } = seen;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    // Streamed bodies have no exact size yet: they count as 0 here.
    let bytes_out = http_body::Body::size_hint(resp.body()).exact().unwrap_or_else(|| {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let RequestContext { trace_id, request_id, method, route, span_id, user, client_ip, .. } = &*ctx;
    red::record(&red::Sample {
        method: method_label,
        route: &route_entry,
        status,
        seconds: elapsed.as_secs_f64(),
        request_size,
        response_size: bytes_out as f64,
    });

    let error = resp.extensions().get::<ErrorNote>().map(|n| n.0.clone());
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let user = user.get().map(|u| &**u).unwrap_or("");
    let client_ip = ip_text(*client_ip);
    macro_rules! access {
        ($lvl:ident) => {
            tracing::$lvl!(
                target: "access",
                method = method.as_str(), route = &**route, status, duration_ms, bytes_out, client_ip = client_ip.as_str(),
                user, trace_id = trace_id.as_str(), request_id = request_id.as_str(),
                query = req_query.as_deref().unwrap_or(""), error = error.as_deref(),
                "request completed"
            )
        };
    }
    if status >= 500 {
        access!(error);
    } else if is_quiet(route) {
        access!(debug);
    } else {
        access!(info);
    }
    if state.lifecycle.is_draining() {
        state.lifecycle.drained_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    let h = resp.headers_mut();
    // One growth to the final size instead of doubling twice on the way.
    h.reserve(HEADERS_ADDED);
    headers::apply(h, is_docs, state.settings.http.hsts);
    // Not `format!`: it cannot size its buffer from the arguments and grows it twice.
    let mut traceparent = String::with_capacity(55);
    for part in ["00-", trace_id, "-", span_id, "-01"] {
        traceparent.push_str(part);
    }
    // The request is over: its ids move into the headers instead of being copied (unless
    // something still holds the context).
    let (trace_id, request_id) = match Arc::try_unwrap(ctx) {
        Ok(c) => (c.trace_id, c.request_id),
        Err(shared) => (shared.trace_id.clone(), shared.request_id.clone()),
    };
    for (name, value) in [(X_REQUEST_ID, request_id), (X_TRACE_ID, trace_id), (TRACEPARENT, traceparent)] {
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            h.insert(name, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn problem_of(resp: Response) -> (u16, String, String) {
        let status = resp.status().as_u16();
        let kind = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap_or_default();
        (status, kind, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in ["127.0.0.1", "0.0.0.0", "255.255.255.255", "10.20.0.3", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[tokio::test]
    async fn a_handler_panicking_in_its_future_or_its_call_answers_500_without_the_payload() {
        let in_future = tower::service_fn(|_: Request| async {
            if true {
                panic!("secret in the future");
            }
            Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
        });
        let mut in_call = tower::service_fn(|_: Request| -> std::future::Ready<Result<Response, Infallible>> {
            panic!("secret in the call")
        });
        for resp in [
            settle(call_guarded(&mut { in_future }, Request::new(axum::body::Body::empty()))).await,
            settle(call_guarded(&mut in_call, Request::new(axum::body::Body::empty()))).await,
        ] {
            let (status, kind, body) = problem_of(resp).await;
            assert_eq!((status, kind.as_str()), (500, "application/problem+json"), "{body}");
            assert!(!body.contains("secret"), "the panic payload must not reach the client: {body}");
        }
    }
}
