use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn sigterm_flips_readiness_first_then_exits_zero_with_a_summary() {
    let db = TestDb::create(&admin_url()).await;
    let mut app = Spawn::serve(&db).env("SHUTDOWN_READINESS_DELAY_SECS", "2").start().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);

    app.signal(libc::SIGTERM);
    app.wait_status(&app.url("/health/ready"), 503, Duration::from_secs(1)).await;
    assert_eq!(app.get("/health").await.status(), 503);
    assert_eq!(app.get("/health/live").await.status(), 200, "alive while draining");
    assert!(app.metrics().await.contains("app_draining 1"));

    let status = app.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    let summary = app.logs.wait_for(Duration::from_secs(1), |v| v["message"] == "shutdown complete").await;
    assert!(summary["requests_drained"].is_number() && summary["jobs_released"].is_number(), "{summary}");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_a_non_zero_code() {
    let db = TestDb::create(&admin_url()).await;
    let mut app = Spawn::serve(&db).env("SHUTDOWN_READINESS_DELAY_SECS", "20").start().await;
    app.signal(libc::SIGTERM);
    app.logs.wait_for(Duration::from_secs(5), |v| v["message"] == "shutdown: draining").await;
    let started = Instant::now();
    app.signal(libc::SIGINT);
    let status = app.wait_exit(Duration::from_secs(5)).await;
    assert_ne!(status.code(), Some(0));
    println!("second signal → exit in {:?}", started.elapsed());
}

#[tokio::test]
async fn sigterm_late_in_start_up_is_kept_and_drains_once_serving_begins() {
    let db = TestDb::create(&admin_url()).await;
    // A key server that never answers holds start-up for its 2 s grace after the migrations.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let jwks = format!("http://{}/jwks.json", hanging.local_addr().expect("addr"));
    let mut app = Spawn::serve(&db).env("JWT_JWKS_URL", &jwks).spawn();
    app.logs.wait_for(Duration::from_secs(30), |v| v["message"] == "migrations applied").await;
    app.signal(libc::SIGTERM);

    let status = app.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", app.logs.lines().join("\n"));
    let summary = app.logs.wait_for(Duration::from_secs(1), |v| v["message"] == "shutdown complete").await;
    assert_eq!(summary["signal"], "SIGTERM", "{summary}");
}

#[tokio::test]
async fn sigterm_during_a_slow_request_lets_it_complete_and_exits_zero() {
    let db = TestDb::create(&admin_url()).await;
    let mut app = Spawn::serve(&db).start().await;
    let token = app.token("alice", None).await;

    // The client trickles its body over ~1.5 s; SIGTERM arrives in the middle.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(8);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let url = app.url("/api/v1/jobs");
    let client = app.client.clone();
    let request = tokio::spawn(async move {
        client.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await
    });
    tx.send(Ok(br#"{"kind":"noop","#.to_vec())).await.expect("send");
    // The server has the request once its access-free path is in flight: wait for the gauge.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !app.metrics().await.contains("http_requests_in_flight 1") {
        assert!(Instant::now() < deadline, "request never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.signal(libc::SIGTERM);
    app.logs.wait_for(Duration::from_secs(5), |v| v["message"] == "stopped accepting; draining connections").await;
    tokio::time::sleep(Duration::from_millis(300)).await; // keep the request slow on purpose
    tx.send(Ok(br#""payload":{}}"#.to_vec())).await.expect("send");
    drop(tx);

    let resp = request.await.expect("join").expect("the in-flight request completes");
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let status = app.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
    let summary = app.logs.wait_for(Duration::from_secs(1), |v| v["message"] == "shutdown complete").await;
    assert!(summary["requests_drained"].as_u64().unwrap_or(0) >= 1, "{summary}");
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
