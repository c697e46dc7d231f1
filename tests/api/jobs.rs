use std::time::Duration;

use serde_json::json;

use ballast::jobs::enqueuer::Enqueuer;
use ballast::jobs::queue::{self, Enqueued, NewJob};

use crate::helpers::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_enqueued_job_runs_to_success_and_its_logs_carry_the_request_trace() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("LOG_LEVEL", "info,ballast::jobs=debug").start().await;
    let token = app.token("alice", None).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = app
        .client
        .post(app.url("/api/v1/jobs"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .json(&json!({"kind": "noop", "payload": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().expect("ascii").to_string();
    let job: serde_json::Value = resp.json().await.expect("json");
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(location, format!("/api/v1/jobs/{id}"));
    assert_eq!(job["status"], "queued");
    assert_eq!(job["trace_id"], trace);

    let done = app.wait_job(&token, &id, T, |j| j["status"] == "succeeded").await;
    assert_eq!(done["attempts"], 1);
    assert!(done["finished_at"].is_string());
    let line = app.logs.wait_for(T, |v| v["message"] == "job succeeded" && v["job_id"] == id.as_str()).await;
    assert_eq!(line["trace_id"], trace, "{line}");
    assert_eq!(line["kind"], "noop");
    // A line logged inside the request (not the access line) carries the request's ids too.
    let enq = app.logs.wait_for(T, |v| v["message"] == "job enqueued" && v["job_id"] == id.as_str()).await;
    assert_eq!(enq["trace_id"], trace, "{enq}");
    assert!(enq["request_id"].is_string(), "{enq}");

    let metrics = app.metrics().await;
    assert!(metric_sum(&metrics, "jobs_enqueued_total", &[("kind", "noop")]) >= 1.0);
    assert!(metric_sum(&metrics, "jobs_finished_total", &[("kind", "noop"), ("outcome", "succeeded")]) >= 1.0);
    assert!(metrics.contains("job_duration_seconds_bucket{kind=\"noop\""), "{metrics}");
}

#[tokio::test]
async fn bad_job_requests_are_refused_with_clear_problems() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let token = app.token("alice", None).await;

    let (code, body) = app.post_job(&token, json!({"kind": "mine.bitcoin", "payload": {}})).await;
    assert_eq!(code, 422);
    assert!(body["detail"].as_str().unwrap_or_default().contains("unknown job kind"), "{body}");
    let (code, body) = app.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 600001}})).await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = app.post_job(&token, json!({"kind": "sleep", "payload": {}})).await;
    assert_eq!(code, 422);
    assert!(body["detail"].as_str().unwrap_or_default().contains("ms"), "{body}");
    let (code, _) = app.post_job(&token, json!({"kind": "noop", "payload": {}, "priority": 101})).await;
    assert_eq!(code, 422);
    let (code, _) = app.post_job(&token, json!({"kind": "noop", "payload": {}, "max_attempts": 0})).await;
    assert_eq!(code, 422);
    let (code, body) = app.post_job(&token, json!({"kind": "noop"})).await;
    assert_eq!(code, 422, "the payload is required: {body}");
    let (code, body) = app.post_job(&token, json!({"kind": "noop", "payload": {"note": "a\u{0}b"}})).await;
    assert_eq!(code, 422, "noop refuses unknown payload fields: {body}");
    let (code, body) = app.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 5.0}, "priority": 3.0})).await;
    assert_eq!(code, 202, "5.0 is the integer 5 to JSON Schema: {body}");

    let url = app.url("/api/v1/jobs");
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"kind\":")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("problem");
    assert!(body["detail"].as_str().unwrap_or_default().contains("invalid JSON"), "{body}");
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 415);
    let resp = app.client.post(&url).json(&json!({"kind": "noop", "payload": {}})).send().await.expect("POST");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = app
        .client
        .post(&url)
        .bearer_auth("garbage")
        .json(&json!({"kind": "noop", "payload": {}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 401);
    let big = json!({"kind": "noop", "payload": {"x": "a".repeat(2 * 1024 * 1024)}});
    let resp = app.client.post(&url).bearer_auth(&token).json(&big).send().await.expect("POST");
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let pool = db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(count, 1, "refused requests create nothing (only the accepted sleep job exists)");
}

#[tokio::test]
async fn idempotency_keys_return_the_original_job_and_refuse_a_different_body() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let alice = app.token("alice", None).await;
    let bob = app.token("bob", None).await;
    let post = |token: String, body: serde_json::Value| {
        let client = app.client.clone();
        let url = app.url("/api/v1/jobs");
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("idempotency-key", "order-42")
                .json(&body)
                .send()
                .await
                .expect("POST");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (c1, first) = post(alice.clone(), json!({"kind": "sleep", "payload": {"ms": 10}})).await;
    let (c2, again) = post(alice.clone(), json!({"kind": "sleep", "payload": {"ms": 10}})).await;
    let (c3, _) = post(alice.clone(), json!({"kind": "sleep", "payload": {"ms": 20}})).await;
    let (c4, bobs) = post(bob, json!({"kind": "sleep", "payload": {"ms": 10}})).await;
    assert_eq!((c1, c2, c3, c4), (202, 200, 409, 202));
    assert_eq!(first["id"], again["id"]);
    assert_ne!(first["id"], bobs["id"], "keys are per tenant");
    let pool = db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(count, 2);
}

fn new_job(tenant: &str, key: Option<&str>, hash: Option<&str>, payload: serde_json::Value) -> NewJob {
    NewJob {
        tenant: tenant.into(),
        kind: "noop".into(),
        payload,
        run_at: None,
        priority: 0,
        max_attempts: 3,
        idempotency_key: key.map(Into::into),
        request_hash: hash.map(Into::into),
        trace_id: None,
    }
}

#[tokio::test]
async fn one_batched_insert_answers_each_enqueue_as_its_own_including_keys_replayed_within_it() {
    let db = TestDb::create(&admin_url()).await;
    let _app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await; // migrates
    let pool = db.pool().await;
    let batch = [
        new_job("alice", None, None, json!({})),
        new_job("alice", Some("k1"), Some("h1"), json!({})),
        new_job("alice", Some("k1"), Some("h1"), json!({})), // a retry inside the same batch
        new_job("alice", Some("k1"), Some("h2"), json!({})), // the key reused with another body
        new_job("bob", Some("k1"), Some("h1"), json!({})),   // keys are per tenant
    ];
    let out = queue::enqueue_many(&pool, &batch).await.expect("batch");
    let (created, existing): (Vec<_>, Vec<_>) = out.iter().partition(|e| matches!(e, Enqueued::Created(_)));
    assert_eq!((created.len(), existing.len()), (3, 2));
    let job = |e: &Enqueued| match e {
        Enqueued::Created(j) | Enqueued::Existing(j) => j.clone(),
    };
    let jobs: Vec<_> = out.iter().map(job).collect();
    assert!(matches!(out[0], Enqueued::Created(_)) && matches!(out[1], Enqueued::Created(_)));
    assert!(matches!(out[4], Enqueued::Created(_)), "bob's k1 is his own");
    assert_eq!(jobs[2].id, jobs[1].id, "the replay gets the original");
    assert_eq!(jobs[3].id, jobs[1].id);
    assert_eq!(jobs[3].request_hash.as_deref(), Some("h1"), "the original's hash, so the API answers 409");
    assert_eq!((jobs[0].tenant.as_str(), jobs[4].tenant.as_str()), ("alice", "bob"), "answers in input order");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 3);
    let commits: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT created_at) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(commits, 1, "one statement, one transaction");
}

