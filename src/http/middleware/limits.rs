//! Load shedding and the request deadline, answered as problems rather than bare statuses.
//! One layer for both: each layer of its own would cost a boxed service and future per request.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::http::error::ApiError;

#[derive(Clone)]
pub struct Limits {
    /// `MAX_CONCURRENT_REQUESTS` permits.
    pub permits: Arc<Semaphore>,
    /// `REQUEST_TIMEOUT_SECS`.
    pub request_timeout: Duration,
}

/// At most `MAX_CONCURRENT_REQUESTS` run; the next one gets a fast 503 instead of a queue.
/// Requests taking longer than `REQUEST_TIMEOUT_SECS` are answered 408. Uploads are exempt
/// from the deadline: 100 MiB from a slow client may rightly take minutes; they are bounded
/// by the body limit.
pub async fn limits(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire() else {
        return ApiError::unavailable("the server is at capacity; retry shortly", 1).into_response();
    };
    if req.method() == axum::http::Method::POST && req.uri().path() == "/api/v1/files" {
        return next.run(req).await;
    }
    let limit = limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::timeout(format!("the request took longer than {} s", limit.as_secs())).into_response(),
    }
}
