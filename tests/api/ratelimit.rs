//! Rate limiting against real Redis: exactness, headers, shared budgets, spoofing, fallback.

use std::time::{Duration, Instant};

use crate::helpers::*;

fn limited(db: &TestDb, per_minute: u32, burst: u32) -> Spawn {
    Spawn::serve(db)
        .env("WORKER_CONCURRENCY", "0")
        .env("RATE_LIMIT_DEFAULT_PER_MINUTE", per_minute.to_string())
        .env("RATE_LIMIT_DEFAULT_BURST", burst.to_string())
        .env("RATE_LIMIT_ANONYMOUS_PER_MINUTE", per_minute.to_string())
        .env("RATE_LIMIT_ANONYMOUS_BURST", burst.to_string())
        .env("RATE_LIMIT_IP_PER_SECOND", "100000")
        .env("RATE_LIMIT_IP_BURST", "100000")
}

async fn hammer(app: &TestApp, token: &str, n: usize) -> (usize, usize) {
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..n {
        let r = app.client.get(app.url("/api/v1/jobs?limit=1")).bearer_auth(token).send().await.expect("GET");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn one_identity_gets_exactly_the_burst_then_the_rate() {
    let db = TestDb::create(&admin_url()).await;
    // 60/min = one per second after a burst of 10: 40 quick requests admit 10 (+1 if a
    // second ticks over during the loop).
    let app = limited(&db, 60, 10).start().await;
    let token = app.token("alice", None).await;
    let started = Instant::now();
    let (ok, limited) = hammer(&app, &token, 40).await;
    let elapsed = started.elapsed().as_secs_f64();
    let allowed_max = 10 + elapsed.ceil() as usize;
    println!("admitted {ok}, limited {limited} in {elapsed:.2}s");
    assert!(ok >= 10 && ok <= allowed_max, "admitted {ok}, expected 10..={allowed_max}");
    let m = app.metrics().await;
    assert!(
        metric_sum(&m, "rate_limit_decisions_total", &[("policy", "default"), ("decision", "limited")])
            >= limited as f64
    );
    // Every decision was one timed Redis round trip.
    assert!(metric_sum(&m, "rate_limit_redis_duration_seconds_count", &[]) >= 40.0, "{m}");
}

#[tokio::test]
async fn decisions_sent_to_redis_together_are_answered_each_by_its_own_key() {
    let db = TestDb::create(&admin_url()).await;
    // Burst 8, then one a second: concurrent requests leave for Redis in shared pipelines.
    let app = limited(&db, 60, 8).start().await;
    let (alice, bob) = (app.token("alice", None).await, app.token("bob", None).await);
    let get = |token: String| {
        let request = app.client.get(app.url("/api/v1/jobs?limit=1")).bearer_auth(token);
        async move {
            let r = request.send().await.expect("GET");
            let remaining = r.headers().get("x-ratelimit-remaining").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            (r.status().as_u16(), remaining)
        }
    };
    let alices = futures::future::join_all((0..40).map(|_| get(alice.clone())));
    let bobs = futures::future::join_all((0..4).map(|_| get(bob.clone())));
    let started = Instant::now();
    let (alices, bobs) = tokio::join!(alices, bobs);
    let allowed_max = 8 + started.elapsed().as_secs_f64().ceil() as usize;
    let admitted = alices.iter().filter(|(s, _)| *s == 200).count();
    assert!((8..=allowed_max).contains(&admitted), "alice: {admitted} of 40 admitted, expected 8..={allowed_max}");
    // Bob's budget is his own: all four admitted, each answer from his bucket (alice's is
    // empty by now: a reply meant for her would read 0 or be a 429).
    assert!(bobs.iter().all(|&(s, r)| s == 200 && r.is_some_and(|r| (4..=7).contains(&r))), "bob: {bobs:?}");
}

#[tokio::test]
async fn headers_are_consistent_and_retry_after_is_honest() {
    let db = TestDb::create(&admin_url()).await;
    let app = limited(&db, 120, 2).start().await;
    let token = app.token("alice", None).await;
    let get = || app.client.get(app.url("/api/v1/jobs?limit=1")).bearer_auth(&token).send();
    let first = get().await.expect("GET");
    let h = first.headers();
    assert_eq!(h["ratelimit-policy"], "\"default\";q=120;w=60");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "1");
    assert!(h["ratelimit"].to_str().expect("ascii").starts_with("\"default\";r=1;t="));
    get().await.expect("GET");
    let denied = get().await.expect("GET");
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    assert_eq!(denied.headers()["x-ratelimit-remaining"], "0");
    let retry: u64 = denied.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=1).contains(&retry), "120/min refills one every 0.5 s: Retry-After {retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await; // honouring Retry-After is the behaviour under test
    assert_eq!(get().await.expect("GET").status(), 200, "a client that waits Retry-After is admitted");
}

