//! The rate-limit layer on `/api/v1`: flood guard → identity → policy → headers.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Decision, PolicyName};
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
    .with_header(header::RETRY_AFTER, &secs.to_string())
}

fn apply_headers(headers: &mut HeaderMap, d: &Decision) {
    let name = d.policy.as_str();
    let reset = secs_ceil(d.reset);
    let pairs = [
        ("ratelimit-policy", format!("\"{name}\";q={};w=60", d.rate.per_minute)),
        ("ratelimit", format!("\"{name}\";r={};t={reset}", d.remaining)),
        ("x-ratelimit-limit", d.rate.burst.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(k, v);
        }
    }
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
    apply_headers(resp.headers_mut(), &decision);
    resp
}
