//! The outermost layer: trace context, request id, one access-log line, the RED metrics and
//! the security headers of every response, with load shedding and the deadline around what
//! it wraps. Everything inside (errors, auth, handlers, log lines) sees the ids through
//! `telemetry::context`.
//!
//! A tower service written out rather than `axum::middleware::from_fn`: that costs a clone of
//! the inner stack, a boxed `Next` and a boxed future per layer and request, measurable on a
//! route that does nothing else.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::config::LogFormat;
use crate::http::client_ip::{self, ClientIp};
use crate::http::error::ErrorNote;
use crate::http::middleware::limits::Limits;
use crate::http::middleware::{headers, red};
use crate::metrics as m;
use crate::state::AppState;
use crate::telemetry::context::{self, RequestContext};
use crate::telemetry::redact;

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
    S: Service<Request, Error = Infallible> + Clone + Send + 'static,
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
        // The instance polled ready serves this request; a clone stays for the next one.
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let (state, limits) = (self.state.clone(), self.limits.clone());
        Box::pin(async move { Ok(observe(state, limits, req, inner).await) })
    }
}

async fn observe<S>(state: AppState, limits: Limits, mut req: Request, mut inner: S) -> Response
where
    S: Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    let started = Instant::now();
    let _in_flight = InFlight::new();
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
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let client_ip = client_ip::resolve(&req, &state.settings.http.trusted_proxies);
    req.extensions_mut().insert(ClientIp(client_ip));
    let request_size =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok());
    let is_docs = req.uri().path() == "/docs";
    let method_label = red::method_label(req.method());
    let req_query = req.uri().query().map(redact::redact_query);

    // The JSON formatter takes trace_id, request_id, method and route of every line logged
    // inside the request from this context: no span whose fields are formatted per request.
    let ctx = Arc::new(RequestContext {
        trace_id,
        span_id: context::new_span_id(),
        request_id,
        method: req.method().as_str().to_string(),
        route,
        path: req.uri().path().to_string(),
        user: OnceLock::new(),
    });
    // Human-readable logs have no such formatter: there a span carries the ids.
    let span = match state.settings.log_format {
        LogFormat::Pretty => tracing::info_span!(
            "request", trace_id = %ctx.trace_id, request_id = %ctx.request_id, method = %ctx.method, route = %ctx.route
        ),
        LogFormat::Json => tracing::Span::none(),
    };
    let is_upload = req.method() == Method::POST && req.uri().path() == "/api/v1/files";
    let run = limits.run(is_upload, move || async move {
        match inner.call(req).await {
            Ok(resp) => resp.into_response(),
            Err(never) => match never {},
        }
    });
    let mut resp = context::CURRENT.scope(ctx.clone(), run.instrument(span)).await;

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
    let RequestContext { trace_id, request_id, method, route, span_id, user, .. } = &*ctx;
    red::record(&red::Sample {
        method: method_label,
        route,
        status,
        seconds: elapsed.as_secs_f64(),
        request_size,
        response_size: bytes_out as f64,
    });

    let error = resp.extensions().get::<ErrorNote>().map(|n| n.0.clone());
    let duration_ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let user = user.get().map(String::as_str).unwrap_or("");
    macro_rules! access {
        ($lvl:ident) => {
            tracing::$lvl!(
                target: "access",
                method = %method, route = %route, status, duration_ms, bytes_out, client_ip = %client_ip,
                user, trace_id = %trace_id, request_id = %request_id,
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
    headers::apply(h, is_docs, state.settings.http.hsts);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        h.insert(X_TRACE_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-01")) {
        h.insert(TRACEPARENT, v);
    }
    resp
}
