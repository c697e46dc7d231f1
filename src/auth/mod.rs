//! Bearer JWT authentication. Tokens are HS256 with `JWT_SECRET`; the tenant owning a
//! request's resources is the `org` claim, else `sub`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::telemetry::context;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == "admin")
    }
}

/// Verifies tokens with the configured key and claim rules.
pub struct Verifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Verifier {
        let key = settings.jwt_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes()));
        // Only HS256 is accepted for a shared secret: `alg: none` and RS/HS confusion fail here.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        match &settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Verifier { key, validation }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        let Some(key) = &self.key else {
            return Err(ApiError::unauthorized("token verification is not configured on this server"));
        };
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidSignature => "the token signature is invalid",
                K::InvalidAlgorithm | K::InvalidAlgorithmName => "the token algorithm is not accepted",
                K::InvalidIssuer => "the token issuer is not accepted",
                K::InvalidAudience => "the token audience is not accepted",
                K::MissingRequiredClaim(_) => "the token lacks a required claim (sub, exp)",
                _ => "the token is malformed",
            };
            ApiError::unauthorized(why)
        })?;
        let c = data.claims;
        if c.sub.trim().is_empty() {
            return Err(ApiError::unauthorized("the token's sub claim is empty"));
        }
        let tenant = c.org.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| c.sub.clone());
        Ok(Identity { sub: c.sub, tenant, scopes: c.scope.split_whitespace().map(str::to_string).collect() })
    }
}

/// Mints an HS256 token (the `token` command, tests and benchmarks).
pub fn mint(
    secret: &str,
    sub: &str,
    org: Option<&str>,
    scopes: &[String],
    ttl: Duration,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: sub.to_string(),
        org: org.map(str::to_string),
        scope: scopes.join(" "),
        exp: now + ttl.as_secs(),
        nbf: None,
        iat: now,
        iss: issuer.map(str::to_string),
        aud: audience.map(str::to_string),
    };
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))?)
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(id) = parts.extensions.get::<Identity>() {
            return Ok(id.clone());
        }
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("an Authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let identity = state.verifier.verify(token)?;
        if let Some(ctx) = context::current() {
            let _ = ctx.user.set(identity.sub.clone());
        }
        parts.extensions.insert(identity.clone());
        Ok(identity)
    }
}
