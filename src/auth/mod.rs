//! Bearer JWT authentication (DESIGN §8). HS256 tokens are checked with `JWT_SECRET`,
//! RS256/ES256 tokens with the keys published at `JWT_JWKS_URL`; both may be configured at
//! once. The tenant owning a request's resources is the `org` claim, else `sub`.

mod cache;
mod claims;
mod jwks;
mod verifier;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

pub use claims::{mint, Audience, Claims};
pub use verifier::Verifier;

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::telemetry::context;

/// The verified caller. Shared, not copied: the token cache hands one out per request, and
/// the rate limiter, the request's log context and the handler each hold it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: Arc<str>,
    pub tenant: Arc<str>,
    pub scopes: Arc<[String]>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == "admin")
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
            .and_then(bearer_token)
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let identity = state.verifier.verify(token)?;
        if let Some(ctx) = context::current() {
            let _ = ctx.user.set(identity.sub.clone());
        }
        parts.extensions.insert(identity.clone());
        Ok(identity)
    }
}
