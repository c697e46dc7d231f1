//! `/api/v1/jobs`: enqueue, read, list, cancel, delete. Every query is scoped by the caller's
//! tenant; another tenant's job is a 404, never a 403.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::queue::{self, CancelOutcome, DeleteOutcome, Enqueued, Job, NewJob};
use super::Registry;
use crate::auth::Identity;
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::Json;
use crate::metrics as m;
use crate::state::AppState;
use crate::telemetry::context;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(create_job).get(list_jobs))
        .route("/jobs/{id}", get(get_job).delete(delete_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub priority: Option<i16>,
    #[serde(default)]
    pub max_attempts: Option<i32>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn job_response(status: StatusCode, job: &Job) -> Response {
    let location = format!("/api/v1/jobs/{}", job.id);
    (status, [(header::LOCATION, location)], axum::Json(job)).into_response()
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::not_found("no such job"))
}

pub async fn create_job(
    State(state): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    Json(body): Json<CreateJob>,
) -> ApiResult<Response> {
    let registry = Registry::builtin();
    registry.validate(&body.kind, &body.payload).map_err(ApiError::unprocessable)?;
    let priority = body.priority.unwrap_or(0);
    if !(-100..=100).contains(&priority) {
        return Err(ApiError::unprocessable("priority must be between -100 and 100"));
    }
    let max_attempts = body.max_attempts.unwrap_or(3);
    if !(1..=25).contains(&max_attempts) {
        return Err(ApiError::unprocessable("max_attempts must be between 1 and 25"));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::bad_request("Idempotency-Key must be 1 to 255 characters"));
            }
            Some(key.to_string())
        }
        None => None,
    };
    // The fingerprint of what was asked, to tell a retry from a different request reusing a key.
    let request_hash = idempotency_key.as_ref().map(|_| {
        let canonical = serde_json::to_vec(&body).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    });
    let new = NewJob {
        tenant: identity.tenant.clone(),
        kind: body.kind.clone(),
        payload: body.payload,
        run_at: body.run_at,
        priority,
        max_attempts,
        idempotency_key,
        request_hash: request_hash.clone(),
        trace_id: context::current_trace_id(),
    };
    match queue::enqueue(&state.db, new).await? {
        Enqueued::Created(job) => {
            metrics::counter!(m::JOBS_ENQUEUED, "kind" => job.kind.clone()).increment(1);
            tracing::info!(job_id = %job.id, kind = %job.kind, "job enqueued");
            Ok(job_response(StatusCode::ACCEPTED, &job))
        }
        Enqueued::Existing(job) if job.request_hash == request_hash => Ok(job_response(StatusCode::OK, &job)),
        Enqueued::Existing(_) => {
            Err(ApiError::conflict("this Idempotency-Key was already used with a different request body"))
        }
    }
}

pub async fn get_job(State(state): State<AppState>, identity: Identity, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let job = queue::get(&state.db, &identity.tenant, id).await?.ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok(axum::Json(job).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

pub async fn list_jobs(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::bad_request(format!("status must be one of {}", STATUSES.join(", "))));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let cursor = match &q.cursor {
        Some(c) => Some(c.parse::<Uuid>().map_err(|_| ApiError::bad_request("cursor is not one this API issued"))?),
        None => None,
    };
    let items = queue::list(&state.db, &identity.tenant, q.status.as_deref(), q.kind.as_deref(), cursor, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|j| j.id.to_string())).flatten();
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

pub async fn cancel_job(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    match queue::cancel(&state.db, &identity.tenant, id).await? {
        CancelOutcome::Cancelled(job) => {
            metrics::counter!(m::JOBS_FINISHED, "kind" => job.kind.clone(), "outcome" => "cancelled").increment(1);
            Ok(axum::Json(job).into_response())
        }
        CancelOutcome::Requested(job) => Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response()),
        CancelOutcome::AlreadyFinished(job) => {
            Err(ApiError::conflict(format!("the job already ended ({})", job.status)))
        }
        CancelOutcome::NotFound => Err(ApiError::not_found("no such job")),
    }
}

pub async fn delete_job(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    match queue::delete(&state.db, &identity.tenant, id).await? {
        DeleteOutcome::Deleted => Ok(StatusCode::NO_CONTENT.into_response()),
        DeleteOutcome::NotFinished => Err(ApiError::conflict("only finished jobs can be deleted; cancel it first")),
        DeleteOutcome::NotFound => Err(ApiError::not_found("no such job")),
    }
}
