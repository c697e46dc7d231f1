//! `/api/v1/files`: upload (raw or multipart, streamed), metadata, list, content with
//! conditional and range requests, delete. Every query is scoped by the caller's tenant;
//! another tenant's file is a 404, never a 403.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ranges::{self, Ranged};
use super::{names, repo, File, IngestError, NewFile};
use crate::auth::Identity;
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;
use crate::storage::StorageError;

/// Room for boundaries, part headers and small form fields around a multipart file part.
const MULTIPART_ALLOWANCE: u64 = 1024 * 1024;
/// Non-file form fields before the file part are read and discarded, up to this much.
const MAX_FORM_FIELD_BYTES: u64 = 64 * 1024;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

pub fn router() -> Router<AppState> {
    Router::new()
        // The JSON body limit does not apply to uploads: they stream and enforce
        // MAX_UPLOAD_BYTES themselves while reading.
        .route("/api/v1/files", post(create_file).layer(DefaultBodyLimit::disable()).get(list_files))
        .route("/api/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/api/v1/files/{id}/content", get(get_content))
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| not_found())
}

fn not_found() -> ApiError {
    ApiError::not_found("no such file")
}

fn too_large(limit: u64) -> ApiError {
    ApiError::payload_too_large(format!("the upload exceeds MAX_UPLOAD_BYTES ({limit} bytes); nothing was kept"))
}

/// Storage failures as problems: a full store is 507, an unreachable remote one 503.
pub fn storage_problem(e: StorageError) -> ApiError {
    let mut problem = match &e {
        StorageError::Full(_) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient-storage",
            "Insufficient storage",
            "the file store is full; nothing was kept",
        ),
        StorageError::Unavailable(_) => ApiError::unavailable("the file store is unreachable; retry shortly", 5),
        StorageError::NotFound(_) | StorageError::Failed(_) => return ApiError::internal(e),
    };
    problem.source = Some(e.into());
    problem
}

fn ingest_problem(e: IngestError, limit: u64) -> ApiError {
    match e {
        IngestError::TooLarge { .. } => too_large(limit),
        IngestError::Body(why) => ApiError::bad_request(why),
        IngestError::Storage(e) => storage_problem(e),
        IngestError::Database(e) => e.into(),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Display name; path parts and control characters are removed, long names are cut to
    /// 255 bytes. Defaults to the multipart filename, else `file`.
    name: Option<String>,
}

/// `Content-Type` checked to be `type/subtype[; params]`; absent means octet-stream.
fn media_type(raw: Option<&HeaderValue>) -> ApiResult<String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    };
    let bad = || ApiError::bad_request("Content-Type is not a valid media type (type/subtype)");
    let value = raw.to_str().map_err(|_| bad())?.trim();
    if value.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    }
    if value.len() > 255 {
        return Err(bad());
    }
    let (essence, params) = value.split_once(';').map_or((value, ""), |(e, p)| (e, p));
    let (kind, sub) = essence.trim().split_once('/').ok_or_else(bad)?;
    // RFC 9110 token characters.
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token(kind) || !token(sub) {
        return Err(bad());
    }
    let essence = format!("{}/{}", kind.to_ascii_lowercase(), sub.to_ascii_lowercase());
    Ok(if params.trim().is_empty() { essence } else { format!("{essence};{params}") })
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

#[utoipa::path(post, path = "/api/v1/files", tag = "files", security(("bearer" = [])),
    params(UploadQuery),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream",
        description = "The raw bytes (none: an empty file); their Content-Type is kept (default application/octet-stream). \
            A multipart/form-data body works too: its first part with a filename is the file."),
    responses(
        (status = 201, description = "Stored", body = File,
            headers(("Location" = String, description = "The file's metadata URL"))),
        (status = 400, description = "Malformed Content-Type, query or multipart body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than MAX_UPLOAD_BYTES; nothing was kept", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A multipart body without a file part", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage unreachable", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "Object storage full; nothing was kept", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_file(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<UploadQuery>, QueryRejection>,
    req: Request,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = state.settings.http.max_upload;
    let multipart = is_multipart(req.headers());
    // A declared length over the limit is refused before a byte is read (clients sending
    // `Expect: 100-continue` never send the body at all).
    let allowance = if multipart { MULTIPART_ALLOWANCE } else { 0 };
    if declared_length(req.headers()).is_some_and(|n| n > limit.saturating_add(allowance)) {
        return Err(too_large(limit));
    }
    let file = if multipart {
        upload_multipart(&state, &identity, q.name, limit, req).await?
    } else {
        let content_type = media_type(req.headers().get(header::CONTENT_TYPE))?;
        let name = names::sanitize(q.name.as_deref().unwrap_or(names::FALLBACK));
        let new = NewFile { tenant: &identity.tenant, name: &name, content_type: &content_type };
        let body = req.into_body().into_data_stream().map_err(|e| IngestError::Body(format!("{e}")));
        super::ingest(&state, new, limit, body).await.map_err(|e| ingest_problem(e, limit))?
    };
    tracing::info!(file_id = %file.id, size = file.size, "file stored");
    let location = format!("/api/v1/files/{}", file.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(file)).into_response())
}

/// The first part with a filename is the file; plain fields before it are skipped.
async fn upload_multipart(
    state: &AppState,
    identity: &Identity,
    name: Option<String>,
    limit: u64,
    req: Request,
) -> ApiResult<File> {
    let problem = |e: axum::extract::multipart::MultipartError| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit),
        _ => ApiError::bad_request(format!("invalid multipart body: {}", e.body_text())),
    };
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut skipped: u64 = 0;
    loop {
        let Some(mut field) = form.next_field().await.map_err(problem)? else {
            return Err(ApiError::unprocessable("the multipart body has no file part (a part with a filename)"));
        };
        let Some(file_name) = field.file_name().map(str::to_string) else {
            while let Some(chunk) = field.chunk().await.map_err(problem)? {
                skipped += chunk.len() as u64;
                if skipped > MAX_FORM_FIELD_BYTES {
                    return Err(ApiError::payload_too_large(format!(
                        "form fields before the file part exceed {MAX_FORM_FIELD_BYTES} bytes"
                    )));
                }
            }
            continue;
        };
        let name = names::sanitize(name.as_deref().unwrap_or(&file_name));
        let content_type = match field.content_type() {
            Some(ct) => media_type(HeaderValue::from_str(ct).ok().as_ref())?,
            None => DEFAULT_CONTENT_TYPE.to_string(),
        };
        let new = NewFile { tenant: &identity.tenant, name: &name, content_type: &content_type };
        let body = field.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => IngestError::TooLarge { limit },
            _ => IngestError::Body(format!("invalid multipart body: {}", e.body_text())),
        });
        return super::ingest(state, new, limit, body).await.map_err(|e| ingest_problem(e, limit));
    }
}