#[tokio::test]
async fn a_row_postgres_refuses_fails_only_its_own_enqueue_not_the_batch_it_shared() {
    let db = TestDb::create(&admin_url()).await;
    let _app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let pool = db.pool().await;
    let enqueuer = Enqueuer::spawn(pool.clone());
    // All three are handed over before the batching task first runs (one thread): one batch.
    let (a, bad, c) = tokio::join!(
        enqueuer.enqueue(new_job("alice", None, None, json!({"n": 1}))),
        enqueuer.enqueue(new_job("alice", None, None, json!({"nul": "\u{0}"}))),
        enqueuer.enqueue(new_job("alice", None, None, json!({"n": 3}))),
    );
    assert!(matches!(a, Ok(Enqueued::Created(_))) && matches!(c, Ok(Enqueued::Created(_))));
    match bad {
        Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("22P05"), "{e}"),
        other => panic!("expected jsonb's refusal, got {:?}", other.map(|_| ())),
    }
    let stored: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM jobs ORDER BY id").fetch_all(&pool).await.expect("rows");
    assert_eq!(stored, vec![json!({"n": 1}), json!({"n": 3})]);
}

#[tokio::test]
async fn concurrent_enqueues_share_commits_and_every_client_gets_its_own_job() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").env("RATE_LIMIT_ENABLED", "false").start().await;
    let token = app.token("alice", None).await;
    let posts = (0..300).map(|i| {
        let req = app.client.post(app.url("/api/v1/jobs")).bearer_auth(&token);
        // Every third request replays a key another request uses too.
        let req = if i % 3 == 0 { req.header("idempotency-key", format!("k{}", i % 30)) } else { req };
        async move {
            let r = req.json(&json!({"kind": "noop", "payload": {}})).send().await.expect("POST");
            let code = r.status().as_u16();
            (code, r.json::<serde_json::Value>().await.expect("json")["id"].as_str().map(String::from))
        }
    });
    let answers = futures::future::join_all(posts).await;
    let accepted: std::collections::BTreeSet<_> =
        answers.iter().filter(|(c, _)| *c == 202).filter_map(|(_, id)| id.clone()).collect();
    let replayed = answers.iter().filter(|(c, _)| *c == 200).count();
    assert_eq!(answers.iter().filter(|(c, _)| *c == 202).count(), 200 + 10, "{answers:?}");
    assert_eq!(accepted.len(), 210, "every 202 names a job of its own");
    assert_eq!(replayed, 90);
    let pool = db.pool().await;
    let (rows, commits): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT created_at) FROM jobs").fetch_one(&pool).await.expect("count");
    assert_eq!(rows, 210);
    assert!(commits < rows, "300 concurrent enqueues in {commits} commits: none shared one");
}

