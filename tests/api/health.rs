use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn probes_answer_with_their_codes_and_bodies() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;
    println!("spawn → listening: {:?}", app.startup);

    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let summary: serde_json::Value = app.get("/health").await.json().await.expect("json");
    assert_eq!(summary["status"], "pass");
    assert!(summary["version"].is_string());
    assert!(summary.get("checks").is_none(), "the public summary shows no component details");

    let details = app.mgmt_get("/health/details").await;
    assert_eq!(details.status(), 200);
    assert_eq!(details.headers()["content-type"], "application/health+json");
    let body: serde_json::Value = details.json().await.expect("json");
    assert_eq!(body["status"], "pass", "{body:#}");
    for key in [
        "postgres:responseTime",
        "postgres:connections",
        "redis:responseTime",
        "storage:responseTime",
        "workers:utilization",
        "jobs:queueDepth",
        "jobs:oldestQueuedAge",
        "migrations:version",
        "uptime",
    ] {
        let check = &body["checks"][key][0];
        assert!(
            check["status"].is_string() && check["componentType"].is_string() && check["time"].is_string(),
            "{key}: {body:#}"
        );
    }
    assert!(body["releaseId"].is_string() && body["serviceId"] == "ballast");

    let info: serde_json::Value = app.mgmt_get("/info").await.json().await.expect("json");
    assert!(info["version"].is_string() && info["git_sha"].is_string());
    // The management routes are not on the public listener.
    assert_eq!(app.get("/metrics").await.status(), 404);
    assert_eq!(app.get("/health/details").await.status(), 404);
}

async fn timed_get(app: &TestApp, url: &str) -> (u16, Duration, serde_json::Value) {
    let started = Instant::now();
    let resp = app.client.get(url).send().await.expect("health answers");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or_default();
    (status, started.elapsed(), body)
}

#[tokio::test]
async fn health_answers_fast_and_readiness_fails_while_postgres_is_frozen() {
    let pg = PrivatePostgres::start().await;
    let db = TestDb::create(&pg.admin_url()).await;
    let app = Spawn::serve(&db).env("HEALTH_CACHE_MS", "0").env("HEALTH_CHECK_TIMEOUT_MS", "80").start().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);

    let thaw = pg.freeze();
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, took, _) = timed_get(&app, &app.url("/health/ready")).await;
        assert_eq!(status, 503, "a frozen database means not ready");
        latencies.push(took);
    }
    let (status, took, body) = timed_get(&app, &app.mgmt_url("/health/details")).await;
    latencies.push(took);
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["postgres:responseTime"][0]["status"], "fail", "{body:#}");
    let (status, took, _) = timed_get(&app, &app.url("/health/live")).await;
    assert_eq!(status, 200, "liveness never checks dependencies");
    latencies.push(took);
    drop(thaw);

    latencies.sort();
    println!("health latencies with postgres frozen: {latencies:?}");
    // DESIGN: within 100 ms. The median is held to that; the max gets slack for a busy CI box
    // (a hang would take seconds, the statement timeout).
    assert!(latencies[latencies.len() / 2] < Duration::from_millis(100), "{latencies:?}");
    assert!(latencies[latencies.len() - 1] < Duration::from_millis(500), "{latencies:?}");

    app.wait_status(&app.url("/health/ready"), 200, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_frozen_redis_degrades_health_to_warn_but_keeps_the_service_ready() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db)
        .env("REDIS_URL", redis.url())
        .env("HEALTH_CACHE_MS", "0")
        .env("HEALTH_CHECK_TIMEOUT_MS", "80")
        .start()
        .await;

    let _thaw = redis.freeze();
    let (status, took, body) = timed_get(&app, &app.mgmt_url("/health/details")).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "warn", "{body:#}");
    assert_eq!(body["checks"]["redis:responseTime"][0]["status"], "warn");
    let (status, took_ready, _) = timed_get(&app, &app.url("/health/ready")).await;
    assert_eq!(status, 200, "Redis is optional unless REDIS_REQUIRED=true");
    println!("details {took:?}, ready {took_ready:?} with redis frozen");
    assert!(took < Duration::from_millis(500) && took_ready < Duration::from_millis(500));
}

#[tokio::test]
async fn a_required_redis_that_is_down_makes_the_service_unready() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db)
        .env("REDIS_URL", redis.url())
        .env("REDIS_REQUIRED", "true")
        .env("HEALTH_CACHE_MS", "0")
        .env("HEALTH_CHECK_TIMEOUT_MS", "80")
        .start()
        .await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    let thaw = redis.freeze();
    assert_eq!(app.get("/health/ready").await.status(), 503);
    drop(thaw);
    app.wait_status(&app.url("/health/ready"), 200, Duration::from_secs(10)).await;
}
