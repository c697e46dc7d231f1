//! Tokens already verified, so a client sending the same bearer token on every request pays
//! the signature check (~25 000 instructions for HS256, far more for RS256) once a minute
//! instead of once a request.
//!
//! An entry is only ever made for a token that passed every check, and it is honoured only
//! while all of these hold, so the cache never accepts what a full verification would refuse:
//! - the token has not expired (its `exp` plus the verifier's leeway);
//! - it was verified less than [`TTL_SECS`] ago (bounds how long any other change takes effect);
//! - the JWKS key set has not been replaced since (a refresh that drops a key must stop
//!   tokens signed with it at once, as it did before there was a cache).
//!
//! `JWT_SECRET` and the claim rules only change with a restart, which empties the cache.
//! Refused tokens are never cached: each one is checked in full.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use super::Identity;

/// Longest an entry is trusted without a fresh verification.
pub const TTL_SECS: u64 = 60;
/// Entries kept at most; a full cache drops its expired entries, then everything.
const CAPACITY: usize = 10_000;

struct Entry {
    identity: Identity,
    /// Unix seconds; the entry is honoured while `now < until`.
    until: u64,
    generation: u64,
}

#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<Box<str>, Entry>>,
}

impl TokenCache {
    /// The identity of `token` if it was verified under key-set `generation` and is still valid.
    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Identity> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let e = map.get(token)?;
        (now < e.until && e.generation == generation).then(|| e.identity.clone())
    }

    /// Remembers a token that just passed verification. `valid_until` is its `exp` plus leeway.
    pub fn put(&self, token: &str, identity: &Identity, now: u64, valid_until: u64, generation: u64) {
        let until = valid_until.min(now + TTL_SECS);
        if until <= now {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY && !map.contains_key(token) {
            map.retain(|_, e| now < e.until && e.generation == generation);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(token.into(), Entry { identity: identity.clone(), until, generation });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity { sub: "alice".into(), tenant: "acme".into(), scopes: vec!["admin".into()].into() }
    }

    #[test]
    fn a_verified_token_is_answered_from_the_cache_until_it_expires() {
        let c = TokenCache::default();
        c.put("tok", &alice(), 1_000, 1_030, 0);
        assert_eq!(c.get("tok", 1_000, 0).map(|i| i.tenant), Some("acme".into()));
        assert_eq!(c.get("tok", 1_029, 0).map(|i| i.sub), Some("alice".into()));
        assert!(c.get("tok", 1_030, 0).is_none(), "expired: must be verified (and refused) in full");
        assert!(c.get("other", 1_000, 0).is_none());
    }

    #[test]
    fn an_entry_is_trusted_for_at_most_the_ttl_even_for_a_long_lived_token() {
        let c = TokenCache::default();
        c.put("tok", &alice(), 1_000, 1_000 + 86_400, 0);
        assert!(c.get("tok", 1_000 + TTL_SECS - 1, 0).is_some());
        assert!(c.get("tok", 1_000 + TTL_SECS, 0).is_none());
    }

    #[test]
    fn a_new_key_set_invalidates_every_entry() {
        let c = TokenCache::default();
        c.put("tok", &alice(), 1_000, 2_000, 3);
        assert!(c.get("tok", 1_001, 3).is_some());
        assert!(c.get("tok", 1_001, 4).is_none(), "the key set was replaced since the token was verified");
    }

    #[test]
    fn an_already_expired_token_is_not_kept() {
        let c = TokenCache::default();
        c.put("tok", &alice(), 1_000, 1_000, 0);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_cache_makes_room_instead_of_growing() {
        let c = TokenCache::default();
        for i in 0..CAPACITY {
            c.put(&format!("t{i}"), &alice(), 1_000, 1_000 + 10 + (i % 2) as u64 * 100, 0);
        }
        assert_eq!(c.len(), CAPACITY);
        // Half of them (until 1 010) have expired by 1 050: they make room.
        c.put("new", &alice(), 1_050, 2_000, 0);
        assert_eq!(c.len(), CAPACITY / 2 + 1);
        assert!(c.get("new", 1_050, 0).is_some());
        // Nothing expired: everything goes rather than the map growing past its bound.
        for i in 0..CAPACITY {
            c.put(&format!("u{i}"), &alice(), 1_050, 2_000, 0);
        }
        assert!(c.len() <= CAPACITY);
    }
}