#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The file's metadata", body = File),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_file(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let file = repo::get(&state.db, &identity.tenant, id).await?.ok_or_else(not_found)?;
    Ok(axum::Json(file).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = FilePage)]
pub struct Page {
    items: Vec<File>,
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/files", tag = "files", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first; pass next_cursor as cursor for the next page", body = Page),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_files(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 200"));
    }
    let cursor = match &q.cursor {
        Some(c) => Some(c.parse::<Uuid>().map_err(|_| ApiError::bad_request("cursor is not one this API issued"))?),
        None => None,
    };
    let items = repo::list(&state.db, &identity.tenant, cursor, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|f| f.id.to_string())).flatten();
    Ok(axum::Json(Page { items, next_cursor }).into_response())
}

#[utoipa::path(get, path = "/api/v1/files/{id}/content", tag = "files", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "File id"),
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=first-last`, `bytes=first-` or `bytes=-count`; \
            other forms are ignored"),
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds: 304 when one matches"),
        ("If-Range" = Option<String>, Header, description = "Apply Range only while this ETag is current"),
    ),
    responses(
        (status = 200, description = "The bytes, with the Content-Type they were stored with", body = Vec<u8>, content_type = "*/*",
            headers(("ETag" = String, description = "The quoted sha256"), ("Content-Disposition" = String))),
        (status = 206, description = "The requested range", body = Vec<u8>, content_type = "*/*",
            headers(("Content-Range" = String))),
        (status = 304, description = "Not modified (If-None-Match matched)"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range lies outside the file", body = Problem, content_type = "application/problem+json",
            headers(("Content-Range" = String, description = "bytes */size"))),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage unreachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_content(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let file = repo::get(&state.db, &identity.tenant, id).await?.ok_or_else(not_found)?;
    let size = u64::try_from(file.size).unwrap_or_default();
    let etag = format!("\"{}\"", file.sha256);
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());

    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, names::content_disposition(&file.name));
    if text(header::IF_NONE_MATCH).is_some_and(|v| ranges::none_match_hits(v, &etag)) {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(ApiError::internal);
    }
    let ranged = match text(header::RANGE) {
        Some(r) if ranges::if_range_allows(text(header::IF_RANGE), &etag) => ranges::parse_range(r, size),
        _ => Ranged::Full,
    };
    let (status, range) = match ranged {
        Ranged::Full => (StatusCode::OK, None),
        Ranged::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        Ranged::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                "Range not satisfiable",
                format!("the requested range lies outside the file's {size} bytes"),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    if let Some(r) = &range {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1));
    }
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    let stream = state.storage.read(&file.object_key, range).await.map_err(storage_problem)?;
    let file_id = file.id;
    let stream =
        stream.inspect_err(move |e| tracing::error!(%file_id, error = %e, "file content broke off mid-stream"));
    builder
        .status(status)
        .header(header::CONTENT_TYPE, &file.content_type)
        .header(header::CONTENT_LENGTH, length)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

#[utoipa::path(delete, path = "/api/v1/files/{id}", tag = "files", security(("bearer" = [])),
    params(("id" = String, Path, description = "File id")),
    responses(
        (status = 204, description = "The file and its bytes are gone"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such file for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage unreachable; nothing was deleted", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_file(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (tx, file) = repo::delete_begin(&state.db, &identity.tenant, id).await?.ok_or_else(not_found)?;
    // Dropping `tx` on failure rolls the row back: it never outlives its object, nor the reverse.
    state.storage.delete(&file.object_key).await.map_err(storage_problem)?;
    tx.commit().await?;
    tracing::info!(file_id = %file.id, "file deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mt(v: &str) -> Result<String, StatusCode> {
        media_type(Some(&HeaderValue::from_str(v).map_err(|_| StatusCode::IM_A_TEAPOT)?)).map_err(|e| e.status)
    }

    #[test]
    fn content_types_are_checked_and_normalised() {
        assert_eq!(mt("Text/Plain; charset=utf-8"), Ok("text/plain; charset=utf-8".into()));
        assert_eq!(mt("application/vnd.api+json"), Ok("application/vnd.api+json".into()));
        assert_eq!(mt(""), Ok(DEFAULT_CONTENT_TYPE.into()));
        assert_eq!(media_type(None).map_err(|e| e.status), Ok(DEFAULT_CONTENT_TYPE.into()));
        for bad in ["text", "text/", "/plain", "te xt/plain", "text/pl\"ain"] {
            assert_eq!(mt(bad), Err(StatusCode::BAD_REQUEST), "{bad}");
        }
    }
}
