//! Files API and the file job kinds, against local storage (a temp dir per test) and against
//! a real S3-compatible server (moto).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const T: Duration = Duration::from_secs(30);
const MIB: u64 = 1024 * 1024;
const LIMIT: u64 = 100 * MIB;

/// A server on local storage in `dir`. The rate limiter is not what these tests exercise.
async fn spawn(db: &TestDb, dir: &Path) -> TestApp {
    Spawn::serve(db)
        .env("STORAGE_URL", format!("file://{}", dir.display()))
        .env("RATE_LIMIT_ENABLED", "false")
        .start()
        .await
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Every file under `dir`, relative, except the health probe.
fn stored_objects(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.retain(|p| p != ".ballast-probe");
    out.sort();
    out
}

/// Chunk `i` of a generated body: a random-looking block stamped with its index, so a
/// dropped, repeated or reordered chunk changes the hash.
struct Generated {
    block: Bytes,
}

impl Generated {
    fn new() -> Generated {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = Vec::with_capacity(256 * 1024);
        while block.len() < 256 * 1024 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block.extend_from_slice(&x.to_le_bytes());
        }
        Generated { block: block.into() }
    }

    fn chunk(&self, i: u64, total: u64) -> Bytes {
        let size = self.block.len() as u64;
        let len = (total - i * size).min(size) as usize;
        let mut c = self.block[..len].to_vec();
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(len);
        c[..n].copy_from_slice(&stamp[..n]);
        c.into()
    }

    fn chunks(total: u64) -> u64 {
        total.div_ceil(256 * 1024)
    }

    fn sha256(&self, total: u64) -> String {
        let mut h = Sha256::new();
        for i in 0..Self::chunks(total) {
            h.update(self.chunk(i, total));
        }
        hex::encode(h.finalize())
    }

    /// A streamed request body: no Content-Length, never more than a chunk in memory.
    fn body(self: &Arc<Self>, total: u64) -> reqwest::Body {
        let this = self.clone();
        let stream =
            futures::stream::iter(0..Self::chunks(total)).map(move |i| Ok::<_, std::io::Error>(this.chunk(i, total)));
        reqwest::Body::wrap_stream(stream)
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Samples a process's RSS every 5 ms until stopped; `peak()` is the highest seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: i32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        RssSampler { stop, peak, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

impl TestApp {
    async fn upload(
        &self,
        token: &str,
        query: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(&format!("/api/v1/files{query}"))).bearer_auth(token).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send().await.expect("POST file")
    }

    async fn upload_json(
        &self,
        token: &str,
        query: &str,
        content_type: Option<&str>,
        body: &'static [u8],
    ) -> serde_json::Value {
        let resp = self.upload(token, query, content_type, body).await;
        assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
        resp.json().await.expect("file json")
    }

    async fn file_get(&self, token: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path)).bearer_auth(token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("GET")
    }
}

async fn file_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM files").fetch_one(&db.pool().await).await.expect("count")
}

#[tokio::test]
async fn a_100_mib_upload_and_download_round_trip_in_bounded_server_memory() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;
    let gen = Arc::new(Generated::new());
    let total = LIMIT;
    let expected = gen.sha256(total);
    // Warm the pools and code paths so the baseline is the steady state.
    let warm = app.upload(&token, "", None, gen.body(8 * MIB)).await;
    assert_eq!(warm.status(), 201);
    let pid = app.pid();
    let before = rss_kib(pid);

    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let resp = app.upload(&token, "?name=big.bin", Some("application/octet-stream"), gen.body(total)).await;
    let up = started.elapsed();
    let up_peak = sampler.finish().await;
    assert_eq!(resp.status(), 201);
    let file: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(file["size"], total);
    assert_eq!(file["sha256"], expected.as_str());
    let id = file["id"].as_str().expect("id").to_string();

    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let resp = app.file_get(&token, &format!("/api/v1/files/{id}/content"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], total.to_string().as_str());
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let down = started.elapsed();
    let down_peak = sampler.finish().await;
    assert_eq!(received, total);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    let mb = total as f64 / 1e6;
    let growth = up_peak.max(down_peak).saturating_sub(before);
    println!(
        "100 MiB: upload {:.0} MB/s, download {:.0} MB/s; server RSS {} KiB before, peak +{} KiB upload, +{} KiB download",
        mb / up.as_secs_f64(),
        mb / down.as_secs_f64(),
        before,
        up_peak.saturating_sub(before),
        down_peak.saturating_sub(before),
    );
    assert!(growth < 32 * 1024, "server RSS grew by {growth} KiB while streaming 100 MiB");
}

