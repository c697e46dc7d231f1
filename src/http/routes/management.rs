//! The management listener: metrics and build info. Never exposed publicly.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::build_info;
use crate::jobs;
use crate::metrics as m;
use crate::state::AppState;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    refresh_gauges(&state).await;
    m::collect_process();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

/// Gauges that are cheaper to read at scrape time than to maintain on every change.
async fn refresh_gauges(state: &AppState) {
    let size = state.db.size() as f64;
    let idle = state.db.num_idle() as f64;
    let max = f64::from(state.settings.database.max_connections);
    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "max").set(max);
    if let Some(redis) = &state.redis {
        let s = redis.pool.status();
        metrics::gauge!(m::REDIS_POOL_CONNECTIONS, "state" => "idle").set(s.available as f64);
        metrics::gauge!(m::REDIS_POOL_CONNECTIONS, "state" => "in_use").set((s.size - s.available) as f64);
        metrics::gauge!(m::REDIS_POOL_CONNECTIONS, "state" => "max").set(s.max_size as f64);
    }
    let (busy, size) = state.workers.snapshot();
    metrics::gauge!(m::WORKER_POOL_BUSY).set(busy as f64);
    metrics::gauge!(m::WORKER_POOL_SIZE).set(size as f64);
    let timeout = state.settings.health.check_timeout;
    if let Ok(Ok(stats)) = tokio::time::timeout(timeout, jobs::queue::stats(&state.db)).await {
        metrics::gauge!(m::JOBS_QUEUE_DEPTH, "status" => "queued").set(stats.queued as f64);
        metrics::gauge!(m::JOBS_QUEUE_DEPTH, "status" => "running").set(stats.running as f64);
        metrics::gauge!(m::JOBS_OLDEST_AGE).set(stats.oldest_queued_age_secs);
    }
}

pub async fn info(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "service": state.settings.service_id,
        "version": build_info::VERSION,
        "git_sha": build_info::GIT_SHA,
        "build_time": build_info::BUILD_TIME,
        "rustc": build_info::RUSTC,
        "environment": state.settings.env.as_str(),
        "features": ["jobs", "files", "jwt-hs256", "jwt-jwks", "rate-limit-redis", "storage-local", "storage-s3", "openapi"],
    }))
}
