//! The operator's stories: processes die or are stopped mid-job, and no job is lost.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const T: Duration = Duration::from_secs(30);

fn worker(db: &TestDb) -> Spawn {
    Spawn::serve(db).command(&["worker"]).env("JOB_POLL_INTERVAL_MS", "200")
}

#[tokio::test]
async fn sigkill_mid_job_loses_nothing_another_worker_finishes_it_after_the_lease() {
    let db = TestDb::create(&admin_url()).await;
    let api = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let token = api.token("alice", None).await;
    let fast_lease = |s: Spawn| s.env("JOB_LEASE_SECS", "2").env("JOB_MAINTENANCE_INTERVAL_SECS", "1");
    let mut doomed = fast_lease(worker(&db)).start().await;
    let (_, job) = api.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 1500}})).await;
    let id = job["id"].as_str().expect("id").to_string();
    api.wait_job(&token, &id, T, |j| j["status"] == "running").await;

    doomed.signal(libc::SIGKILL);
    doomed.wait_exit(Duration::from_secs(5)).await;
    let _rescuer = fast_lease(worker(&db)).start().await;

    let done = api.wait_job(&token, &id, T, |j| j["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 2, "the killed attempt counts, the second succeeds");
    let pool = db.pool().await;
    let stuck: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'running'").fetch_one(&pool).await.expect("count");
    assert_eq!(stuck, 0);
}

#[tokio::test]
async fn sigterm_during_a_long_job_releases_it_and_another_worker_finishes_it() {
    let db = TestDb::create(&admin_url()).await;
    let api = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let token = api.token("alice", None).await;
    let mut first = worker(&db).env("JOB_DRAIN_TIMEOUT_SECS", "1").env("SHUTDOWN_TIMEOUT_SECS", "5").start().await;
    let (_, job) = api.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 3000}})).await;
    let id = job["id"].as_str().expect("id").to_string();
    api.wait_job(&token, &id, T, |j| j["status"] == "running").await;

    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    let (_, released) = api.get_job(&token, &id).await;
    assert_eq!(released["status"], "queued", "{released}");
    assert_eq!(released["attempts"], 0, "a released job keeps its attempt");
    let summary = first.logs.wait_for(Duration::from_secs(1), |v| v["message"] == "shutdown complete").await;
    assert_eq!(summary["jobs_released"], 1, "{summary}");

    let _second = worker(&db).start().await;
    let done = api.wait_job(&token, &id, T, |j| j["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 1);
}

#[tokio::test]
async fn sigterm_with_short_jobs_lets_them_finish_before_exit() {
    let db = TestDb::create(&admin_url()).await;
    let api = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let token = api.token("alice", None).await;
    let mut w = worker(&db).start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, job) = api.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 700}})).await;
        ids.push(job["id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        api.wait_job(&token, id, T, |j| j["status"] == "running").await;
    }
    w.signal(libc::SIGTERM);
    assert_eq!(w.wait_exit(Duration::from_secs(10)).await.code(), Some(0));
    for id in &ids {
        assert_eq!(api.get_job(&token, id).await.1["status"], "succeeded");
    }
    let summary = w.logs.wait_for(Duration::from_secs(1), |v| v["message"] == "shutdown complete").await;
    assert_eq!(summary["jobs_finished"], 3, "{summary}");
    assert_eq!(summary["jobs_released"], 0);
}

#[tokio::test]
async fn ten_thousand_jobs_across_two_workers_each_run_exactly_once() {
    let db = TestDb::create(&admin_url()).await;
    let api = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let pool = db.pool().await;
    seed_jobs(&pool, 10000, "queued").await;
    let tuned = |s: Spawn| s.env("WORKER_CONCURRENCY", "64").env("JOB_CLAIM_BATCH", "64");
    let (a, b) = tokio::join!(tuned(worker(&db)).start(), tuned(worker(&db)).start());
    wait_db(&pool, "SELECT count(*) = 10000 FROM jobs WHERE status = 'succeeded'", Duration::from_secs(120)).await;

    let (runs_a, runs_b) = (a.metrics().await, b.metrics().await);
    let by = |m: &str| metric_sum(m, "jobs_finished_total", &[("kind", "noop"), ("outcome", "succeeded")]);
    let (na, nb) = (by(&runs_a), by(&runs_b));
    println!("worker a ran {na}, worker b ran {nb}");
    assert_eq!(na + nb, 10000.0, "every job executed once: no duplicates, none lost");
    assert!(na > 0.0 && nb > 0.0, "both workers took part");
    let extra: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts <> 1").fetch_one(&pool).await.expect("count");
    assert_eq!(extra, 0);
    drop(api);
}
