//! The rate-limit layer on `/api/v1`: flood guard → identity → policy → headers.

use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{Decision, Limiter, PolicyName};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::telemetry::context;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::auth::bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn too_many(retry_after: std::time::Duration) -> ApiError {
    let secs = secs_ceil(retry_after).max(1);
    let mut detail = String::with_capacity(40);
    detail.push_str("rate limit exceeded; retry in ");
    detail.push_str(itoa::Buffer::new().format(secs));
    detail.push_str(" s");
    ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", detail)
        .with_header(header::RETRY_AFTER, secs)
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Header names are constants and a policy's own values are built once (`Limiter`): on every
/// API request, parsing five names and formatting five strings cost more than the decision.
/// The three per-decision values are written into one buffer and share it.
fn apply_headers(headers: &mut HeaderMap, limiter: &Limiter, d: &Decision) {
    let (policy, limit) = limiter.policy_headers(d.policy);
    let number = |buf: &mut bytes::BytesMut, n: u64| {
        let start = buf.len();
        buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        start..buf.len()
    };
    // `"default";r=9;t=60`: the RateLimit value, with X-RateLimit-Remaining and -Reset in it.
    let mut buf = bytes::BytesMut::with_capacity(48);
    buf.extend_from_slice(b"\"");
    buf.extend_from_slice(d.policy.as_str().as_bytes());
    buf.extend_from_slice(b"\";r=");
    let remaining = number(&mut buf, d.remaining);
    buf.extend_from_slice(b";t=");
    let reset = number(&mut buf, secs_ceil(d.reset));
    let all = buf.freeze();
    headers.reserve(5 + crate::http::middleware::observe::HEADERS_ADDED);
    headers.insert(RATELIMIT_POLICY, policy.clone());
    headers.insert(X_LIMIT, limit.clone());
    for (name, value) in [(X_REMAINING, all.slice(remaining)), (X_RESET, all.slice(reset)), (RATELIMIT, all)] {
        // Digits, quotes, letters and `;=`: always a valid header value.
        if let Ok(v) = HeaderValue::from_maybe_shared(value) {
            headers.insert(name, v);
        }
    }
}

/// The layer of `/api/v1`'s routes (a `route_layer`: unmatched paths are not limited).
#[derive(Clone)]
pub struct RateLimitLayer {
    state: AppState,
}

impl RateLimitLayer {
    pub fn new(state: AppState) -> Self {
        RateLimitLayer { state }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit { inner, state: self.state.clone() }
    }
}

/// Written out rather than `axum::middleware::from_fn`, which splits and rebuilds the request
/// for its extractors and clones the inner route into a boxed `Next` (~440 instructions of a
/// refused request, measured).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let state = &self.state;
        let limiter = &state.limiter;
        if !limiter.enabled() {
            return Box::pin(self.inner.call(req));
        }
        let ip = context::with_current(|c| c.client_ip).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if let Err(wait) = limiter.check_ip(ip) {
            return Box::pin(std::future::ready(Ok(too_many(wait).into_response())));
        }
        // A valid token makes the tenant the identity; anything else is limited by client IP.
        // The verified identity rides along so the handler's extractor does not verify twice.
        let identity = bearer(req.headers()).and_then(|t| state.verifier.verify(t).ok());
        let is_upload = req.method() == Method::POST && req.uri().path().ends_with("/files");
        // Built by hand: `format!` here cost ~300 instructions of every API request.
        let tenant = |id: &crate::auth::Identity| {
            let mut key = String::with_capacity(2 + id.tenant.len());
            key.push_str("t:");
            key.push_str(&id.tenant);
            key
        };
        let (policy, key) = match &identity {
            Some(id) if is_upload => (PolicyName::Uploads, tenant(id)),
            Some(id) => (PolicyName::Default, tenant(id)),
            None => (PolicyName::Anonymous, format!("ip:{ip}")),
        };
        if let Some(id) = identity {
            if let Some(ctx) = context::current() {
                let _ = ctx.user.set(id.sub.clone());
            }
            req.extensions_mut().insert(id);
        }
        // The route's future is made now but only polled once the request is admitted: a
        // route does nothing until polled, and a refused request's is dropped untouched.
        let admitted = self.inner.call(req);
        let state = state.clone();
        Box::pin(async move {
            let limiter = &state.limiter;
            let decision = limiter.check(policy, &key).await;
            let mut resp = if decision.allowed {
                admitted.await.unwrap_or_else(|never| match never {})
            } else {
                too_many(decision.retry_after).into_response()
            };
            apply_headers(resp.headers_mut(), limiter, &decision);
            Ok(resp)
        })
    }
}
