//! Rate limiting (DESIGN §7). A per-IP in-process guard runs first, before any Redis work;
//! then the policy's GCRA runs atomically in Redis (one EVALSHA), shared by every instance.
//! When Redis is down or slower than `REDIS_TIMEOUT_MS` the request is decided by
//! `RATE_LIMIT_FAIL_MODE` (an in-process GCRA by default) and a breaker keeps later requests
//! from paying the timeout again until Redis answers.

mod batch;
mod local;
pub mod middleware;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use metrics::{Counter, Histogram};

use crate::config::{FailMode, RateLimitSettings, RatePolicy};
use crate::kv::Redis;
use crate::metrics as m;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyName {
    Default,
    Uploads,
    Anonymous,
}

impl PolicyName {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Default => "default",
            PolicyName::Uploads => "uploads",
            PolicyName::Anonymous => "anonymous",
        }
    }
}

/// The outcome for one request, with what the response headers need.
#[derive(Clone, Debug)]
pub struct Decision {
    pub policy: PolicyName,
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after: Duration,
    pub reset: Duration,
    /// Decided without Redis.
    pub fallback: bool,
}

pub struct Limiter {
    settings: RateLimitSettings,
    redis: Option<Redis>,
    /// Started on the first decision, inside the runtime that serves the requests.
    batcher: OnceLock<batch::Batcher>,
    local: local::Local,
    ip_guard: local::IpGuard,
    /// Unix millis until which Redis is skipped after a failure (the breaker).
    redis_skip_until: AtomicU64,
    /// `RateLimit-Policy` and `X-RateLimit-Limit` of each policy, in `PolicyName` order.
    policy_headers: [(HeaderValue, HeaderValue); 3],
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How long Redis is bypassed after it failed or timed out.
const BREAKER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Outcome {
    Allowed,
    Limited,
    Fallback,
}

/// The decisions counter of a policy and outcome. Handles are made once: a labelled
/// `counter!` builds and hashes its label set on every call, on every limited request.
/// Indexed by declaration order: both arrays list their enum's variants in that order.
fn decisions(policy: PolicyName, outcome: Outcome) -> &'static Counter {
    static HANDLES: LazyLock<[[Counter; 3]; 3]> = LazyLock::new(|| {
        [PolicyName::Default, PolicyName::Uploads, PolicyName::Anonymous].map(|p| {
            ["allowed", "limited", "fallback"]
                .map(|d| metrics::counter!(m::RATE_LIMIT_DECISIONS, "policy" => p.as_str(), "decision" => d))
        })
    });
    &HANDLES[policy as usize][outcome as usize]
}

fn rate_of(settings: &RateLimitSettings, policy: PolicyName) -> RatePolicy {
    match policy {
        PolicyName::Default => settings.default,
        PolicyName::Uploads => settings.uploads,
        PolicyName::Anonymous => settings.anonymous,
    }
}

impl Limiter {
    pub fn new(settings: &RateLimitSettings, redis: Option<Redis>) -> Limiter {
        Limiter {
            settings: settings.clone(),
            redis,
            batcher: OnceLock::new(),
            local: local::Local::new(settings),
            ip_guard: local::IpGuard::new(settings.ip_per_second, settings.ip_burst),
            redis_skip_until: AtomicU64::new(0),
            policy_headers: [PolicyName::Default, PolicyName::Uploads, PolicyName::Anonymous].map(|p| {
                let rate = rate_of(settings, p);
                let policy = format!("\"{}\";q={};w=60", p.as_str(), rate.per_minute);
                (HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")), HeaderValue::from(rate.burst))
            }),
        }
    }

    /// `RateLimit-Policy` and `X-RateLimit-Limit` for `policy`.
    pub fn policy_headers(&self, policy: PolicyName) -> &(HeaderValue, HeaderValue) {
        &self.policy_headers[policy as usize]
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    fn rate(&self, policy: PolicyName) -> RatePolicy {
        rate_of(&self.settings, policy)
    }

    /// The flood guard: per client IP, in process, no I/O.
    pub fn check_ip(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        let r = self.ip_guard.check(ip);
        if r.is_err() {
            static IP_LIMITED: LazyLock<Counter> =
                LazyLock::new(|| metrics::counter!(m::RATE_LIMIT_DECISIONS, "policy" => "ip", "decision" => "limited"));
            IP_LIMITED.increment(1);
        }
        r
    }

    /// True while the breaker keeps requests away from Redis (health reports it).
    pub fn redis_degraded(&self) -> bool {
        self.redis_skip_until.load(Ordering::Relaxed) > now_ms()
    }

    pub async fn check(&self, policy: PolicyName, identity: &str) -> Decision {
        let rate = self.rate(policy);
        let from_redis = match &self.redis {
            // A failed decision was logged once for its whole pipeline; here it trips the breaker.
            Some(redis) if !self.redis_degraded() => match self.check_redis(redis, policy, rate, identity).await {
                Ok(d) => Some(d),
                Err(_) => {
                    self.redis_skip_until.store(now_ms() + BREAKER.as_millis() as u64, Ordering::Relaxed);
                    None
                }
            },
            _ => None,
        };
        let decision = match from_redis {
            Some(d) => d,
            None => self.fallback(policy, rate, identity),
        };
        let outcome = match (decision.allowed, decision.fallback) {
            (false, _) => Outcome::Limited,
            (true, true) => Outcome::Fallback,
            (true, false) => Outcome::Allowed,
        };
        decisions(policy, outcome).increment(1);
        decision
    }

    async fn check_redis(
        &self,
        redis: &Redis,
        policy: PolicyName,
        rate: RatePolicy,
        identity: &str,
    ) -> Result<Decision, std::sync::Arc<anyhow::Error>> {
        let key = redis.key(&["rl", policy.as_str(), identity]);
        let interval_us = 60_000_000u64 / u64::from(rate.per_minute.max(1));
        let batcher = self.batcher.get_or_init(|| batch::Batcher::start(redis.clone()));
        // The round trip, timed (failures and time-outs too): what the limiter adds to a request.
        static SECONDS: LazyLock<Histogram> = LazyLock::new(|| metrics::histogram!(m::RATE_LIMIT_REDIS_DURATION));
        let started = Instant::now();
        let reply = batcher.decide(key, interval_us, rate.burst).await;
        SECONDS.record(started.elapsed().as_secs_f64());
        let (allowed, remaining, retry_ms, reset_ms) = reply?;
        Ok(Decision {
            policy,
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            retry_after: Duration::from_millis(retry_ms.max(0) as u64),
            reset: Duration::from_millis(reset_ms.max(0) as u64),
            fallback: false,
        })
    }

    fn fallback(&self, policy: PolicyName, rate: RatePolicy, identity: &str) -> Decision {
        let base = Decision {
            policy,
            allowed: true,
            remaining: u64::from(rate.burst),
            retry_after: Duration::ZERO,
            reset: Duration::ZERO,
            fallback: true,
        };
        match self.settings.fail_mode {
            FailMode::Open => base,
            FailMode::Closed => Decision { allowed: false, remaining: 0, retry_after: BREAKER, ..base },
            FailMode::Local => {
                let (allowed, remaining, retry_after) = self.local.check(policy, rate, identity);
                Decision { allowed, remaining, retry_after, ..base }
            }
        }
    }

    /// Drops idle per-key state of the in-process limiters.
    pub fn housekeeping(&self) {
        self.local.retain_recent();
        self.ip_guard.retain_recent();
    }
}
