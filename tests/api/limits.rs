//! The edge limits of DESIGN §4.5/§4.6 against the real binary: body size (also without a
//! Content-Length), JSON errors, content type, slowloris, the request deadline and load
//! shedding. jobs.rs already covers the plain 413/400/415 statuses; these add what they miss.
//!
//! "A panic becomes a 500 problem" is a unit test in src/http/middleware/observe.rs: no
//! production route can panic, and adding one for this test is not worth it.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const T: Duration = Duration::from_secs(20);

/// These tests send bursts and stalled requests from one IP: keep rate limiting out of them.
fn spawn(db: &TestDb) -> Spawn {
    Spawn::serve(db).env("RATE_LIMIT_ENABLED", "false").env("WORKER_CONCURRENCY", "0")
}

async fn problem(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.expect("problem body");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["type"].is_string() && body["title"].is_string() && body["trace_id"].is_string(), "{body}");
    body
}

async fn job_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&db.pool().await).await.expect("count")
}

/// Writes the head of a `POST /api/v1/jobs` announcing `length` body bytes, and `first` of them.
async fn start_post(app: &TestApp, token: &str, length: usize, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(app.http.expect("public listener")).await.expect("connect");
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(first).await.expect("write body start");
    stream
}

/// Reads one HTTP/1.1 response (status, lower-cased head, body) from a raw connection.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let split = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(n > 0, "connection closed before a response: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    while buf.len() < split + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, head, String::from_utf8_lossy(&buf[split..split + length]).to_string())
}

/// How long until the server closes `stream` (EOF or reset), if it does within `limit`.
/// Anything the server sends first (hyper answers a header timeout with a bare 408) is skipped.
async fn closed_after(mut stream: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn json_bodies_over_the_limit_get_413_even_when_streamed_without_a_content_length() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).env("MAX_JSON_BODY_BYTES", "1KiB").start().await;
    let token = app.token("alice", None).await;
    let url = app.url("/api/v1/jobs");

    // Just under the limit (whitespace padding) is accepted: the limit is the limit.
    let padded = format!("{{\"kind\":\"noop\",\"payload\":{{}}{}}}", " ".repeat(990));
    assert!(padded.len() < 1024);
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);

    // Chunked transfer: no Content-Length to refuse up front, the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        std::iter::once(Ok(b"{\"kind\":\"noop\",\"payload\":{\"x\":\"".to_vec()))
            .chain((0..4).map(|_| Ok(vec![b'a'; 512])))
            .chain(std::iter::once(Ok(b"\"}}".to_vec())))
            .collect();
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("POST chunked");
    let body = problem(resp, 413).await;
    assert_eq!(body["instance"], "/api/v1/jobs");
    assert!(body["detail"].as_str().unwrap_or_default().contains("MAX_JSON_BODY_BYTES"), "{body}");
    assert_eq!(job_count(&db).await, 1, "only the body under the limit created a job");
}

#[tokio::test]
async fn broken_json_is_a_400_with_the_parser_reason_and_a_wrong_shape_a_422() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).start().await;
    let token = app.token("alice", None).await;
    let post = |body: &'static str| {
        app.client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let body = problem(post("{\"kind\": \"noop\", \"payload\": {},}").await.expect("POST"), 400).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("trailing comma") && detail.contains("line 1 column"), "serde's reason: {detail}");
    let body = problem(post("{\"kind\": 5, \"payload\": {}}").await.expect("POST"), 422).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("invalid type: integer `5`, expected a string"), "{detail}");
    let body =
        problem(post("{\"kind\": \"noop\", \"payload\": {}, \"run_at\": \"soon\"}").await.expect("POST"), 422).await;
    assert!(body["detail"].as_str().unwrap_or_default().contains("run_at"), "the failing field is named: {body}");
    assert_eq!(job_count(&db).await, 0);
}