#[tokio::test]
async fn an_upload_one_byte_over_the_limit_is_refused_and_leaves_nothing_behind() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;
    let gen = Arc::new(Generated::new());

    let resp = app.upload(&token, "?name=huge.bin", None, gen.body(LIMIT + 1)).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = resp.json().await.expect("problem");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("MAX_UPLOAD_BYTES"), "{problem}");
    assert_eq!(file_count(&db).await, 0, "no metadata row");
    assert_eq!(stored_objects(dir.path()), Vec::<String>::new(), "no object or staging file");

    // A declared length over the limit is refused before the body is sent.
    let addr = app.http.expect("listener");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        LIMIT + 1
    );
    tcp.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, tcp.read(&mut buf)).await.expect("answer in time").expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(file_count(&db).await, 0);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;
    let gen = Generated::new();
    // 4 MiB, then the client stalls forever.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..16).map(|i| Ok(gen.chunk(i, 64 * MIB))).collect();
    let stalled = futures::stream::iter(chunks).chain(futures::stream::pending());
    let req = app.client.post(app.url("/api/v1/files")).bearer_auth(&token).body(reqwest::Body::wrap_stream(stalled));
    let upload = tokio::spawn(req.send());

    let deadline = Instant::now() + T;
    while stored_objects(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "the upload never reached storage");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upload.abort();
    let deadline = Instant::now() + T;
    while !stored_objects(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "partial upload left behind: {:?}", stored_objects(dir.path()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(file_count(&db).await, 0);
}

#[tokio::test]
async fn the_limit_is_exact_and_applies_to_multipart_file_parts_too() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Spawn::serve(&db)
        .env("STORAGE_URL", format!("file://{}", dir.path().display()))
        .env("RATE_LIMIT_ENABLED", "false")
        .env("MAX_UPLOAD_BYTES", "1MiB")
        .start()
        .await;
    let token = app.token("alice", None).await;
    let gen = Arc::new(Generated::new());
    assert_eq!(app.upload(&token, "", None, gen.body(MIB)).await.status(), 201, "exactly the limit is accepted");

    let boundary = "limit-test";
    let multipart = |size: u64| {
        let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"big.bin\"\r\n\r\n");
        let tail = format!("\r\n--{boundary}--\r\n");
        let parts = std::iter::once(Bytes::from(head))
            .chain((0..Generated::chunks(size)).map(|i| gen.chunk(i, size)))
            .chain(std::iter::once(Bytes::from(tail)))
            .map(Ok::<_, std::io::Error>)
            .collect::<Vec<_>>();
        reqwest::Body::wrap_stream(futures::stream::iter(parts))
    };
    let ct = format!("multipart/form-data; boundary={boundary}");
    assert_eq!(app.upload(&token, "", Some(&ct), multipart(MIB)).await.status(), 201);
    let resp = app.upload(&token, "", Some(&ct), multipart(MIB + 1)).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(file_count(&db).await, 2);
    assert_eq!(stored_objects(dir.path()).len(), 2, "the refused part left nothing");
}

