use crate::helpers::*;

#[tokio::test]
async fn unknown_routes_and_methods_get_problem_json_with_trace_ids() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;

    let resp = app.get("/nope?x=1").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let trace = resp.headers()["x-trace-id"].to_str().expect("ascii").to_string();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], 404);
    assert_eq!(body["instance"], "/nope");
    assert_eq!(body["trace_id"], trace);
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:")) && body["title"].is_string());

    let resp = app.client.delete(app.url("/health/live")).send().await.expect("DELETE");
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // The API's own routes answer the same way: an unknown path under the prefix, a method
    // a route does not have.
    let resp = app.client.get(app.url("/api/v1/nope")).send().await.expect("GET");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = app.client.put(app.url("/api/v1/jobs")).send().await.expect("PUT");
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn trace_context_and_request_id_are_echoed_and_land_in_the_access_log() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = app
        .client
        .get(app.url("/health/ready?access_token=sup3rs3cret&verbose=1"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-abc-123")
        .header("authorization", "Bearer not-a-real-token-but-secret")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    assert_eq!(resp.headers()["x-trace-id"], trace);
    let tp = resp.headers()["traceparent"].to_str().expect("ascii");
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");

    // Probe routes log at debug only; an API-side 404 logs at info.
    let resp = app
        .client
        .get(app.url("/missing?password=hunter22&page=2"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("x-request-id", "req-def-456")
        .header("cookie", "session=cookie-secret")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    let line = app.logs.wait_for(std::time::Duration::from_secs(5), |v| v["request_id"] == "req-def-456").await;
    assert_eq!(line["trace_id"], trace);
    assert_eq!(line["route"], "unmatched");
    assert_eq!(line["status"], 404);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["duration_ms"].is_number() && line["bytes_out"].as_u64().is_some_and(|b| b > 0), "{line}");
    let all = app.logs.lines().join("\n");
    for secret in ["hunter22", "sup3rs3cret", "cookie-secret", "not-a-real-token"] {
        assert!(!all.contains(secret), "{secret} leaked into the log:\n{all}");
    }
    assert!(all.contains("password=[REDACTED]"), "{all}");
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_not_logged() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;
    let resp = app.client.get(app.url("/x")).header("x-request-id", "evil\"id{}").send().await.expect("GET");
    let rid = resp.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert_ne!(rid, "evil\"id{}");
    assert!(!rid.is_empty());
}

#[tokio::test]
async fn api_responses_carry_the_security_headers() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).env("HSTS_ENABLED", "true").start().await;
    let resp = app.get("/health").await;
    let h = resp.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["strict-transport-security"].to_str().expect("ascii").contains("max-age="));
}

#[tokio::test]
async fn metrics_expose_the_contracted_series_with_route_templates() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;
    app.get("/health/ready").await;
    app.get("/health/ready").await;
    app.get("/does/not/exist").await;
    for invented in ["FROBNICATE", "X-CARDINALITY-1", "X-CARDINALITY-2"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).expect("token");
        let resp = app.client.request(method, app.url("/health/live")).send().await.expect("request");
        assert_eq!(resp.status(), 405, "{invented}");
    }
    let text = app.metrics().await;
    assert_eq!(
        metric_sum(&text, "http_requests_total", &[("route", "/health/ready"), ("status", "200")]),
        2.0,
        "counted through the cached handles:\n{text}"
    );
    assert!(text.contains("http_requests_total{method=\"other\",route=\"/health/live\",status=\"405\"} 3"), "{text}");
    assert!(!text.contains("FROBNICATE") && !text.contains("X-CARDINALITY"), "invented methods never become labels");
    for series in [
        "http_requests_total{method=\"GET\",route=\"/health/ready\",status=\"200\"}",
        "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
        "http_request_duration_seconds_bucket{method=\"GET\",route=\"/health/ready\",status=\"200\",le=\"0.005\"}",
        "http_requests_in_flight",
        "http_response_size_bytes_bucket",
        "db_pool_connections{state=\"idle\"}",
        "db_pool_connections{state=\"in_use\"}",
        "db_pool_connections{state=\"max\"}",
        "redis_pool_connections{state=\"max\"}",
        "app_draining 0",
        "app_build_info{version=",
        "app_start_time_seconds",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "jobs_queue_depth{status=\"queued\"}",
        "jobs_oldest_queued_age_seconds",
        "worker_pool_size",
        "worker_pool_busy",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(!text.contains("/does/not/exist"), "raw paths never become labels");
}

#[tokio::test]
async fn responses_are_compressed_only_for_clients_that_ask_and_only_when_large() {
    let db = TestDb::create(&admin_url()).await;
    let app = Spawn::serve(&db).start().await;

    let plain = app.get("/openapi.json").await;
    assert!(plain.headers().get("content-encoding").is_none(), "no Accept-Encoding, no compression");
    let plain = plain.bytes().await.expect("body");
    assert!(plain.len() > 1024, "the document is large enough to compress ({} bytes)", plain.len());

    let gz = app.client.get(app.url("/openapi.json")).header("accept-encoding", "gzip").send().await.expect("GET");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(gz.headers()["x-content-type-options"], "nosniff", "security headers survive compression");
    let gz = gz.bytes().await.expect("body");
    assert!(gz.len() < plain.len(), "gzip {} < plain {}", gz.len(), plain.len());
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).expect("valid gzip");
    assert_eq!(unzipped, plain, "the same document once decompressed");

    let small = app.client.get(app.url("/health/live")).header("accept-encoding", "gzip").send().await.expect("GET");
    assert!(small.headers().get("content-encoding").is_none(), "bodies under 1 KiB go out as they are");
    assert_eq!(small.text().await.expect("body"), r#"{"status":"pass"}"#);
}