#[tokio::test]
async fn bodies_without_a_json_content_type_get_415_problems() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).start().await;
    let token = app.token("alice", None).await;
    let url = app.url("/api/v1/jobs");
    let body = "{\"kind\":\"noop\",\"payload\":{}}";

    let resp = app.client.post(&url).bearer_auth(&token).body(body).send().await.expect("POST");
    let problem_body = problem(resp, 415).await;
    assert!(problem_body["detail"].as_str().unwrap_or_default().contains("application/json"), "{problem_body}");
    for content_type in ["application/x-www-form-urlencoded", "text/json; charset=utf-8", "multipart/form-data"] {
        let resp =
            app.client.post(&url).bearer_auth(&token).header("content-type", content_type).body(body).send().await;
        problem(resp.expect("POST"), 415).await;
    }
    // Structured-syntax JSON types are JSON.
    let resp = app
        .client
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/vnd.ballast+json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn clients_that_stall_before_finishing_their_headers_are_disconnected() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).env("HEADER_READ_TIMEOUT_SECS", "1").start().await;
    let addr = app.http.expect("public listener");
    let open = |first: &'static [u8]| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(first).await.expect("write");
        s
    };
    // Half a request line + headers; nothing at all; the start of an HTTP/2 preface.
    let partial_headers = open(b"GET /health/live HTTP/1.1\r\nHost: test\r\nX-Slow: ").await;
    let silent = open(b"").await;
    let partial_preface = open(b"PRI * HTTP/2.0\r\n").await;
    let limit = Duration::from_secs(10);
    let stalls = async {
        tokio::join!(
            closed_after(partial_headers, limit),
            closed_after(silent, limit),
            closed_after(partial_preface, limit)
        )
    };

    // Meanwhile the server keeps serving everyone else (fresh connections: an idle pooled one
    // would itself be closed after the 1 s timeout).
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let served = async {
        for _ in 0..5 {
            let started = Instant::now();
            let resp = client.get(app.url("/health/live")).send().await.expect("GET");
            assert_eq!(resp.status(), 200);
            assert!(started.elapsed() < Duration::from_secs(2), "served promptly");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let ((headers, silent, preface), ()) = tokio::join!(stalls, served);
    for (what, closed) in [("partial headers", headers), ("silent", silent), ("partial h2 preface", preface)] {
        let after = closed.unwrap_or_else(|| panic!("{what}: connection still open after {limit:?}"));
        assert!(after >= Duration::from_millis(900), "{what}: closed after {after:?}, before the timeout");
    }
}

#[tokio::test]
async fn a_body_trickling_past_the_request_deadline_gets_a_408_problem() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).env("REQUEST_TIMEOUT_SECS", "1").start().await;
    let token = app.token("alice", None).await;
    let body = b"{\"kind\":\"noop\",\"payload\":{}}";
    let stream = start_post(&app, &token, body.len(), &body[..1]).await;
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    // One byte every 200 ms: progress, but the whole body would take ~6 s.
    let trickle = tokio::spawn(async move {
        for b in &body[1..] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });

    let (status, head, body) = tokio::time::timeout(T, read_response(&mut read)).await.expect("a response in time");
    let elapsed = started.elapsed();
    trickle.abort();
    assert_eq!(status, 408, "{head}{body}");
    assert!(head.contains("content-type: application/problem+json"), "{head}");
    let problem: Value = serde_json::from_str(&body).expect("problem json");
    assert_eq!(problem["status"], 408);
    assert_eq!(problem["instance"], "/api/v1/jobs");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5), "after {elapsed:?}");
    assert_eq!(job_count(&db).await, 0);
}

#[tokio::test]
async fn at_capacity_a_request_is_shed_at_once_with_503_and_retry_after() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).env("MAX_CONCURRENT_REQUESTS", "1").start().await;
    let token = app.token("alice", None).await;

    // Occupies the only slot: its handler waits for a body that does not come.
    let held = start_post(&app, &token, 64, b"{\"kind\":").await;
    let deadline = Instant::now() + T;
    while metric_sum(&app.metrics().await, "http_requests_in_flight", &[]) < 1.0 {
        assert!(Instant::now() < deadline, "the held request never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let resp = app.client.get(app.url("/api/v1/jobs")).bearer_auth(&token).send().await.expect("GET");
    let elapsed = started.elapsed();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = problem(resp, 503).await;
    assert!(retry_after.and_then(|v| v.parse::<u64>().ok()).is_some_and(|s| s >= 1), "Retry-After in seconds");
    assert_eq!(body["instance"], "/api/v1/jobs");
    assert!(elapsed < Duration::from_secs(2), "shed at once, not queued: {elapsed:?}");

    // The slot frees when the held request ends.
    drop(held);
    let deadline = Instant::now() + T;
    loop {
        let resp = app.client.get(app.url("/api/v1/jobs")).bearer_auth(&token).send().await.expect("GET");
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 503);
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