#[tokio::test]
async fn three_instances_sharing_redis_share_one_budget() {
    let db = TestDb::create(&admin_url()).await;
    let prefix = format!("t-shared-{}:", uuid::Uuid::new_v4().simple());
    let spawn = || limited(&db, 60, 30).env("REDIS_KEY_PREFIX", prefix.clone()).start();
    let (a, b, c) = tokio::join!(spawn(), spawn(), spawn());
    let token = a.token("alice", None).await;
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..30 {
        for app in [&a, &b, &c] {
            ok += hammer(app, &token, 1).await.0;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let budget = 30.0 + elapsed; // burst + 1/s
    println!("90 requests over 3 instances in {elapsed:.2}s: admitted {ok}, budget {budget:.1}");
    assert!(ok as f64 <= budget.ceil() * 1.01, "over-admission: {ok} > {budget}");
    assert!(ok >= 30, "the burst is available: {ok}");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_changes_nothing_unless_the_peer_is_a_trusted_proxy() {
    let db = TestDb::create(&admin_url()).await;
    let untrusted = limited(&db, 60, 2).start().await;
    let send = |app: &TestApp, xff: &str| {
        app.client.get(app.url("/api/v1/jobs")).header("x-forwarded-for", xff.to_string()).send()
    };
    // Anonymous requests (401 after the limiter) are limited per client IP.
    for xff in ["1.1.1.1", "2.2.2.2"] {
        assert_eq!(send(&untrusted, xff).await.expect("GET").status(), 401);
    }
    assert_eq!(send(&untrusted, "3.3.3.3").await.expect("GET").status(), 429, "one identity: the socket peer");

    let trusted = limited(&db, 60, 2).env("TRUSTED_PROXIES", "127.0.0.1/32").start().await;
    for xff in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"] {
        assert_eq!(send(&trusted, xff).await.expect("GET").status(), 401, "each forwarded client has its own budget");
    }
    let line = trusted.logs.wait_for(Duration::from_secs(5), |v| v["client_ip"] == "4.4.4.4").await;
    assert_eq!(line["route"], "/api/v1/jobs");
}

#[tokio::test]
async fn a_frozen_redis_falls_back_within_the_timeout_and_limiting_resumes_when_it_returns() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create(&admin_url()).await;
    let app = limited(&db, 6000, 1000)
        .env("REDIS_URL", redis.url())
        .env("HEALTH_CACHE_MS", "0")
        .env("HEALTH_CHECK_TIMEOUT_MS", "80")
        .start()
        .await;
    let token = app.token("alice", None).await;
    assert_eq!(hammer(&app, &token, 3).await.0, 3);

    let redis_seconds = |m: &str| metric_sum(m, "rate_limit_redis_duration_seconds_sum", &[]);
    let waited_before = redis_seconds(&app.metrics().await);
    let thaw = redis.freeze();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let (ok, _) = hammer(&app, &token, 1).await;
        assert_eq!(ok, 1, "the fallback limiter admits within policy");
        worst = worst.max(t.elapsed());
    }
    println!("worst latency with redis frozen: {worst:?} (REDIS_TIMEOUT_MS=50)");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
    let m = app.metrics().await;
    assert!(metric_sum(&m, "rate_limit_decisions_total", &[("decision", "fallback")]) >= 1.0, "{m}");
    // The round trip that timed out is in the latency histogram, at about REDIS_TIMEOUT_MS.
    assert!(redis_seconds(&m) - waited_before >= 0.045, "{m}");
    let details: serde_json::Value = app.mgmt_get("/health/details").await.json().await.expect("json");
    assert_eq!(details["checks"]["redis:responseTime"][0]["status"], "warn", "{details:#}");
    assert_eq!(app.get("/health/ready").await.status(), 200);
    drop(thaw);

    // After the breaker window Redis decides again.
    until_redis_decides_again(&app, &token, "redis-backed decisions never resumed").await;
}

fn allowed(metrics: &str) -> f64 {
    metric_sum(metrics, "rate_limit_decisions_total", &[("decision", "allowed")])
}

