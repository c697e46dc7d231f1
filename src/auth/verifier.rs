//! Token verification: HS256 with `JWT_SECRET`, RS256/ES256 with keys from `JWT_JWKS_URL`.
//!
//! The header's `alg` only selects which of *our* keys to try; each key verifies exactly one
//! algorithm and the validation passed to jsonwebtoken lists only that algorithm. So `alg:
//! none` never verifies, an HS256 token cannot be checked against an RSA public key (the
//! classic confusion attack: the "secret" would be public), and an RS256 token is refused
//! outright when only a shared secret is configured.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;

use super::cache::TokenCache;
use super::claims::Claims;
use super::jwks::{Jwks, Miss};
use super::Identity;
use crate::config::AuthSettings;
use crate::http::error::ApiError;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;
/// Larger "tokens" are refused before any base64 or JSON work.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Verifies tokens with the configured keys and claim rules. Cheap and synchronous: the rate
/// limiter runs it on every request before the handler's extractor reuses the result.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    verified: TokenCache,
}

impl Verifier {
    /// Builds the verifier; with `JWT_JWKS_URL` it also starts the key-set refresher, so it
    /// must run inside the Tokio runtime.
    pub fn new(settings: &AuthSettings) -> Verifier {
        let secret = settings.jwt_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        let jwks = settings.jwks_url.clone().map(|url| Jwks::start(url, settings.jwks_refresh));
        Verifier {
            secret,
            jwks,
            hs256: validation(Algorithm::HS256, settings),
            rs256: validation(Algorithm::RS256, settings),
            es256: validation(Algorithm::ES256, settings),
            verified: TokenCache::default(),
        }
    }

    /// Gives the first JWKS fetch up to `timeout` to finish; returns at once without JWKS.
    /// Start-up never fails here: an unreachable key set is logged and retried in the background.
    pub async fn wait_for_keys(&self, timeout: Duration) {
        if let Some(jwks) = &self.jwks {
            jwks.first_attempt(timeout).await;
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ApiError::unauthorized("the token is too large"));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        // Read before any key is looked up (see `Jwks::generation`).
        let generation = self.jwks.as_ref().map_or(0, Jwks::generation);
        if let Some(identity) = self.verified.get(token, now, generation) {
            return Ok(identity);
        }
        let (identity, exp) = self.verify_in_full(token)?;
        self.verified.put(token, &identity, now, exp.saturating_add(LEEWAY_SECS), generation);
        Ok(identity)
    }

    /// Every check, and the token's `exp`.
    fn verify_in_full(&self, token: &str) -> Result<(Identity, u64), ApiError> {
        let header = decode_header(token)
            .map_err(|_| ApiError::unauthorized("the token is malformed or its algorithm is not supported"))?;
        let refused = || ApiError::unauthorized("the token algorithm is not accepted by this server");
        let from_set;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (self.secret.as_ref().ok_or_else(refused)?, &self.hs256),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or_else(refused)?;
                from_set = jwks.find(header.kid.as_deref(), header.alg).map_err(|miss| match miss {
                    Miss::UnknownKid => ApiError::unauthorized("the token's key id (kid) is not known"),
                    Miss::NoKid => ApiError::unauthorized("the token has no key id (kid) matching a known key"),
                })?;
                if from_set.alg != header.alg {
                    return Err(ApiError::unauthorized("the token algorithm does not match its key"));
                }
                (&from_set.key, if header.alg == Algorithm::RS256 { &self.rs256 } else { &self.es256 })
            }
            _ => return Err(refused()),
        };
        let data = decode::<Claims>(token, key, validation).map_err(|e| ApiError::unauthorized(reason(e.kind())))?;
        let c = data.claims;
        if c.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("the token's sub claim is empty"));
        }
        let tenant = c.org.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| c.sub.clone());
        let scopes = c.scope.split_whitespace().map(str::to_string).collect();
        Ok((Identity { sub: c.sub.into(), tenant: tenant.into(), scopes }, c.exp))
    }
}

/// Claim rules for one algorithm. `iss`/`aud` become *required* when configured: jsonwebtoken
/// only compares them when present, so a token simply omitting them would otherwise pass.
fn validation(alg: Algorithm, settings: &AuthSettings) -> Validation {
    let mut v = Validation::new(alg);
    let mut required = vec!["exp", "sub"];
    v.validate_nbf = true;
    v.leeway = LEEWAY_SECS;
    match &settings.issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    match &settings.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::InvalidSignature => "the token signature is invalid".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token algorithm is not accepted by this server".into()
        }
        ErrorKind::InvalidIssuer => "the token issuer is not accepted".into(),
        ErrorKind::InvalidAudience => "the token audience is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the required `{claim}` claim"),
        // Our claims struct failed: a missing `sub`/`exp` or a claim of the wrong type.
        ErrorKind::Json(e) if e.is_data() => format!("the token's claims are invalid: {e}"),
        _ => "the token is malformed".into(),
    }
}
