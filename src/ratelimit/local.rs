//! In-process limiters (governor): the per-IP flood guard, and the fallback used when Redis
//! cannot decide. Fallback state is per instance, so N instances admit up to N times the
//! policy while Redis is down — the price of staying available.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::PolicyName;
use crate::config::{RateLimitSettings, RatePolicy};

type Keyed<K> =
    RateLimiter<K, governor::state::keyed::DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

fn quota(rate: RatePolicy) -> Quota {
    Quota::per_minute(nz(rate.per_minute)).allow_burst(nz(rate.burst))
}

pub struct Local {
    default: Keyed<String>,
    uploads: Keyed<String>,
    anonymous: Keyed<String>,
}

impl Local {
    pub fn new(s: &RateLimitSettings) -> Local {
        let make = |rate| RateLimiter::keyed(quota(rate)).with_middleware::<StateInformationMiddleware>();
        Local { default: make(s.default), uploads: make(s.uploads), anonymous: make(s.anonymous) }
    }

    /// `(allowed, remaining, retry_after)`.
    pub fn check(&self, policy: PolicyName, _rate: RatePolicy, identity: &str) -> (bool, u64, Duration) {
        let limiter = match policy {
            PolicyName::Default => &self.default,
            PolicyName::Uploads => &self.uploads,
            PolicyName::Anonymous => &self.anonymous,
        };
        match limiter.check_key(&identity.to_string()) {
            Ok(snapshot) => (true, u64::from(snapshot.remaining_burst_capacity()), Duration::ZERO),
            Err(not_until) => (false, 0, not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    pub fn retain_recent(&self) {
        self.default.retain_recent();
        self.uploads.retain_recent();
        self.anonymous.retain_recent();
    }
}

pub struct IpGuard {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl IpGuard {
    pub fn new(per_second: u32, burst: u32) -> IpGuard {
        IpGuard { limiter: RateLimiter::keyed(Quota::per_second(nz(per_second)).allow_burst(nz(burst))) }
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter.check_key(&ip).map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
    }

    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}