#[tokio::test]
async fn the_pool_never_runs_more_jobs_at_once_than_worker_concurrency() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "3").env("JOB_CLAIM_BATCH", "2").start().await;
    let pool = db.pool().await;
    // Queued before the claim streams see them: every claim finds more than its batch.
    let stored: i64 = sqlx::query_scalar(
        "WITH i AS (INSERT INTO jobs (id, tenant, kind, payload) \
           SELECT gen_random_uuid(), 'alice', 'sleep', '{\"ms\": 150}' FROM generate_series(1, 24) RETURNING 1) \
         SELECT count(*) FROM i",
    )
    .fetch_one(&pool)
    .await
    .expect("seed");
    assert_eq!(stored, 24);
    sqlx::query("SELECT pg_notify('ballast_jobs', '')").execute(&pool).await.expect("notify");
    let deadline = std::time::Instant::now() + T;
    let mut most = 0;
    loop {
        let (running, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'succeeded') FROM jobs",
        )
        .fetch_one(&pool)
        .await
        .expect("count");
        most = most.max(running);
        assert!(running <= 3, "{running} jobs running at once with WORKER_CONCURRENCY=3");
        if done == 24 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {done} of 24 finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most, 3, "the pool filled its slots");
    let busy = metric_sum(&app.metrics().await, "worker_pool_busy", &[]);
    assert_eq!(busy, 0.0);
}

