//! Health: liveness (the process answers), readiness (it can serve), and the deep report
//! (`application/health+json`, draft-inadarei-api-health-check). Every dependency check runs
//! concurrently under `HEALTH_CHECK_TIMEOUT_MS`, and reports are cached for `HEALTH_CACHE_MS`
//! so a probe storm costs one round of checks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::build_info;
use crate::db;
use crate::jobs;
use crate::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub component_type: &'static str,
    pub observed_value: serde_json::Value,
    pub observed_unit: &'static str,
    pub status: Status,
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// One round of checks.
#[derive(Clone, Debug)]
pub struct Report {
    pub checks: BTreeMap<&'static str, Check>,
    /// Why the process is not ready (empty when ready, draining aside).
    pub not_ready: Vec<String>,
    pub taken_at: Instant,
}

impl Report {
    pub fn status(&self) -> Status {
        self.checks.values().map(|c| c.status).max().unwrap_or(Status::Pass)
    }
}

#[derive(Default)]
pub struct HealthCache {
    last: Mutex<Option<Arc<Report>>>,
}

fn now() -> String {
    let t: DateTime<Utc> = Utc::now();
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn check(component_type: &'static str, value: serde_json::Value, unit: &'static str, status: Status) -> Check {
    Check { component_type, observed_value: value, observed_unit: unit, status, time: now(), output: None }
}

fn failed(component_type: &'static str, unit: &'static str, status: Status, output: String) -> Check {
    Check {
        component_type,
        observed_value: serde_json::Value::Null,
        observed_unit: unit,
        status,
        time: now(),
        output: Some(output),
    }
}

async fn timed<T, F>(timeout: Duration, fut: F) -> Result<(T, Duration), String>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok((v, started.elapsed())),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn ms(d: Duration) -> serde_json::Value {
    serde_json::json!((d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0)
}

/// Returns the cached report, or runs the checks when it is older than `HEALTH_CACHE_MS`.
pub async fn report(state: &AppState) -> Arc<Report> {
    let ttl = state.settings.health.cache_ttl;
    let mut guard = state.health.last.lock().await;
    if let Some(r) = guard.as_ref() {
        if r.taken_at.elapsed() < ttl {
            return r.clone();
        }
    }
    let fresh = Arc::new(run_checks(state).await);
    *guard = Some(fresh.clone());
    fresh
}

async fn run_checks(state: &AppState) -> Report {
    let timeout = state.settings.health.check_timeout;
    let postgres = timed(timeout, async { Ok(db::applied_version(&state.db).await?) });
    let redis = async {
        match &state.redis {
            Some(r) => Some(r.ping(timeout).await.map_err(|e| format!("{e:#}"))),
            None => None,
        }
    };
    let storage = timed(timeout, state.storage.check(timeout));
    let queue = timed(timeout, jobs::queue::stats(&state.db));
    let (postgres, redis, storage, queue) = tokio::join!(postgres, redis, storage, queue);

    let mut checks = BTreeMap::new();
    let mut not_ready = Vec::new();
    match postgres {
        Ok((version, took)) => {
            checks.insert("postgres:responseTime", check("datastore", ms(took), "ms", Status::Pass));
            let wanted = db::latest_migration();
            let status = if version >= wanted { Status::Pass } else { Status::Fail };
            let mut c = check("component", serde_json::json!(version), "version", status);
            if status == Status::Fail {
                c.output = Some(format!("database at migration {version}, this build needs {wanted}"));
                not_ready.push("migrations pending".into());
            }
            checks.insert("migrations:version", c);
        }
        Err(e) => {
            checks.insert("postgres:responseTime", failed("datastore", "ms", Status::Fail, e));
            not_ready.push("postgres unavailable".into());
        }
    }
    let size = state.db.size();
    let idle = state.db.num_idle() as u32;
    let max = state.settings.database.max_connections;
    let in_use = size.saturating_sub(idle);
    let pool_status = if in_use >= max { Status::Warn } else { Status::Pass };
    let mut pool = check("datastore", serde_json::json!(in_use), "connections", pool_status);
    pool.output = (pool_status == Status::Warn).then(|| format!("all {max} pooled connections are in use"));
    checks.insert("postgres:connections", pool);

    match redis {
        Some(Ok(took)) if state.limiter.redis_degraded() => {
            let mut c = check("datastore", ms(took), "ms", Status::Warn);
            c.output = Some("the rate limiter fell back to in-process limits within the last second".into());
            checks.insert("redis:responseTime", c);
        }
        Some(Ok(took)) => {
            checks.insert("redis:responseTime", check("datastore", ms(took), "ms", Status::Pass));
        }
        Some(Err(e)) => {
            let required = state.settings.redis.required;
            let status = if required { Status::Fail } else { Status::Warn };
            let why = if required { e } else { format!("{e} (degraded: local rate limiting)") };
            checks.insert("redis:responseTime", failed("datastore", "ms", status, why));
            if required {
                not_ready.push("redis unavailable".into());
            }
        }
        None => {}
    }
    match storage {
        Ok((_, took)) => {
            checks.insert("storage:responseTime", check("datastore", ms(took), "ms", Status::Pass));
        }
        Err(e) => {
            checks.insert("storage:responseTime", failed("datastore", "ms", Status::Fail, e));
            not_ready.push("storage unavailable".into());
        }
    }
    match queue {
        Ok((stats, _)) => {
            checks.insert("jobs:queueDepth", check("component", serde_json::json!(stats.queued), "jobs", Status::Pass));
            checks.insert(
                "jobs:oldestQueuedAge",
                check("component", serde_json::json!(stats.oldest_queued_age_secs), "s", Status::Pass),
            );
        }
        Err(e) => {
            checks.insert("jobs:queueDepth", failed("component", "jobs", Status::Warn, e));
        }
    }
    let (busy, size) = state.workers.snapshot();
    let utilization = if size == 0 { 0.0 } else { busy as f64 * 100.0 / size as f64 };
    let worker_status = if size > 0 && busy >= size { Status::Warn } else { Status::Pass };
    checks.insert("workers:utilization", check("component", serde_json::json!(utilization), "percent", worker_status));
    checks.insert(
        "uptime",
        check("system", serde_json::json!(state.started_at.elapsed().as_secs_f64().round()), "s", Status::Pass),
    );
    Report { checks, not_ready, taken_at: Instant::now() }
}

/// The JSON body of `/health/details`.
pub fn details_body(state: &AppState, report: &Report) -> serde_json::Value {
    let status = if state.lifecycle.is_draining() { Status::Fail.max(report.status()) } else { report.status() };
    let checks: BTreeMap<&str, Vec<&Check>> = report.checks.iter().map(|(k, v)| (*k, vec![v])).collect();
    let mut notes = report.not_ready.clone();
    if state.lifecycle.is_draining() {
        notes.push("draining".into());
    }
    serde_json::json!({
        "status": status,
        "version": build_info::VERSION,
        "releaseId": build_info::release_id(),
        "serviceId": state.settings.service_id,
        "description": "ballast",
        "notes": notes,
        "checks": checks,
    })
}

/// Ready = not draining and every hard dependency answered.
pub async fn readiness(state: &AppState) -> Result<(), Vec<String>> {
    if state.lifecycle.is_draining() {
        return Err(vec!["draining".into()]);
    }
    let r = report(state).await;
    if r.not_ready.is_empty() {
        Ok(())
    } else {
        Err(r.not_ready.clone())
    }
}