#[tokio::test]
async fn raw_and_multipart_uploads_keep_their_name_and_content_type() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;

    let resp = app.upload(&token, "?name=notes.txt", Some("text/plain; charset=utf-8"), &b"hello\nworld\n"[..]).await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().expect("ascii").to_string();
    let raw: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(location, format!("/api/v1/files/{}", raw["id"].as_str().expect("id")));
    assert_eq!(raw["name"], "notes.txt");
    assert_eq!(raw["content_type"], "text/plain; charset=utf-8");
    assert_eq!(raw["size"], 12);
    assert_eq!(raw["sha256"], sha256_hex(b"hello\nworld\n").as_str());
    assert!(raw.get("tenant").is_none() && raw.get("object_key").is_none(), "internals stay internal: {raw}");

    let nameless = app.upload_json(&token, "", None, b"\x00\x01").await;
    assert_eq!(nameless["name"], "file");
    assert_eq!(nameless["content_type"], "application/octet-stream");

    let png = b"\x89PNG\r\n\x1a\nnot really a png";
    let boundary = "XyZ-boundary-42";
    let mut form = Vec::new();
    form.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nignored field\r\n").as_bytes(),
    );
    form.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"photo.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    form.extend_from_slice(png);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = app.upload(&token, "", Some(&format!("multipart/form-data; boundary={boundary}")), form).await;
    assert_eq!(resp.status(), 201);
    let part: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(part["name"], "photo.png");
    assert_eq!(part["content_type"], "image/png");
    assert_eq!(part["size"], png.len());
    assert_eq!(part["sha256"], sha256_hex(png).as_str());

    let id = part["id"].as_str().expect("id");
    let content = app.file_get(&token, &format!("/api/v1/files/{id}/content"), &[]).await;
    assert_eq!(content.headers()["content-type"], "image/png");
    assert_eq!(content.bytes().await.expect("bytes").as_ref(), png);
    let meta: serde_json::Value =
        app.file_get(&token, &format!("/api/v1/files/{id}"), &[]).await.json().await.expect("json");
    assert_eq!(meta, part);

    let no_file = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nb\r\n--{boundary}--\r\n");
    let resp = app.upload(&token, "", Some(&format!("multipart/form-data; boundary={boundary}")), no_file).await;
    assert_eq!(resp.status(), 422);
    let resp = app.upload(&token, "", Some("multipart/form-data"), "no boundary").await;
    assert_eq!(resp.status(), 400);
    let resp = app.upload(&token, "", Some("not a type"), "x").await;
    assert_eq!(resp.status(), 400);
    let resp = app.upload(&token, "?colour=blue", None, "x").await;
    assert_eq!(resp.status(), 400);
    let resp = app.client.post(app.url("/api/v1/files")).body("x").send().await.expect("POST");
    assert_eq!(resp.status(), 401);
    assert_eq!(file_count(&db).await, 3);
}

#[tokio::test]
async fn hostile_names_are_stored_sanitised_and_served_with_a_safe_disposition() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    hostile_names(&app).await;
    // Whatever the names, objects live only under generated keys.
    let objects = stored_objects(dir.path());
    assert_eq!(objects.len(), 6);
    for o in objects {
        let (prefix, name) = o.split_once('/').expect("tenant/object");
        assert!(prefix.len() == 32 && prefix.bytes().all(|b| b.is_ascii_hexdigit()), "{o}");
        assert!(name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()), "{o}");
    }
}

/// Six hostile names uploaded and served back: stored sanitised, one safe Content-Disposition.
async fn hostile_names(app: &TestApp) {
    let token = app.token("alice", None).await;
    let long = "n".repeat(10_000);
    let cases: Vec<(String, String)> = vec![
        ("../../etc/passwd".into(), "passwd".into()),
        ("a\u{0}b\r\nSet-Cookie: x=1".into(), "abSet-Cookie: x=1".into()),
        ("\u{1b}[31mred\u{7f}".into(), "[31mred".into()),
        ("résumé 📄 \"final\".pdf".into(), "résumé 📄 \"final\".pdf".into()),
        (long.clone(), "n".repeat(255)),
        ("..".into(), "file".into()),
    ];
    for (raw, stored) in cases {
        let url = reqwest::Url::parse_with_params(&app.url("/api/v1/files"), &[("name", raw.as_str())]).expect("url");
        let resp = app.client.post(url).bearer_auth(&token).body("payload").send().await.expect("POST");
        assert_eq!(resp.status(), 201, "{raw:?}");
        let file: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(file["name"], stored.as_str(), "{raw:?}");
        let id = file["id"].as_str().expect("id");
        let resp = app.file_get(&token, &format!("/api/v1/files/{id}/content"), &[]).await;
        let cd = resp.headers()["content-disposition"].to_str().expect("visible ASCII").to_string();
        let rest = cd.strip_prefix("attachment; filename=\"").unwrap_or_else(|| panic!("{cd}"));
        let (quoted, tail) = rest.split_once('"').unwrap_or_else(|| panic!("{cd}"));
        assert!(!quoted.contains(['\\', '/', '%']), "{cd}");
        let encoded = tail.strip_prefix("; filename*=UTF-8''").unwrap_or_else(|| panic!("one quoted value only: {cd}"));
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"%!#$&+-.^_`|~".contains(&b)), "{cd}");
        assert!(resp.headers().get("set-cookie").is_none());
        assert_eq!(resp.text().await.expect("text"), "payload");
    }
}

