//! Bearer JWT auth (DESIGN §8) against the real binary: HS256 with JWT_SECRET, RS256/ES256
//! with keys from a JWKS served by a real HTTP server started here, built from the test-only
//! keys in tests/fixtures/jwt.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const T: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rsa(kid: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture(&format!("{kid}.pem"))).expect("RSA fixture key")
}

fn ec(kid: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture(&format!("{kid}.pem"))).expect("EC fixture key")
}

fn hs() -> EncodingKey {
    EncodingKey::from_secret(JWT_SECRET.as_bytes())
}

/// The public JWKs of the fixture keys with these kids, in that order.
fn jwks(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_slice(&fixture("jwks.json")).expect("jwks.json");
    let keys: Vec<Value> = kids
        .iter()
        .map(|kid| {
            all["keys"].as_array().and_then(|ks| ks.iter().find(|k| k["kid"] == *kid)).cloned().expect("fixture kid")
        })
        .collect();
    json!({ "keys": keys })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 600, "iat": now() })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

/// A JWKS endpoint serving whatever set was last published, counting fetches.
struct KeyServer {
    addr: SocketAddr,
    set: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(set: Value) -> KeyServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind key server");
        KeyServer::on(listener, set)
    }

    fn on(listener: tokio::net::TcpListener, set: Value) -> KeyServer {
        let addr = listener.local_addr().expect("key server addr");
        let set = Arc::new(Mutex::new(set));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (set.clone(), hits.clone());
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(s.lock().expect("set").clone())
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        KeyServer { addr, set, hits, task }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn publish(&self, set: Value) {
        *self.set.lock().expect("set") = set;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Auth tests send many refused requests from one IP: keep the anonymous rate limit out of it.
fn spawn(db: &TestDb) -> Spawn {
    Spawn::serve(db).env("RATE_LIMIT_ENABLED", "false").env("WORKER_CONCURRENCY", "0")
}

/// Only JWT_JWKS_URL, no shared secret.
fn spawn_jwks_only(db: &TestDb, keys: &KeyServer) -> Spawn {
    let mut s = spawn(db).env("JWT_JWKS_URL", keys.url());
    s.env.remove("JWT_SECRET");
    s
}

async fn call(app: &TestApp, authorization: &str) -> reqwest::Response {
    app.client.get(app.url("/api/v1/jobs")).header("authorization", authorization).send().await.expect("GET jobs")
}

async fn accepted(app: &TestApp, token: &str) {
    let resp = call(app, &format!("Bearer {token}")).await;
    let status = resp.status();
    assert_eq!(status, 200, "a valid token was refused: {}", resp.text().await.unwrap_or_default());
}

/// Asserts a 401 problem with the Bearer challenge whose detail mentions `why`.
async fn refused_header(app: &TestApp, authorization: &str, why: &str) {
    let resp = call(app, authorization).await;
    assert_eq!(resp.status(), 401, "expected 401 for `{why}`");
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"", "{why}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{why}");
    let body: Value = resp.json().await.expect("problem body");
    assert_eq!(body["status"], 401, "{body}");
    assert_eq!(body["instance"], "/api/v1/jobs", "{body}");
    assert!(body["trace_id"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(why), "detail `{detail}` should mention `{why}`");
}

async fn refused(app: &TestApp, token: &str, why: &str) {
    refused_header(app, &format!("Bearer {token}"), why).await;
}

/// Polls with `token` until the app answers `status`.
async fn wait_until(app: &TestApp, token: &str, status: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = call(app, &format!("Bearer {token}")).await.status().as_u16();
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "token never answered {status} within {timeout:?} (last {got})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_hs256_tokens_and_headers_get_401_problems_with_a_bearer_challenge() {
    let db = TestDb::create(&admin_url()).await;
    let app = spawn(&db).start().await;
    accepted(&app, &app.token("alice", None).await).await;

    let expired = json!({ "sub": "alice", "exp": now() - 3600, "iat": now() - 7200 });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &expired), "expired").await;
    let early = json!({ "sub": "alice", "exp": now() + 7200, "nbf": now() + 3600 });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &early), "not valid yet").await;
    let forged = EncodingKey::from_secret(b"another-secret-0123456789abcdef-0123456789");
    refused(&app, &sign(Algorithm::HS256, None, &forged, &claims("alice")), "signature").await;
    let no_sub = json!({ "exp": now() + 600 });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &no_sub), "sub").await;
    let empty_sub = json!({ "sub": " ", "exp": now() + 600 });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &empty_sub), "sub").await;
    let no_exp = json!({ "sub": "alice" });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &no_exp), "exp").await;
    let text_exp = json!({ "sub": "alice", "exp": "tomorrow" });
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &text_exp), "claims").await;

    // alg none, whatever its spelling or signature, never verifies.
    let body = b64(&claims("alice"));
    for alg in ["none", "None", "NONE"] {
        let head = b64(&json!({ "alg": alg, "typ": "JWT" }));
        refused(&app, &format!("{head}.{body}."), "malformed").await;
        refused(&app, &format!("{head}.{body}.c2lnbmF0dXJl"), "malformed").await;
    }
    // Only HS256 is configured: RS256/ES256 and the other HMAC variants are refused.
    refused(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &claims("alice")), "algorithm").await;
    refused(&app, &sign(Algorithm::ES256, Some("ec-1"), &ec("ec-1"), &claims("alice")), "algorithm").await;
    refused(&app, &sign(Algorithm::HS512, None, &hs(), &claims("alice")), "algorithm").await;

    for garbage in ["garbage", "a.b.c", "....", &"x".repeat(9000)] {
        refused(&app, garbage, "").await;
    }
    let valid = app.token("alice", None).await;
    refused_header(&app, "Basic YWxpY2U6c2VjcmV0", "Bearer").await;
    refused_header(&app, "Bearer ", "Bearer").await;
    refused_header(&app, &format!("Token {valid}"), "Bearer").await;
    let resp = app.client.get(app.url("/api/v1/jobs")).send().await.expect("GET");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let resp = call(&app, &format!("bearer {valid}")).await;
    assert_eq!(resp.status(), 200);
    let resp = call(&app, &format!("BEARER {valid}")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured_and_the_token_command_sets_them() {
    let db = TestDb::create(&admin_url()).await;
    let (iss, aud) = ("https://issuer.test/", "ballast-api");
    let app = spawn(&db).env("JWT_ISSUER", iss).env("JWT_AUDIENCE", aud).start().await;
    let with = |extra: Value| {
        let mut c = claims("alice");
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        sign(Algorithm::HS256, None, &hs(), &c)
    };

    accepted(&app, &with(json!({ "iss": iss, "aud": aud }))).await;
    accepted(&app, &with(json!({ "iss": iss, "aud": ["other-api", aud] }))).await;
    refused(&app, &with(json!({ "iss": "https://evil.test/", "aud": aud })), "issuer").await;
    refused(&app, &with(json!({ "aud": aud })), "iss").await;
    refused(&app, &with(json!({ "iss": iss, "aud": "other-api" })), "audience").await;
    refused(&app, &with(json!({ "iss": iss, "aud": ["other-api"] })), "audience").await;
    refused(&app, &with(json!({ "iss": iss })), "aud").await;

    // `ballast token` mints with the configured issuer and audience; --org, --scope, --ttl work.
    let (code, out, err) = run_cli(
        &["token", "--sub", "alice", "--org", "acme", "--scope", "admin", "--scope", "jobs:read", "--ttl", "15m"],
        &[("JWT_SECRET", JWT_SECRET), ("JWT_ISSUER", iss), ("JWT_AUDIENCE", aud)],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    accepted(&app, token).await;
    let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    let c = jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()), &v)
        .expect("the minted token verifies")
        .claims;
    assert_eq!(
        (c["sub"].clone(), c["org"].clone(), c["scope"].clone()),
        (json!("alice"), json!("acme"), json!("admin jobs:read"))
    );
    assert_eq!(c["exp"].as_u64().zip(c["iat"].as_u64()).map(|(e, i)| e - i), Some(900));
    let (code, _, err) = run_cli(&["token", "--sub", "alice", "--ttl", "soon"], &[("JWT_SECRET", JWT_SECRET)]).await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_with_keys_from_the_jwks_and_nothing_else_does() {
    let db = TestDb::create(&admin_url()).await;
    // Next to the real keys, a symmetric key and an encryption key that must never verify anything.
    let mut published = jwks(&["rsa-1", "ec-1"]);
    let oct_secret = b"a-symmetric-key-in-the-public-set-0123456789";
    let mut enc = jwks(&["rsa-2"])["keys"][0].clone();
    enc["use"] = json!("enc");
    enc.as_object_mut().expect("jwk").remove("alg");
    if let Some(keys) = published["keys"].as_array_mut() {
        keys.push(json!({ "kty": "oct", "kid": "hmac-1", "k": URL_SAFE_NO_PAD.encode(oct_secret) }));
        keys.push(enc);
    }
    let keys = KeyServer::start(published).await;
    let app = spawn_jwks_only(&db, &keys).start().await;
    let c = claims("alice");

    accepted(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &c)).await;
    accepted(&app, &sign(Algorithm::ES256, Some("ec-1"), &ec("ec-1"), &c)).await;
    // Without a kid, the one key of the token's algorithm is used.
    accepted(&app, &sign(Algorithm::RS256, None, &rsa("rsa-1"), &c)).await;

    refused(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-2"), &c), "signature").await;
    refused(&app, &sign(Algorithm::RS256, Some("rsa-2"), &rsa("rsa-2"), &c), "kid").await;
    refused(&app, &sign(Algorithm::RS256, Some("nobody"), &rsa("rsa-1"), &c), "kid").await;
    refused(&app, &sign(Algorithm::RS256, Some("ec-1"), &rsa("rsa-1"), &c), "algorithm").await;
    refused(&app, &sign(Algorithm::ES256, Some("rsa-1"), &ec("ec-1"), &c), "algorithm").await;
    refused(&app, &sign(Algorithm::RS512, Some("rsa-1"), &rsa("rsa-1"), &c), "algorithm").await;
    let expired = json!({ "sub": "alice", "exp": now() - 3600 });
    refused(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &expired), "expired").await;
    let head = b64(&json!({ "alg": "none", "kid": "rsa-1" }));
    refused(&app, &format!("{head}.{}.", b64(&c)), "malformed").await;

    // Algorithm confusion: the RSA public key (public!) used as an HMAC secret.
    let public_pem = EncodingKey::from_secret(&fixture("rsa-1.pub.pem"));
    refused(&app, &sign(Algorithm::HS256, Some("rsa-1"), &public_pem, &c), "algorithm").await;
    refused(&app, &sign(Algorithm::HS256, None, &public_pem, &c), "algorithm").await;
    // No secret is configured, so even a token signed with the test secret is refused…
    refused(&app, &sign(Algorithm::HS256, None, &hs(), &c), "algorithm").await;
    // …and symmetric keys in the set are never used.
    refused(&app, &sign(Algorithm::HS256, Some("hmac-1"), &EncodingKey::from_secret(oct_secret), &c), "algorithm")
        .await;

    let skipped: Vec<String> = app
        .logs
        .json()
        .into_iter()
        .filter(|l| l["message"] == "JWKS: key skipped")
        .map(|l| l["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(skipped.iter().any(|r| r.contains("symmetric")), "the oct key is skipped with a warning: {skipped:?}");
    assert!(skipped.iter().any(|r| r.contains("not a signing key")), "so is the enc key: {skipped:?}");
}

#[tokio::test]
async fn with_a_secret_and_a_jwks_each_algorithm_verifies_only_with_its_own_key_type() {
    let db = TestDb::create(&admin_url()).await;
    let keys = KeyServer::start(jwks(&["rsa-1", "ec-1"])).await;
    let app = spawn(&db).env("JWT_JWKS_URL", keys.url()).start().await;
    let c = claims("alice");

    accepted(&app, &app.token("alice", None).await).await;
    accepted(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &c)).await;
    accepted(&app, &sign(Algorithm::ES256, Some("ec-1"), &ec("ec-1"), &c)).await;
    // HS256 is checked with JWT_SECRET only, never with a key from the set.
    let public_pem = EncodingKey::from_secret(&fixture("rsa-1.pub.pem"));
    refused(&app, &sign(Algorithm::HS256, Some("rsa-1"), &public_pem, &c), "signature").await;
    refused(&app, &sign(Algorithm::HS256, None, &public_pem, &c), "signature").await;
}

#[tokio::test]
async fn a_rotated_in_key_is_accepted_after_an_early_refetch_that_unknown_kids_cannot_repeat() {
    let db = TestDb::create(&admin_url()).await;
    let keys = KeyServer::start(jwks(&["rsa-1"])).await;
    let app = spawn_jwks_only(&db, &keys).start().await;
    let c = claims("alice");
    accepted(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &c)).await;
    let fetched_at_start = keys.hits();
    assert_eq!(fetched_at_start, 1, "one fetch at start");

    keys.publish(jwks(&["rsa-1", "rsa-2"]));
    let rotated = sign(Algorithm::RS256, Some("rsa-2"), &rsa("rsa-2"), &c);
    // Refused until the refetch it triggers lands (well before the 300 s periodic refresh).
    refused(&app, &rotated, "kid").await;
    wait_until(&app, &rotated, 200, T).await;
    assert_eq!(keys.hits(), fetched_at_start + 1);

    // Within the cooldown, unknown kids cause no further fetches.
    for i in 0..20 {
        refused(&app, &sign(Algorithm::RS256, Some(&format!("random-{i}")), &rsa("rsa-1"), &c), "kid").await;
    }
    accepted(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &c)).await;
    assert_eq!(keys.hits(), fetched_at_start + 1, "unknown kids must not trigger a fetch each");
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_verifying_after_the_periodic_refresh() {
    let db = TestDb::create(&admin_url()).await;
    let keys = KeyServer::start(jwks(&["rsa-1", "rsa-2"])).await;
    let app = spawn_jwks_only(&db, &keys).env("JWT_JWKS_REFRESH_SECS", "1").start().await;
    let c = claims("alice");
    let old = sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &c);
    accepted(&app, &old).await;

    keys.publish(jwks(&["rsa-2"]));
    wait_until(&app, &old, 401, T).await;
    accepted(&app, &sign(Algorithm::RS256, Some("rsa-2"), &rsa("rsa-2"), &c)).await;
}

