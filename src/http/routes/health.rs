//! Probe endpoints. Liveness never touches a dependency; readiness and the summary use the
//! cached health report, so probe storms cost nothing.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::build_info;
use crate::health;
use crate::state::AppState;

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ProbeStatus {
    /// pass or fail.
    pub status: String,
}

#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process answers", body = ProbeStatus)))]
pub async fn live() -> Response {
    (StatusCode::OK, Json(json!({ "status": "pass" }))).into_response()
}

#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = ProbeStatus),
        (status = 503, description = "Not ready (dependency down, migrations pending or draining)", body = ProbeStatus),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    match health::readiness(&state).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "pass" }))).into_response(),
        Err(reasons) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "fail", "notes": reasons }))).into_response()
        }
    }
}

/// Public summary: no component details leak to the internet.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Ready", body = ProbeStatus),
        (status = 503, description = "Not ready", body = ProbeStatus),
    ))]
pub async fn summary(State(state): State<AppState>) -> Response {
    let (code, status) = match health::readiness(&state).await {
        Ok(()) => (StatusCode::OK, "pass"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "fail"),
    };
    (code, Json(json!({ "status": status, "version": build_info::VERSION }))).into_response()
}

pub async fn details(State(state): State<AppState>) -> Response {
    let report = health::report(&state).await;
    let body = health::details_body(&state, &report);
    let code = if body["status"] == "fail" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, [(header::CONTENT_TYPE, "application/health+json")], body.to_string()).into_response()
}