#[tokio::test]
async fn ranges_and_conditional_requests_follow_rfc_9110() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    ranges_and_conditionals(&app).await;
}

/// Byte ranges (suffix, open, past the end → 416, ignored forms), ETag / If-None-Match /
/// If-Range, content served as stored, the empty file.
async fn ranges_and_conditionals(app: &TestApp) {
    let token = app.token("alice", None).await;
    let body: &'static [u8] = b"0123456789";
    let file = app.upload_json(&token, "?name=digits.txt", Some("text/plain"), body).await;
    let path = format!("/api/v1/files/{}/content", file["id"].as_str().expect("id"));
    let etag = format!("\"{}\"", sha256_hex(body));

    let full = app.file_get(&token, &path, &[]).await;
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["etag"], etag.as_str());
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-length"], "10");
    assert_eq!(
        full.headers()["content-disposition"],
        "attachment; filename=\"digits.txt\"; filename*=UTF-8''digits.txt"
    );

    for (range, want, content_range) in [
        ("bytes=2-5", "2345", "bytes 2-5/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
        ("bytes=-100", "0123456789", "bytes 0-9/10"),
    ] {
        let resp = app.file_get(&token, &path, &[("range", range)]).await;
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(resp.headers()["content-range"], content_range, "{range}");
        assert_eq!(resp.headers()["content-length"], want.len().to_string().as_str(), "{range}");
        assert_eq!(resp.text().await.expect("text"), want, "{range}");
    }
    for range in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
        let resp = app.file_get(&token, &path, &[("range", range)]).await;
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(resp.headers()["content-range"], "bytes */10");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    for range in ["bytes=5-2", "bytes=0-1,4-5", "lines=1-2"] {
        let resp = app.file_get(&token, &path, &[("range", range)]).await;
        assert_eq!(resp.status(), 200, "ignored: {range}");
        assert_eq!(resp.text().await.expect("text"), "0123456789");
    }

    let resp = app.file_get(&token, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], etag.as_str());
    assert!(resp.bytes().await.expect("body").is_empty());
    let resp = app.file_get(&token, &path, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(resp.status(), 200);
    let resp = app.file_get(&token, &path, &[("range", "bytes=0-1"), ("if-range", "\"stale\"")]).await;
    assert_eq!(resp.status(), 200, "a stale If-Range gets the whole file");
    let resp = app.file_get(&token, &path, &[("range", "bytes=0-1"), ("if-range", &etag)]).await;
    assert_eq!(resp.status(), 206);

    // Content is served as stored even to clients that accept compression.
    let text: &'static [u8] = &[b'a'; 64 * 1024];
    let big = app.upload_json(&token, "", Some("text/plain"), text).await;
    let resp = app
        .file_get(
            &token,
            &format!("/api/v1/files/{}/content", big["id"].as_str().expect("id")),
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert!(resp.headers().get("content-encoding").is_none());
    assert_eq!(resp.headers()["content-length"], "65536");
    assert_eq!(resp.bytes().await.expect("body").len(), 65536);

    let empty = app.upload_json(&token, "", None, b"").await;
    let path = format!("/api/v1/files/{}/content", empty["id"].as_str().expect("id"));
    assert_eq!(app.file_get(&token, &path, &[]).await.status(), 200);
    assert_eq!(app.file_get(&token, &path, &[("range", "bytes=-1")]).await.status(), 416);
}

#[tokio::test]
async fn one_tenant_never_sees_another_tenants_files_and_delete_removes_everything() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let alice = app.token("alice", Some("acme")).await;
    let carol = app.token("carol", Some("acme")).await;
    let bob = app.token("bob", None).await;
    let file = app.upload_json(&alice, "?name=secret.txt", None, b"acme only").await;
    let id = file["id"].as_str().expect("id");
    let meta = format!("/api/v1/files/{id}");
    let content = format!("/api/v1/files/{id}/content");

    assert_eq!(app.file_get(&carol, &meta, &[]).await.status(), 200, "same org, same tenant");
    assert_eq!(app.file_get(&bob, &meta, &[]).await.status(), 404);
    assert_eq!(app.file_get(&bob, &content, &[]).await.status(), 404);
    let del = app.client.delete(app.url(&meta)).bearer_auth(&bob).send().await.expect("DELETE");
    assert_eq!(del.status(), 404);
    let list: serde_json::Value = app.file_get(&bob, "/api/v1/files", &[]).await.json().await.expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(app.file_get(&alice, "/api/v1/files/not-a-uuid", &[]).await.status(), 404);
    assert_eq!(stored_objects(dir.path()).len(), 1);

    let del = app.client.delete(app.url(&meta)).bearer_auth(&carol).send().await.expect("DELETE");
    assert_eq!(del.status(), 204);
    assert_eq!(app.file_get(&alice, &meta, &[]).await.status(), 404);
    assert_eq!(app.file_get(&alice, &content, &[]).await.status(), 404);
    let again = app.client.delete(app.url(&meta)).bearer_auth(&alice).send().await.expect("DELETE");
    assert_eq!(again.status(), 404);
    assert_eq!(file_count(&db).await, 0);
    assert_eq!(stored_objects(dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn the_file_list_pages_newest_first() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(app.upload_json(&token, "", None, b"x").await["id"].as_str().expect("id").to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/files?limit=2&cursor={c}"),
            None => "/api/v1/files?limit=2".to_string(),
        };
        let page: serde_json::Value = app.file_get(&token, &path, &[]).await.json().await.expect("json");
        seen.extend(page["items"].as_array().expect("items").iter().map(|f| f["id"].as_str().expect("id").to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);
    assert_eq!(app.file_get(&token, "/api/v1/files?limit=0", &[]).await.status(), 400);
    assert_eq!(app.file_get(&token, "/api/v1/files?cursor=zzz", &[]).await.status(), 400);
}

#[tokio::test]
async fn file_digest_reports_hash_size_lines_and_the_sniffed_type() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;
    let bob = app.token("bob", None).await;

    let cases: [(&'static [u8], &str, u64); 4] = [
        (b"one\ntwo\nthree", "text/plain", 3),
        (b"{\"a\": [1, 2, 3]}\n", "application/json", 1),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png", 3),
        (b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n", "application/pdf", 2),
    ];
    for (body, sniffed, lines) in cases {
        // Uploaded as octet-stream: the digest looks at the bytes, not at what the client said.
        let file = app.upload_json(&token, "", Some("application/octet-stream"), body).await;
        let (code, job) =
            app.post_job(&token, json!({"kind": "file.digest", "payload": {"file_id": file["id"]}})).await;
        assert_eq!(code, 202, "{job}");
        let id = job["id"].as_str().expect("id");
        let done = app.wait_job(&token, id, T, |j| j["status"] == "succeeded" || j["status"] == "failed").await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let r = &done["result"];
        assert_eq!(r["sha256"], sha256_hex(body).as_str());
        assert_eq!(r["size"], body.len());
        assert_eq!(r["lines"], lines);
        assert_eq!(r["content_type"], sniffed, "{r}");
        assert_eq!(r["file_id"], file["id"]);
    }

    let (code, body) = app.post_job(&token, json!({"kind": "file.digest", "payload": {"file_id": "nope"}})).await;
    assert_eq!(code, 422);
    assert!(body["detail"].as_str().unwrap_or_default().contains("UUID"), "{body}");
    let (code, _) = app.post_job(&token, json!({"kind": "file.digest", "payload": {}})).await;
    assert_eq!(code, 422);

    // Another tenant's file is as missing as one that never existed: a permanent failure.
    let alices = app.upload_json(&token, "", None, b"private").await;
    let (_, job) = app.post_job(&bob, json!({"kind": "file.digest", "payload": {"file_id": alices["id"]}})).await;
    let id = job["id"].as_str().expect("id");
    let done = app.wait_job(&bob, id, T, |j| j["status"] == "failed").await;
    assert_eq!(done["attempts"], 1);
    assert!(done["last_error"].as_str().unwrap_or_default().contains("does not exist"), "{done}");
}

#[tokio::test]
async fn document_render_writes_a_new_file_from_an_inline_or_stored_template() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    renders(&app).await;
}

/// document.render from an inline template and from a stored one (HTML-escaped context).
async fn renders(app: &TestApp) {
    let token = app.token("alice", None).await;

    let (code, job) = app
        .post_job(
            &token,
            json!({"kind": "document.render", "payload": {
                "template": "Dear {{ name }},\n{% for i in items %}- {{ i }}\n{% endfor %}",
                "context": {"name": "Ann", "items": ["tea", "cake"]},
                "name": "letter.txt"
            }}),
        )
        .await;
    assert_eq!(code, 202, "{job}");
    let done = app.wait_job(&token, job["id"].as_str().expect("id"), T, |j| j["status"] == "succeeded").await;
    let expected = "Dear Ann,\n- tea\n- cake\n";
    assert_eq!(done["result"]["size"], expected.len());
    assert_eq!(done["result"]["sha256"], sha256_hex(expected.as_bytes()).as_str());
    let file_id = done["result"]["file_id"].as_str().expect("file id");
    let meta: serde_json::Value =
        app.file_get(&token, &format!("/api/v1/files/{file_id}"), &[]).await.json().await.expect("json");
    assert_eq!(meta["name"], "letter.txt");
    assert_eq!(meta["content_type"], "text/plain; charset=utf-8");
    let content = app.file_get(&token, &format!("/api/v1/files/{file_id}/content"), &[]).await;
    assert_eq!(content.text().await.expect("text"), expected);

    // A template stored as a file, rendered as HTML: the context is escaped.
    let template = app.upload_json(&token, "?name=t.html", Some("text/html"), b"<p>{{ who }}</p>").await;
    let (code, job) = app
        .post_job(
            &token,
            json!({"kind": "document.render", "payload": {
                "template_file_id": template["id"], "context": {"who": "<script>x</script>"}, "content_type": "text/html"
            }}),
        )
        .await;
    assert_eq!(code, 202, "{job}");
    let done = app.wait_job(&token, job["id"].as_str().expect("id"), T, |j| j["status"] == "succeeded").await;
    let file_id = done["result"]["file_id"].as_str().expect("file id");
    let content = app.file_get(&token, &format!("/api/v1/files/{file_id}/content"), &[]).await;
    assert_eq!(content.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(content.text().await.expect("text"), "<p>&lt;script&gt;x&lt;&#x2f;script&gt;</p>");
}

#[tokio::test]
async fn a_bad_template_fails_the_job_once_with_the_template_error() {
    let db = TestDb::create(&admin_url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&db, dir.path()).await;
    let token = app.token("alice", None).await;

    let (code, job) =
        app.post_job(&token, json!({"kind": "document.render", "payload": {"template": "Hello {% for %}"}})).await;
    assert_eq!(code, 202, "{job}");
    let done = app.wait_job(&token, job["id"].as_str().expect("id"), T, |j| j["status"] == "failed").await;
    assert_eq!(done["attempts"], 1, "template errors are not retried: {done}");
    assert_eq!(done["max_attempts"], 3);
    let error = done["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("template error") && error.contains("syntax error"), "{error}");
    assert_eq!(file_count(&db).await, 0);

    for payload in [
        json!({}),
        json!({"template": "x", "template_file_id": uuid::Uuid::now_v7()}),
        json!({"template_file_id": "../../etc/passwd"}),
        json!({"template": "x".repeat(256 * 1024 + 1)}),
        json!({"template": "x", "content_type": "application/pdf"}),
        json!({"template": "x", "context": "not an object"}),
    ] {
        let (code, body) = app.post_job(&token, json!({"kind": "document.render", "payload": payload})).await;
        assert_eq!(code, 422, "{body}");
    }
}

/// A tmpfs too small for the upload: the disk really fills (skipped where mounting is not
/// permitted, e.g. without root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_and_keeps_nothing() {
    let disk = match SmallDisk::mount("4m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_answers_507_and_keeps_nothing: cannot mount a tmpfs ({why})");
            return;
        }
    };
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db, &disk.path()).await;
    let token = app.token("alice", None).await;
    let gen = Arc::new(Generated::new());

    let resp = app.upload(&token, "?name=too-big-for-the-disk", None, gen.body(8 * MIB)).await;
    assert_eq!(resp.status(), 507);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = resp.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:ballast:problem:insufficient-storage", "{problem}");
    assert_eq!(file_count(&db).await, 0);
    assert_eq!(stored_objects(&disk.path()), Vec::<String>::new(), "the partial upload is removed");
    // The space came back: a file that fits is accepted.
    let resp = app.upload(&token, "", None, gen.body(MIB)).await;
    assert_eq!(resp.status(), 201);
}

/// A moto S3 server on a free loopback port, stopped on drop.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

fn moto_binary() -> Option<PathBuf> {
    let tools = std::env::var("BALLAST_TOOLS_DIR")
        .map(PathBuf::from)
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| PathBuf::from(h).join(".cache/ballast-tools")));
    let mut candidates: Vec<PathBuf> = std::env::var("MOTO_SERVER").map(PathBuf::from).into_iter().collect();
    candidates.extend(tools.map(|t| t.join("venv/bin/moto_server")));
    candidates.extend(std::env::var("PATH").unwrap_or_default().split(':').map(|d| Path::new(d).join("moto_server")));
    candidates.into_iter().find(|p| p.is_file())
}