#[tokio::test]
async fn a_hanging_jwks_at_start_delays_nothing_and_its_keys_load_once_it_answers() {
    let db = TestDb::create(&admin_url()).await;
    // Accepts connections (the kernel does) but never answers: the fetch has to time out.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = hanging.local_addr().expect("addr");
    let url = format!("http://{addr}/jwks.json");
    let app = spawn(&db).env("JWT_JWKS_URL", &url).start().await;

    app.wait_status(&app.url("/health/ready"), 200, T).await;
    accepted(&app, &app.token("alice", None).await).await;
    let rs = sign(Algorithm::RS256, Some("rsa-1"), &rsa("rsa-1"), &claims("alice"));
    refused(&app, &rs, "kid").await;
    let failed =
        app.logs.wait_for(T, |l| l["message"].as_str().is_some_and(|m| m.starts_with("JWKS: fetch failed"))).await;
    assert_eq!(failed["level"], "WARN", "{failed}");
    let lines = app.logs.json();
    let pos = |pred: &dyn Fn(&Value) -> bool| lines.iter().position(pred);
    assert!(
        pos(&|l| l["message"] == "listening")
            < pos(&|l| l["message"].as_str().is_some_and(|m| m.starts_with("JWKS: fetch failed"))),
        "start-up must not wait for the JWKS fetch to time out"
    );

    // The key server comes up on the same address: the refresher's retry loads the keys.
    drop(hanging);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind the JWKS address");
    let _keys = KeyServer::on(listener, jwks(&["rsa-1"]));
    wait_until(&app, &rs, 200, T).await;
    app.wait_status(&app.url("/health/ready"), 200, T).await;
}
