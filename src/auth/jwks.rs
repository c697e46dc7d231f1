//! RS256/ES256 public keys from `JWT_JWKS_URL`, cached in memory by `kid`.
//!
//! `Verifier::verify` must stay synchronous and cheap (the rate limiter calls it on every
//! request), so no request ever waits on the network: a background task owns every fetch.
//! It loads the set at start, refreshes it every `JWT_JWKS_REFRESH_SECS` (so removed keys stop
//! verifying), retries with backoff while the URL is unreachable, and refetches early when a
//! token names a `kid` it does not know (key rotation) — at most once per
//! [`UNKNOWN_KID_COOLDOWN`], so tokens with random kids cannot turn us into a fetch amplifier.
//! A failed refresh keeps the keys already cached.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::build_info;
use crate::config::redact_url;

/// Bounds one fetch, body included: a hanging key server must not pile up refresh tasks.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Real key sets are a few KiB; anything far larger is not one.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Minimum spacing of refetches caused by unknown kids.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A key from the set, bound to the one algorithm it may verify: an RSA key never checks an
/// ES256 signature and no key from the set ever checks an HS256 one.
pub struct PublicKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<PublicKey>>,
    /// Keys published without a `kid`: used only by tokens without one, and only when unambiguous.
    unnamed: Vec<Arc<PublicKey>>,
    /// `(index in the document, why)` of keys left out, logged when the set changes.
    skipped: Vec<(usize, String)>,
}

/// Why no key was found for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The token's kid is not in the set (yet): a refetch has been requested.
    UnknownKid,
    /// The token has no kid and the set has no single key for its algorithm.
    NoKid,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document. Keys ballast cannot or must not use (encryption keys, symmetric
    /// keys, other curves and algorithms) are skipped (and logged once) rather than failing
    /// the whole set, because identity providers publish such keys next to their signing keys.
    pub fn parse(body: &[u8]) -> anyhow::Result<KeySet> {
        let raw: RawSet =
            serde_json::from_slice(body).context("the response is not a JWKS document {\"keys\": [...]}")?;
        let mut set = KeySet::default();
        for (index, value) in raw.keys.into_iter().enumerate() {
            match usable_key(value) {
                Ok((Some(kid), key)) => match set.by_kid.entry(kid) {
                    Entry::Vacant(slot) => {
                        slot.insert(Arc::new(key));
                    }
                    Entry::Occupied(slot) => set.skipped.push((index, format!("duplicate kid {}", slot.key()))),
                },
                Ok((None, key)) => set.unnamed.push(Arc::new(key)),
                Err(reason) => set.skipped.push((index, reason)),
            }
        }
        if set.len() == 0 {
            bail!("the key set holds no usable RS256 or ES256 signing key");
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<PublicKey>, Miss> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned().ok_or(Miss::UnknownKid),
            None => {
                let mut candidates = self.by_kid.values().chain(&self.unnamed).filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Ok(only.clone()),
                    _ => Err(Miss::NoKid),
                }
            }
        }
    }
}

fn usable_key(value: serde_json::Value) -> Result<(Option<String>, PublicKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("not a supported JWK: {e}"))?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(format!("not a signing key (use={other:?})")),
    }
    let (alg, declared_ok) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::EllipticCurve(p) => return Err(format!("EC curve {:?}: only P-256 (ES256)", p.curve)),
        // A symmetric key in a published set would let anyone who can read the set mint tokens.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key: HS256 uses JWT_SECRET only".into()),
        AlgorithmParameters::OctetKeyPair(_) => return Err("an OKP (EdDSA) key: only RS256 and ES256".into()),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        if declared != declared_ok {
            return Err(format!("declares alg {declared:?}: only RS256 and ES256 are accepted"));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key material: {e}"))?;
    Ok((jwk.common.key_id, PublicKey { alg, key }))
}

struct Shared {
    url: url::Url,
    client: Option<reqwest::Client>,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped after every set stored (after the swap), so a verified-token cache entry made
    /// under an older set is not honoured.
    generation: AtomicU64,
    wake: Notify,
    last_wake: Mutex<Option<Instant>>,
    refresh_every: Duration,
}

/// The cached key set and its refresher; dropping it stops the refresher.
pub struct Jwks {
    shared: Arc<Shared>,
    attempts: watch::Receiver<u64>,
    _stop: DropGuard,
}

impl Jwks {
    /// Starts the refresher, which fetches at once. Needs a Tokio runtime (the service always
    /// has one); without one the set stays empty and RS256/ES256 tokens are refused.
    pub fn start(url: url::Url, refresh_every: Duration) -> Jwks {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(format!("ballast/{}", build_info::VERSION))
            .build()
            .map_err(
                |e| tracing::error!(error = %e, "JWKS: cannot build the HTTP client; RS256/ES256 tokens are refused"),
            )
            .ok();
        let shared = Arc::new(Shared {
            url,
            client,
            keys: RwLock::new(Arc::new(KeySet::default())),
            generation: AtomicU64::new(0),
            wake: Notify::new(),
            last_wake: Mutex::new(None),
            refresh_every,
        });
        let (attempted, attempts) = watch::channel(0);
        let stop = CancellationToken::new();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(refresh_loop(shared.clone(), attempted, stop.clone()));
            }
            Err(_) => tracing::error!("JWKS: no async runtime, the key set is never fetched"),
        }
        Jwks { shared, attempts, _stop: stop.drop_guard() }
    }

    /// Waits until the first fetch has succeeded or failed, at most `timeout`, so the first
    /// requests after start-up do not meet an empty set. Never fails: an unreachable key set
    /// must not keep the service from starting.
    pub async fn first_attempt(&self, timeout: Duration) {
        let mut attempts = self.attempts.clone();
        let _ = tokio::time::timeout(timeout, attempts.wait_for(|n| *n > 0)).await;
    }

    /// Which key set is current; read it *before* looking a key up.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// The key for a token's `kid` (or, without a kid, the only key for `alg`). A miss asks the
    /// refresher for an early fetch, since the issuer may have rotated keys since the last one.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<PublicKey>, Miss> {
        let keys = self.shared.keys.read().unwrap_or_else(PoisonError::into_inner).clone();
        let found = keys.find(kid, alg);
        if found.is_err() {
            self.shared.request_refresh();
        }
        found
    }
}