#[tokio::test]
async fn heartbeats_and_releases_skip_rows_a_completion_holds_instead_of_deadlocking_with_it() {
    let db = TestDb::create(&admin_url()).await;
    let _app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await; // migrates
    let pool = db.pool().await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant, kind, status, attempts, locked_by, locked_until) \
         SELECT gen_random_uuid(), 'alice', 'noop', 'running', 1, 'w1', now() + interval '1 minute' \
         FROM generate_series(1, 2) RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .expect("seed");
    // A batched completion (or anything else) holds the first row and has not committed.
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE").bind(ids[0]).execute(&mut *holder).await.expect("lock");

    // Waiting here is what deadlocked against completions locking the same rows in another order.
    let beat =
        tokio::time::timeout(Duration::from_secs(5), queue::heartbeat(&pool, "w1", &ids, Duration::from_secs(600)))
            .await
            .expect("the heartbeat waited for a locked row")
            .expect("heartbeat");
    assert!(beat.is_empty(), "no cancellations requested");
    let renewed: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE locked_until > now() + interval '5 minutes' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("leases");
    assert_eq!(renewed, vec![ids[1]], "the free row renewed, the held one skipped");

    let released = tokio::time::timeout(Duration::from_secs(5), queue::release(&pool, "w1", &ids))
        .await
        .expect("the release waited for a locked row")
        .expect("release");
    assert_eq!(released, 1);
    holder.rollback().await.expect("rollback");
    let states: Vec<String> = sqlx::query_scalar("SELECT status FROM jobs ORDER BY array_position($1::uuid[], id)")
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .expect("states");
    assert_eq!(states, vec!["running", "queued"], "the held row is left to its holder; the next beat gets it");
}

#[tokio::test]
async fn one_tenant_never_sees_another_tenants_jobs() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let alice = app.token("alice", Some("acme")).await;
    let alice_colleague = app.token("carol", Some("acme")).await;
    let bob = app.token("bob", None).await;
    let (_, job) = app.post_job(&alice, json!({"kind": "noop", "payload": {}})).await;
    let id = job["id"].as_str().expect("id");

    assert_eq!(app.get_job(&alice_colleague, id).await.0, 200, "same org, same tenant");
    assert_eq!(app.get_job(&bob, id).await.0, 404);
    let cancel =
        app.client.post(app.url(&format!("/api/v1/jobs/{id}/cancel"))).bearer_auth(&bob).send().await.expect("cancel");
    assert_eq!(cancel.status(), 404);
    let list: serde_json::Value = app
        .client
        .get(app.url("/api/v1/jobs"))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(app.get_job(&alice, "not-a-uuid").await.0, 404);
}