/// An app limited through `redis_url`, and a token whose first three requests Redis decided.
async fn decided_by_redis(db: &TestDb, redis_url: &str) -> (TestApp, String) {
    let app = limited(db, 6000, 1000).env("REDIS_URL", redis_url).start().await;
    let token = app.token("alice", None).await;
    assert_eq!(hammer(&app, &token, 3).await.0, 3);
    let m = app.metrics().await;
    assert_eq!(allowed(&m), 3.0, "decided by redis: {m}");
    (app, token)
}

/// Hammers until one more decision comes from Redis, or fails after ten seconds.
async fn until_redis_decides_again(app: &TestApp, token: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = allowed(&app.metrics().await);
        assert_eq!(hammer(app, token, 1).await.0, 1, "answered meanwhile (fallback)");
        if allowed(&app.metrics().await) > before {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_restarted_redis_is_reconnected_and_decides_again() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create(&admin_url()).await;
    let (app, token) = decided_by_redis(&db, &redis.url()).await;

    // The limiter's socket dies with the old server.
    let _redis = redis.restart().await;
    until_redis_decides_again(&app, &token, "the limiter never reconnected to the restarted redis").await;
}

#[tokio::test]
async fn a_flushed_script_is_loaded_again_and_redis_decides_again() {
    let redis = PrivateRedis::start().await;
    let db = TestDb::create(&admin_url()).await;
    let (app, token) = decided_by_redis(&db, &redis.url()).await;

    // Someone runs SCRIPT FLUSH: the next EVALSHA gets NOSCRIPT.
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    until_redis_decides_again(&app, &token, "the limiter never loaded its script again").await;
}

#[tokio::test]
async fn the_password_and_database_of_redis_url_are_honoured() {
    let redis = PrivateRedis::start_with(&["--requirepass", "s3cret"]).await;
    let db = TestDb::create(&admin_url()).await;
    let _decided = decided_by_redis(&db, &format!("redis://:s3cret@127.0.0.1:{}/3", redis.port)).await;
    // The budget lives in database 3, none in 0.
    assert_eq!(redis.cli(&["-a", "s3cret", "-n", "3", "DBSIZE"]), "1");
    assert_eq!(redis.cli(&["-a", "s3cret", "-n", "0", "DBSIZE"]), "0");
}

/// A Redis that speaks only TLS, with a self-signed certificate for 127.0.0.1.
async fn tls_redis(dir: &std::path::Path) -> PrivateRedis {
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (cert.to_string_lossy().into_owned(), key.to_string_lossy().into_owned());
    PrivateRedis::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ])
    .await
}

#[tokio::test]
async fn rediss_is_spoken_and_an_untrusted_certificate_is_refused_unless_the_url_says_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = tls_redis(dir.path()).await;
    let db = TestDb::create(&admin_url()).await;
    let decisions = |m: &str, d: &str| metric_sum(m, "rate_limit_decisions_total", &[("decision", d)]);

    // Self-signed is not trusted: the limiter falls back and says why.
    let verified =
        limited(&db, 6000, 1000).env("REDIS_URL", format!("rediss://127.0.0.1:{}/0", redis.port)).start().await;
    let token = verified.token("alice", None).await;
    assert_eq!(hammer(&verified, &token, 2).await.0, 2, "answered by the fallback");
    let m = verified.metrics().await;
    assert_eq!(decisions(&m, "allowed"), 0.0, "{m}");
    assert!(decisions(&m, "fallback") >= 1.0, "{m}");
    let line = verified
        .logs
        .wait_for(Duration::from_secs(5), |v| v["message"] == "rate limiter: redis unavailable, falling back")
        .await;
    assert!(line["error"].as_str().is_some_and(|e| e.contains("TLS handshake")), "{line}");

    // #insecure: encrypted, certificate unchecked, and Redis decides.
    let (insecure, _) = decided_by_redis(&db, &format!("rediss://127.0.0.1:{}/0#insecure", redis.port)).await;
    let details: serde_json::Value = insecure.mgmt_get("/health/details").await.json().await.expect("json");
    assert_eq!(details["checks"]["redis:responseTime"][0]["status"], "pass", "the pool speaks TLS too: {details:#}");
}

#[tokio::test]
async fn health_and_metrics_are_never_rate_limited() {
    let db = TestDb::create(&admin_url()).await;
    let app = limited(&db, 1, 1).env("RATE_LIMIT_IP_PER_SECOND", "1").env("RATE_LIMIT_IP_BURST", "1").start().await;
    for _ in 0..20 {
        assert_eq!(app.get("/health/ready").await.status(), 200);
        assert_eq!(app.mgmt_get("/metrics").await.status(), 200);
    }
}
