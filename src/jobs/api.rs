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
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::http::extract::Json;
use crate::metrics as m;
use crate::state::AppState;
use crate::telemetry::context;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", post(create_job).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
}

/// Unknown top-level fields are ignored (payloads are strict per kind).
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct CreateJob {
    /// A registered kind: noop, sleep, …
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "super::kinds::integral_opt")]
    #[schema(minimum = -100, maximum = 100)]
    pub priority: Option<i16>,
    #[serde(default, deserialize_with = "super::kinds::integral_opt")]
    #[schema(minimum = 1, maximum = 25)]
    pub max_attempts: Option<i32>,
}

// The request body as documented: one complete variant per registered kind, so generated
// clients and schemathesis know each kind's payload. The handler parses `CreateJob` and
// validates the payload through the registry.
/// A job to enqueue: `kind` selects the payload's shape.
#[derive(utoipa::ToSchema)]
#[serde(tag = "kind")]
#[allow(dead_code)]
pub enum CreateJobDoc {
    #[serde(rename = "noop")]
    Noop {
        payload: super::kinds::noop::NoopPayload,
        run_at: Option<RunAt>,
        #[schema(minimum = -100, maximum = 100)]
        priority: Option<i16>,
        #[schema(minimum = 1, maximum = 25)]
        max_attempts: Option<i32>,
    },
    #[serde(rename = "sleep")]
    Sleep {
        payload: super::kinds::sleep::SleepPayload,
        run_at: Option<RunAt>,
        #[schema(minimum = -100, maximum = 100)]
        priority: Option<i16>,
        #[schema(minimum = 1, maximum = 25)]
        max_attempts: Option<i32>,
    },
    #[serde(rename = "file.digest")]
    FileDigest {
        payload: super::kinds::file_digest::FileDigestPayload,
        run_at: Option<RunAt>,
        #[schema(minimum = -100, maximum = 100)]
        priority: Option<i16>,
        #[schema(minimum = 1, maximum = 25)]
        max_attempts: Option<i32>,
    },
    #[serde(rename = "document.render")]
    DocumentRender {
        payload: super::kinds::document_render::RenderPayloadDoc,
        run_at: Option<RunAt>,
        #[schema(minimum = -100, maximum = 100)]
        priority: Option<i16>,
        #[schema(minimum = 1, maximum = 25)]
        max_attempts: Option<i32>,
    },
}

/// When to run, RFC 3339; defaults to now. (The pattern caps the day at 28 so every
/// generated example is a real date.)
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    format = DateTime,
    pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"
)]
#[allow(dead_code)]
pub struct RunAt(String);

/// jsonb cannot hold NUL, and numbers near the double limit come back as decimals too long
/// to read: refuse both at the door instead of storing a row that cannot be read back.
fn storable(v: &serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Err("payload strings may not contain NUL".into()),
        serde_json::Value::Number(n) if n.as_f64().is_some_and(|f| f.abs() > 1e300) => {
            Err(format!("payload number {n} is too large"))
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(storable),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                return Err("payload keys may not contain NUL".into());
            }
            map.values().try_for_each(storable)
        }
        _ => Ok(()),
    }
}

fn job_response(status: StatusCode, job: &Job) -> Response {
    let location = format!("/api/v1/jobs/{}", job.id);
    (status, [(header::LOCATION, location)], axum::Json(job)).into_response()
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| ApiError::not_found("no such job"))
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body = CreateJobDoc,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "Retry-safe key (1–255 visible ASCII characters); same key and body returns the original job")),
    responses(
        (status = 202, description = "Enqueued", body = Job),
        (status = 200, description = "The job created earlier with this Idempotency-Key", body = Job),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind or invalid payload", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_job(
    State(state): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    Json(body): Json<CreateJob>,
) -> ApiResult<Response> {
    Registry::shared().validate(&body.kind, &body.payload).map_err(ApiError::unprocessable)?;
    storable(&body.payload).map_err(ApiError::unprocessable)?;
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
            let key = v.to_str().unwrap_or_default();
            if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters"));
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
        tenant: identity.tenant.to_string(),
        kind: body.kind.clone(),
        payload: body.payload,
        run_at: body.run_at,
        priority,
        max_attempts,
        idempotency_key,
        request_hash: request_hash.clone(),
        trace_id: context::current_trace_id(),
    };
    match state.enqueuer.enqueue(new).await? {
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

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_job(State(state): State<AppState>, identity: Identity, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let job = queue::get(&state.db, &identity.tenant, id).await?.ok_or_else(|| ApiError::not_found("no such job"))?;
    Ok(axum::Json(job).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first; pass next_cursor as cursor for the next page", body = Page),
        (status = 400, description = "Bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
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
    // Stored kinds never contain NUL (which Postgres text cannot hold): nothing can match.
    if q.kind.as_deref().is_some_and(|k| k.contains('\0')) {
        return Ok(axum::Json(Page { items: Vec::new(), next_cursor: None }).into_response());
    }
    let items = queue::list(&state.db, &identity.tenant, q.status.as_deref(), q.kind.as_deref(), cursor, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|j| j.id.to_string())).flatten();
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "Queued job cancelled", body = Job),
        (status = 202, description = "Running job: cancellation requested", body = Job),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job already ended", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
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

#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not finished yet", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn payloads_that_jsonb_cannot_give_back_are_refused() {
        assert!(super::storable(&json!({"a": [1, "x", {"b": 2.5}]})).is_ok());
        assert!(super::storable(&json!({"a": "nul\u{0}"})).is_err());
        assert!(super::storable(&json!({"a\u{0}": 1})).is_err());
        assert!(super::storable(&json!({"a": [1.7976931348623157e308]})).is_err());
    }
}