#[tokio::test]
async fn pagination_is_stable_while_new_jobs_arrive() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let token = app.token("alice", None).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        let (_, j) = app.post_job(&token, json!({"kind": "noop", "payload": {}})).await;
        created.push(j["id"].as_str().expect("id").to_string());
    }
    let page = |cursor: Option<String>| {
        let url = match cursor {
            Some(c) => app.url(&format!("/api/v1/jobs?limit=2&kind=noop&cursor={c}")),
            None => app.url("/api/v1/jobs?limit=2&kind=noop"),
        };
        let req = app.client.get(url).bearer_auth(token.clone());
        async move { req.send().await.expect("list").json::<serde_json::Value>().await.expect("json") }
    };
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut first = true;
    loop {
        let p = page(cursor.clone()).await;
        for item in p["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        if first {
            // New jobs land on the first page's side of the cursor: later pages are unaffected.
            for _ in 0..3 {
                app.post_job(&token, json!({"kind": "noop", "payload": {}})).await;
            }
            first = false;
        }
        match p["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "newest first, no duplicates, none skipped");
    let resp = app.client.get(app.url("/api/v1/jobs?limit=0")).bearer_auth(&token).send().await.expect("list");
    assert_eq!(resp.status(), 400);
    let resp = app.client.get(app.url("/api/v1/jobs?status=lost")).bearer_auth(&token).send().await.expect("list");
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn failed_attempts_retry_with_backoff_then_fail_after_max_attempts() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("JOB_POLL_INTERVAL_MS", "100").start().await;
    let token = app.token("alice", None).await;
    let (_, flaky) =
        app.post_job(&token, json!({"kind": "noop", "payload": {"fail_times": 1}, "max_attempts": 3})).await;
    let (_, doomed) =
        app.post_job(&token, json!({"kind": "noop", "payload": {"fail_times": 9}, "max_attempts": 2})).await;

    let flaky = app.wait_job(&token, flaky["id"].as_str().expect("id"), T, |j| j["status"] == "succeeded").await;
    assert_eq!(flaky["attempts"], 2);
    let doomed = app.wait_job(&token, doomed["id"].as_str().expect("id"), T, |j| j["status"] == "failed").await;
    assert_eq!(doomed["attempts"], 2);
    assert!(doomed["last_error"].as_str().unwrap_or_default().contains("failing attempt 2"), "{doomed}");
    let m = app.metrics().await;
    assert!(metric_sum(&m, "jobs_finished_total", &[("outcome", "retried")]) >= 2.0, "{m}");
    assert!(metric_sum(&m, "jobs_finished_total", &[("outcome", "failed")]) >= 1.0);
}

#[tokio::test]
async fn a_panicking_handler_fails_its_attempt_and_the_worker_survives() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "1").start().await;
    let token = app.token("alice", None).await;
    let (_, bad) = app.post_job(&token, json!({"kind": "noop", "payload": {"panic": true}, "max_attempts": 1})).await;
    let bad = app.wait_job(&token, bad["id"].as_str().expect("id"), T, |j| j["status"] == "failed").await;
    assert_eq!(bad["last_error"], "the handler panicked");
    let (_, good) = app.post_job(&token, json!({"kind": "noop", "payload": {}})).await;
    app.wait_job(&token, good["id"].as_str().expect("id"), T, |j| j["status"] == "succeeded").await;
}

