//! The rate-limit layer on `/api/v1`: flood guard → identity → policy → headers.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
    ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("rate limit exceeded; retry in {secs} s"),
    )
    .with_header(header::RETRY_AFTER, secs)
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Header names are constants and a policy's own values are built once (`Limiter`): on every
/// API request, parsing five names and formatting five strings cost more than the decision.
fn apply_headers(headers: &mut HeaderMap, limiter: &Limiter, d: &Decision) {
    use std::fmt::Write as _;
    let reset = secs_ceil(d.reset);
    let (policy, limit) = limiter.policy_headers(d.policy);
    let mut current = String::with_capacity(40);
    let _ = write!(current, "\"{}\";r={};t={reset}", d.policy.as_str(), d.remaining);
    headers.reserve(5 + crate::http::middleware::observe::HEADERS_ADDED);
    headers.insert(RATELIMIT_POLICY, policy.clone());
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(current)) {
        headers.insert(RATELIMIT, v);
    }
    headers.insert(X_LIMIT, limit.clone());
    headers.insert(X_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(X_RESET, HeaderValue::from(reset));
}

pub async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limiter = &state.limiter;
    if !limiter.enabled() {
        return next.run(req).await;
    }
    let ip = context::with_current(|c| c.client_ip).unwrap_or(IpAddr::from([127, 0, 0, 1]));
    if let Err(wait) = limiter.check_ip(ip) {
        return too_many(wait).into_response();
    }
    // A valid token makes the tenant the identity; anything else is limited by client IP.
    // The verified identity rides along so the handler's extractor does not verify twice.
    let identity = bearer(req.headers()).and_then(|t| state.verifier.verify(t).ok());
    let is_upload = req.method() == Method::POST && req.uri().path().ends_with("/files");
    let (policy, key) = match &identity {
        Some(id) if is_upload => (PolicyName::Uploads, format!("t:{}", id.tenant)),
        Some(id) => (PolicyName::Default, format!("t:{}", id.tenant)),
        None => (PolicyName::Anonymous, format!("ip:{ip}")),
    };
    if let Some(id) = identity {
        if let Some(ctx) = context::current() {
            let _ = ctx.user.set(id.sub.clone());
        }
        req.extensions_mut().insert(id);
    }
    let decision = limiter.check(policy, &key).await;
    let mut resp = if decision.allowed { next.run(req).await } else { too_many(decision.retry_after).into_response() };
    apply_headers(resp.headers_mut(), limiter, &decision);
    resp
}
