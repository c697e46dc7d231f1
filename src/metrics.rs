//! Prometheus metrics. The names are a contract with the dashboards and alert rules in
//! `monitoring/`, so they live here as constants and nowhere else.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
pub const HTTP_REQUEST_SIZE: &str = "http_request_size_bytes";
pub const HTTP_RESPONSE_SIZE: &str = "http_response_size_bytes";
pub const RATE_LIMIT_DECISIONS: &str = "rate_limit_decisions_total";
pub const RATE_LIMIT_REDIS_DURATION: &str = "rate_limit_redis_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const REDIS_POOL_CONNECTIONS: &str = "redis_pool_connections";
pub const JOBS_ENQUEUED: &str = "jobs_enqueued_total";
pub const JOBS_FINISHED: &str = "jobs_finished_total";
pub const JOB_DURATION: &str = "job_duration_seconds";
pub const JOBS_QUEUE_DEPTH: &str = "jobs_queue_depth";
pub const JOBS_OLDEST_AGE: &str = "jobs_oldest_queued_age_seconds";
pub const WORKER_POOL_BUSY: &str = "worker_pool_busy";
pub const WORKER_POOL_SIZE: &str = "worker_pool_size";
pub const APP_DRAINING: &str = "app_draining";
pub const APP_BUILD_INFO: &str = "app_build_info";
pub const APP_START_TIME: &str = "app_start_time_seconds";

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SIZE_BUCKETS: &[f64] = &[100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Sub-millisecond: a limiter decision is one Redis round trip on the request path.
const REDIS_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
const JOB_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HTTP_REQUEST_SIZE.into()), SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HTTP_RESPONSE_SIZE.into()), SIZE_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), JOB_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(RATE_LIMIT_REDIS_DURATION.into()), REDIS_BUCKETS)?
        .install_recorder()?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    let collector = PROCESS.get_or_init(metrics_process::Collector::default);
    collector.describe();
    Ok(handle)
}

/// Refreshes process_* series; called right before each scrape renders.
pub fn collect_process() {
    if let Some(c) = PROCESS.get() {
        c.collect();
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests by method, matched route and status");
    describe_histogram!(HTTP_REQUEST_DURATION, Unit::Seconds, "HTTP request latency");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being served");
    describe_histogram!(HTTP_REQUEST_SIZE, Unit::Bytes, "HTTP request body size (declared)");
    describe_histogram!(HTTP_RESPONSE_SIZE, Unit::Bytes, "HTTP response body size (declared)");
    describe_counter!(RATE_LIMIT_DECISIONS, "Rate limiter decisions by policy and decision");
    describe_histogram!(
        RATE_LIMIT_REDIS_DURATION,
        Unit::Seconds,
        "Rate limiter Redis round trips (EVALSHA), failed and timed-out ones included"
    );
    describe_gauge!(DB_POOL_CONNECTIONS, "Postgres pool connections by state");
    describe_gauge!(REDIS_POOL_CONNECTIONS, "Redis pool connections by state");
    describe_counter!(JOBS_ENQUEUED, "Jobs enqueued by kind");
    describe_counter!(JOBS_FINISHED, "Job attempts finished by kind and outcome");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Job attempt duration");
    describe_gauge!(JOBS_QUEUE_DEPTH, "Jobs by status");
    describe_gauge!(JOBS_OLDEST_AGE, Unit::Seconds, "Age of the oldest due queued job");
    describe_gauge!(WORKER_POOL_BUSY, "Workers running a job");
    describe_gauge!(WORKER_POOL_SIZE, "Workers in this process");
    describe_gauge!(APP_DRAINING, "1 while the process drains for shutdown");
    describe_gauge!(APP_BUILD_INFO, "Build information, value 1");
    describe_gauge!(APP_START_TIME, Unit::Seconds, "Process start time, unix seconds");
}