#[tokio::test]
async fn cancelling_works_for_queued_and_running_jobs_and_finished_jobs_can_be_deleted() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;
    let token = app.token("alice", None).await;
    let cancel = |id: String| {
        let req = app.client.post(app.url(&format!("/api/v1/jobs/{id}/cancel"))).bearer_auth(token.clone());
        async move {
            let r = req.send().await.expect("cancel");
            r.status().as_u16()
        }
    };
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (_, queued) = app.post_job(&token, json!({"kind": "noop", "payload": {}, "run_at": later})).await;
    let queued_id = queued["id"].as_str().expect("id").to_string();
    assert_eq!(cancel(queued_id.clone()).await, 200);
    assert_eq!(app.get_job(&token, &queued_id).await.1["status"], "cancelled");
    assert_eq!(cancel(queued_id.clone()).await, 409, "already ended");

    let (_, long) = app.post_job(&token, json!({"kind": "sleep", "payload": {"ms": 60000}})).await;
    let long_id = long["id"].as_str().expect("id").to_string();
    app.wait_job(&token, &long_id, T, |j| j["status"] == "running").await;
    let del = app
        .client
        .delete(app.url(&format!("/api/v1/jobs/{long_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(del.status(), 409, "running jobs are not deleted");
    assert_eq!(cancel(long_id.clone()).await, 202);
    let done = app.wait_job(&token, &long_id, Duration::from_secs(5), |j| j["status"] == "cancelled").await;
    assert_eq!(done["cancel_requested"], true);

    let del = app
        .client
        .delete(app.url(&format!("/api/v1/jobs/{long_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(del.status(), 204);
    assert_eq!(app.get_job(&token, &long_id).await.0, 404);
}

#[tokio::test]
async fn claiming_reads_the_partial_queue_index_not_finished_jobs() {
    let db = TestDb::create(&admin_url()).await;
    let _app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let pool = db.pool().await;
    seed_jobs(&pool, 20000, "succeeded").await;
    seed_jobs(&pool, 50, "queued").await;
    sqlx::query("ANALYZE jobs").execute(&pool).await.expect("analyze");
    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now() \
         ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&pool)
    .await
    .expect("explain");
    let plan = plan.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    println!("{plan}");
    assert!(plan.contains("jobs_claim_idx"), "claim must use the partial index:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test]
async fn batched_claims_and_completions_find_rows_by_primary_key_whatever_the_statistics_say() {
    let db = TestDb::create(&admin_url()).await;
    let _app = Spawn::serve(&db).env("WORKER_CONCURRENCY", "0").start().await;
    let pool = db.pool().await;
    // Statistics taken at a quiet moment: many queued and finished jobs, none running. With
    // them, `id IN (subquery)` planned as a hash join over a sequential scan of the table, and
    // a completion testing `status = 'running'` read every running job through the lease index.
    seed_jobs(&pool, 20000, "succeeded").await;
    seed_jobs(&pool, 20000, "queued").await;
    sqlx::query("ANALYZE jobs").execute(&pool).await.expect("analyze");
    // The plan a long-lived connection ends up with once Postgres caches a generic one.
    let mut conn = pool.acquire().await.expect("connection");
    for sql in [
        "SET plan_cache_mode = force_generic_plan".to_string(),
        format!("PREPARE claim(text, int8, float8) AS {}", queue::CLAIM_SQL),
        format!("PREPARE complete(uuid[], jsonb, text) AS {}", queue::COMPLETE_SQL),
    ] {
        sqlx::raw_sql(&sql).execute(&mut *conn).await.expect("prepare");
    }
    for (name, call) in [("claim", "EXECUTE claim('w', 256, 30)"), ("complete", "EXECUTE complete('{}', '{}', 'w')")] {
        let plan: Vec<String> =
            sqlx::query_scalar(&format!("EXPLAIN {call}")).fetch_all(&mut *conn).await.expect("explain");
        let plan = plan.join("\n");
        assert!(plan.contains("jobs_pkey"), "{name} must find its rows by primary key:\n{plan}");
        assert!(!plan.contains("Seq Scan") && !plan.contains("jobs_lease_idx"), "{name}:\n{plan}");
    }

    // What the completion relies on: a lease exists only while a job runs.
    let err =
        sqlx::query("UPDATE jobs SET locked_by = 'w' WHERE id = (SELECT id FROM jobs WHERE status = 'queued' LIMIT 1)")
            .execute(&pool)
            .await
            .expect_err("a queued job with a lease must be refused");
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("23514"), "{err}");
}

#[tokio::test]
async fn completions_look_rows_up_by_key_whatever_the_table_size_and_its_statistics() {
    let db = TestDb::create(&admin_url()).await;
    // Migrated by the CLI, with no app running: the scan counter below sees only this test.
    let (code, _, err) = run_cli(&["migrate", "up"], &[("DATABASE_URL", db.url.as_str())]).await;
    assert_eq!(code, 0, "{err}");
    let admin = db.pool().await;
    // One connection, like a worker's completer: whatever it caches, it keeps.
    let worker = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&db.url).await.expect("connect");
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (id, tenant, kind, status, attempts, locked_by) \
         SELECT gen_random_uuid(), 't', 'noop', 'running', 1, 'w' FROM generate_series(1, 3) RETURNING id",
    )
    .fetch_all(&admin)
    .await
    .expect("seed");
    let done: Vec<(uuid::Uuid, serde_json::Value)> = ids.iter().map(|id| (*id, json!({}))).collect();
    // More calls than Postgres needs before it settles on a cached generic plan (5).
    for _ in 0..8 {
        queue::complete_many(&worker, "w", &done).await.expect("complete");
    }
    // The table grows. At 40 000 rows (616 pages) one scan of it and 300 key lookups cost the
    // planner the same (1 317 vs 1 304-1 316, depending on ANALYZE's sample): the plan was a
    // coin toss there, and the test failed 3 times in 20. Three times that size is past the
    // crossover, where scanning the table would be the bug this test is about.
    seed_jobs(&admin, 120_000, "succeeded").await;
    let seq_scans = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()").execute(&worker).await.expect("flush");
        sqlx::query("SELECT 1").execute(&worker).await.expect("end of transaction flushes");
        let n: i64 = sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'jobs'")
            .fetch_one(&admin)
            .await
            .expect("stats");
        n
    };
    let before = seq_scans().await;
    for _ in 0..5 {
        queue::complete_many(&worker, "w", &done).await.expect("complete");
    }
    assert_eq!(seq_scans().await, before, "a completion scanned the whole table");

    // Statistics that say no job holds a lease, and a full batch: a join filtered on
    // locked_by planned one sequential scan here instead of 300 key lookups.
    sqlx::query("ANALYZE jobs").execute(&admin).await.expect("analyze");
    let mut batch = done.clone();
    batch.extend((0..297).map(|_| (uuid::Uuid::now_v7(), json!({"n": 1}))));
    let before = seq_scans().await;
    queue::complete_many(&worker, "w", &batch).await.expect("complete");
    assert_eq!(seq_scans().await, before, "a full batch scanned the whole table");

    // Each job gets its own result.
    sqlx::query("UPDATE jobs SET status = 'running', locked_by = 'w' WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&admin)
        .await
        .expect("re-lease");
    let own: Vec<(uuid::Uuid, serde_json::Value)> = ids.iter().map(|id| (*id, json!({ "id": id }))).collect();
    assert_eq!(queue::complete_many(&worker, "w", &own).await.expect("complete"), 3);
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE id = ANY($1) AND (result->>'id')::uuid IS DISTINCT FROM id",
    )
    .bind(&ids)
    .fetch_one(&admin)
    .await
    .expect("results");
    assert_eq!(mismatched, 0);
}

#[tokio::test]
async fn retention_removes_only_jobs_that_finished_before_the_cutoff() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db)
        .env("WORKER_CONCURRENCY", "0")
        .env("JOB_RETENTION", "10m")
        .env("JOB_MAINTENANCE_INTERVAL_SECS", "1")
        .start()
        .await;
    let pool = db.pool().await;
    let hour_ago = || {
        let t = chrono::Utc::now() - chrono::Duration::hours(1);
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, t.timestamp() as u64, 0))
    };
    // (name, id, status, finished minutes ago): ids made an hour ago say "created an hour ago".
    let rows = [
        ("old-succeeded", hour_ago(), "succeeded", Some(60)),
        ("old-failed", hour_ago(), "failed", Some(60)),
        ("old-cancelled", hour_ago(), "cancelled", Some(60)),
        ("old-but-just-finished", hour_ago(), "succeeded", Some(0)),
        ("old-still-queued", hour_ago(), "queued", None),
        ("recent-succeeded", uuid::Uuid::now_v7(), "succeeded", Some(0)),
    ];
    // One transaction, so a maintenance pass sees all of them or none.
    let mut tx = pool.begin().await.expect("begin");
    for (name, id, status, finished_mins_ago) in &rows {
        sqlx::query(
            "INSERT INTO jobs (id, tenant, kind, status, run_at, finished_at, last_error) \
             VALUES ($1, 't', 'noop', $2, now() + interval '1 day', now() - make_interval(mins => $3), $4)",
        )
        .bind(id)
        .bind(status)
        .bind(finished_mins_ago)
        .bind(name)
        .execute(&mut *tx)
        .await
        .expect("seed");
    }
    tx.commit().await.expect("commit");

    wait_db(&pool, "SELECT count(*) = 3 FROM jobs", Duration::from_secs(10)).await;
    let mut left: Vec<String> =
        sqlx::query_scalar("SELECT last_error FROM jobs").fetch_all(&pool).await.expect("remaining");
    left.sort();
    assert_eq!(left, ["old-but-just-finished", "old-still-queued", "recent-succeeded"]);
    let logged =
        app.logs.wait_for(T, |v| v["message"].as_str().is_some_and(|m| m.starts_with("job maintenance"))).await;
    assert_eq!(logged["deleted"], 3, "{logged}");
}