impl Shared {
    fn request_refresh(&self) {
        let now = Instant::now();
        let mut last = self.last_wake.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| now.duration_since(t) < UNKNOWN_KID_COOLDOWN) {
            return;
        }
        *last = Some(now);
        drop(last);
        tracing::info!("JWKS: a token needs a key not in the set, refetching it early");
        self.wake.notify_one();
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let Some(client) = &self.client else { bail!("no HTTP client") };
        let mut resp = client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .context("requesting the key set")?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the key set URL answered {status}");
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("reading the key set")? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                bail!("the key set is larger than {MAX_BODY_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body)
    }

    fn store(&self, mut set: KeySet) {
        let kids = set.kids();
        let count = set.len();
        let skipped = std::mem::take(&mut set.skipped);
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let changed = keys.kids() != kids || keys.len() != count;
        *keys = Arc::new(set);
        drop(keys);
        self.generation.fetch_add(1, Ordering::Release);
        if changed {
            for (index, reason) in &skipped {
                tracing::warn!(index, reason, "JWKS: key skipped");
            }
            tracing::info!(
                url = redact_url(self.url.as_str()),
                keys = count,
                kids = kids.join(","),
                "JWKS: key set loaded"
            );
        } else {
            tracing::debug!(keys = count, "JWKS: key set unchanged");
        }
    }
}

async fn refresh_loop(shared: Arc<Shared>, attempted: watch::Sender<u64>, stop: CancellationToken) {
    let mut retry = RETRY_MIN;
    let mut healthy = true;
    let mut first = true;
    loop {
        if !first {
            let wait = if healthy { shared.refresh_every } else { retry.min(shared.refresh_every) };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = shared.wake.notified() => {}
            }
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = shared.fetch() => outcome,
        };
        match outcome {
            Ok(set) => {
                shared.store(set);
                healthy = true;
                retry = RETRY_MIN;
            }
            Err(e) => {
                if !healthy {
                    retry = (retry * 2).min(RETRY_MAX);
                }
                healthy = false;
                let cached = shared.keys.read().map(|k| k.len()).unwrap_or(0);
                tracing::warn!(
                    url = redact_url(shared.url.as_str()),
                    error = format!("{e:#}"),
                    cached_keys = cached,
                    retry_in_s = retry.min(shared.refresh_every).as_secs_f64(),
                    "JWKS: fetch failed; tokens needing a key not cached are refused until it succeeds"
                );
            }
        }
        first = false;
        attempted.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/jwt/jwks.json");

    fn fixture_keys() -> Vec<serde_json::Value> {
        let set: serde_json::Value = serde_json::from_str(FIXTURE).expect("fixture");
        set["keys"].as_array().cloned().expect("keys")
    }

    fn parse(keys: Vec<serde_json::Value>) -> anyhow::Result<KeySet> {
        KeySet::parse(&serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("json"))
    }

    #[test]
    fn signing_keys_load_by_kid_bound_to_their_algorithm() {
        let set = parse(fixture_keys()).expect("valid set");
        assert_eq!(set.kids(), vec!["ec-1", "rsa-1", "rsa-2"]);
        assert_eq!(set.find(Some("rsa-1"), Algorithm::RS256).map(|k| k.alg).ok(), Some(Algorithm::RS256));
        assert_eq!(set.find(Some("ec-1"), Algorithm::RS256).map(|k| k.alg).ok(), Some(Algorithm::ES256));
        assert_eq!(set.find(Some("nope"), Algorithm::RS256).err(), Some(Miss::UnknownKid));
        // Without a kid only an unambiguous key will do: one EC key, but two RSA keys.
        assert!(set.find(None, Algorithm::ES256).is_ok());
        assert_eq!(set.find(None, Algorithm::RS256).err(), Some(Miss::NoKid));
    }

    #[test]
    fn keys_that_must_not_verify_are_skipped_and_a_set_without_any_left_is_refused() {
        let mut keys = fixture_keys();
        let mut enc = keys[0].clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc-1".into();
        let mut p384 = keys[2].clone();
        p384["crv"] = "P-384".into();
        p384["kid"] = "p384".into();
        let mut rs512 = keys[1].clone();
        rs512["alg"] = "RS512".into();
        rs512["kid"] = "rs512".into();
        let bad = vec![
            serde_json::json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }),
            serde_json::json!({ "kty": "RSA", "kid": "broken" }),
            serde_json::json!({ "kty": "future-kty", "kid": "x" }),
            enc,
            p384,
            rs512,
        ];
        assert!(parse(bad.clone()).is_err(), "nothing usable");
        let duplicate = keys[0].clone();
        keys.extend(bad);
        keys.push(duplicate);
        let set = parse(keys).expect("the usable keys load");
        assert_eq!(set.kids(), vec!["ec-1", "rsa-1", "rsa-2"]);
        assert_eq!(set.skipped.len(), 7, "{:?}", set.skipped);
        assert!(KeySet::parse(b"{\"not\": \"a set\"}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }
}
