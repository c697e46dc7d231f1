//! Load shedding and the request deadline, answered as problems rather than bare statuses.
//! Run by `observe` around everything inside it: a layer of their own would cost a boxed
//! service, a boxed future and a clone of the inner stack per request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::ApiError;

#[derive(Clone)]
pub struct Limits {
    /// `MAX_CONCURRENT_REQUESTS` permits.
    pub permits: Arc<Semaphore>,
    /// `REQUEST_TIMEOUT_SECS`.
    pub request_timeout: Duration,
}

impl Limits {
    /// At most `MAX_CONCURRENT_REQUESTS` run: the permit lives as long as the request. Without
    /// one the request gets [`shed`] instead of a queue, before any work is done.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

pub fn shed() -> Response {
    ApiError::unavailable("the server is at capacity; retry shortly", 1).into_response()
}

/// Requests taking longer than `limit` (`REQUEST_TIMEOUT_SECS`) are answered 408, except those
/// `no_deadline` exempts (uploads: 100 MiB from a slow client may rightly take minutes; the
/// body limit bounds them).
pub async fn deadline(limit: Duration, no_deadline: bool, run: impl Future<Output = Response>) -> Response {
    if no_deadline {
        return run.await;
    }
    match tokio::time::timeout(limit, run).await {
        Ok(resp) => resp,
        Err(_) => ApiError::timeout(format!("the request took longer than {} s", limit.as_secs())).into_response(),
    }
}