impl Moto {
    /// Starts moto, or explains why it cannot. Under CI that fails the test instead of skipping.
    async fn start() -> Option<Moto> {
        fn unavailable(why: String) -> Option<Moto> {
            assert!(std::env::var_os("CI").is_none(), "CI must run the S3 tests: {why}");
            eprintln!("SKIPPED S3 file tests: {why}");
            None
        }
        let Some(bin) = moto_binary() else {
            return unavailable("moto_server not found (pip install 'moto[server]', or set MOTO_SERVER)".into());
        };
        let port = free_port();
        let child = match std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => return unavailable(format!("{} could not be started: {e}", bin.display())),
        };
        let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{}/moto-api/", moto.endpoint)).send().await.is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return unavailable(format!("{} exited with {status}", bin.display()));
            }
            if Instant::now() > deadline {
                return unavailable(format!("{} did not answer on {} within 30s", bin.display(), moto.endpoint));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(moto)
    }

    /// object_store cannot create buckets; moto accepts an unsigned S3 CreateBucket.
    async fn create_bucket(&self, bucket: &str) {
        let resp = reqwest::Client::new().put(format!("{}/{bucket}", self.endpoint)).send().await.expect("PUT bucket");
        assert!(resp.status().is_success(), "create bucket: {}", resp.status());
    }

    async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = reqwest::Client::new()
            .get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("xml");
        xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect()
    }

    async fn open_multipart_uploads(&self, bucket: &str) -> usize {
        let xml = reqwest::Client::new()
            .get(format!("{}/{bucket}?uploads", self.endpoint))
            .send()
            .await
            .expect("list uploads")
            .text()
            .await
            .expect("xml");
        xml.matches("<UploadId>").count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server storing under `tenant-data/` in `bucket` on moto.
fn on_s3(db: &TestDb, moto: &Moto, bucket: &str) -> Spawn {
    Spawn::serve(db)
        .env("STORAGE_URL", format!("s3://{bucket}/tenant-data"))
        .env("STORAGE_S3_ENDPOINT", &moto.endpoint)
        .env("STORAGE_S3_REGION", "us-east-1")
        .env("STORAGE_S3_ACCESS_KEY_ID", "moto-access-key")
        .env("STORAGE_S3_SECRET_ACCESS_KEY", "moto-secret-key")
        .env("STORAGE_S3_ALLOW_HTTP", "true")
        .env("RATE_LIMIT_ENABLED", "false")
}

#[tokio::test]
async fn on_s3_storage_ranges_hostile_names_and_rendering_behave_as_on_local_storage() {
    let Some(moto) = Moto::start().await else { return };
    moto.create_bucket("ballast-semantics").await;
    let db = TestDb::create(&admin_url()).await;
    let app = on_s3(&db, &moto, "ballast-semantics").start().await;
    ranges_and_conditionals(&app).await;
    hostile_names(&app).await;
    renders(&app).await;
    // 3 uploads of the range checks, 6 hostile names, 1 stored template and 2 rendered files,
    // beside the readiness probe object: all under generated keys.
    let keys = moto.keys("ballast-semantics").await;
    let objects: Vec<&String> = keys.iter().filter(|k| !k.ends_with(".ballast-probe")).collect();
    assert_eq!(objects.len(), 12, "{keys:?}");
    for k in objects {
        let name = k.rsplit('/').next().unwrap_or_default();
        assert!(k.starts_with("tenant-data/") && name.len() == 32, "{k}");
        assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
    }
}

#[tokio::test]
async fn on_s3_storage_files_round_trip_range_digest_and_delete() {
    let Some(moto) = Moto::start().await else { return };
    moto.create_bucket("ballast-files").await;
    let db = TestDb::create(&admin_url()).await;
    let app = on_s3(&db, &moto, "ballast-files").env("MAX_UPLOAD_BYTES", "24MiB").start().await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    let token = app.token("alice", None).await;
    let gen = Arc::new(Generated::new());

    // Several 5 MiB parts and a short last one.
    let total = 17 * MIB + 123;
    let expected = gen.sha256(total);
    let started = Instant::now();
    let resp = app.upload(&token, "?name=on-s3.bin", None, gen.body(total)).await;
    let up = started.elapsed();
    assert_eq!(resp.status(), 201);
    let file: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(file["sha256"], expected.as_str());
    let id = file["id"].as_str().expect("id").to_string();
    let content = format!("/api/v1/files/{id}/content");
    let started = Instant::now();
    let body = app.file_get(&token, &content, &[]).await.bytes().await.expect("body");
    println!(
        "S3 (moto) {} MiB: upload {:.0} MB/s, download {:.0} MB/s",
        total / MIB,
        total as f64 / 1e6 / up.as_secs_f64(),
        total as f64 / 1e6 / started.elapsed().as_secs_f64()
    );
    assert_eq!(body.len() as u64, total);
    assert_eq!(sha256_hex(&body), expected);
    let resp = app.file_get(&token, &content, &[("range", "bytes=-100")]).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.expect("tail").as_ref(), &body[body.len() - 100..]);

    let keys = moto.keys("ballast-files").await;
    assert!(keys.iter().any(|k| k.starts_with("tenant-data/") && k.ends_with(&id.replace('-', ""))), "{keys:?}");

    let (_, job) = app.post_job(&token, json!({"kind": "file.digest", "payload": {"file_id": id}})).await;
    let done = app.wait_job(&token, job["id"].as_str().expect("id"), T, |j| j["status"] == "succeeded").await;
    assert_eq!(done["result"]["sha256"], expected.as_str());

    // Over the limit: the multipart upload is aborted, nothing is left in the bucket.
    let resp = app.upload(&token, "", None, gen.body(24 * MIB + 1)).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(moto.open_multipart_uploads("ballast-files").await, 0);

    let del =
        app.client.delete(app.url(&format!("/api/v1/files/{id}"))).bearer_auth(&token).send().await.expect("DELETE");
    assert_eq!(del.status(), 204);
    assert_eq!(moto.keys("ballast-files").await, vec!["tenant-data/.ballast-probe".to_string()]);
    assert_eq!(file_count(&db).await, 0);

    // The store goes away: uploads are 503 with Retry-After and keep nothing; readiness fails.
    drop(moto);
    let resp = app.upload(&token, "", None, "x").await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(file_count(&db).await, 0);
    app.wait_status(&app.url("/health/ready"), 503, T).await;
}
