//! Load shedding and the request deadline, answered as problems rather than bare statuses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::http::error::ApiError;
use crate::state::AppState;

/// At most `MAX_CONCURRENT_REQUESTS` run; the next one gets a fast 503 instead of a queue.
pub async fn shed(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::unavailable("the server is at capacity; retry shortly", 1).into_response(),
    }
}

/// Requests taking longer than `REQUEST_TIMEOUT_SECS` are answered 408. Uploads are exempt:
/// 100 MiB from a slow client may rightly take minutes; they are bounded by the body limit.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/v1/files" {
        return next.run(req).await;
    }
    let limit = state.settings.http.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::timeout(format!("the request took longer than {} s", limit.as_secs())).into_response(),
    }
}
