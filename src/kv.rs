//! Redis pool, for health checks and the like; the rate limiter keeps a connection of its own
//! (`ratelimit::batch`). Redis is optional unless `REDIS_REQUIRED`: every call is bounded by
//! `REDIS_TIMEOUT_MS`, so a hung Redis costs a request at most that long.

use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

#[derive(Clone)]
pub struct Redis {
    pub pool: Pool,
    pub timeout: Duration,
    pub prefix: String,
    client: redis::Client,
}

impl Redis {
    /// Builds the pool without connecting (connections are made lazily).
    pub fn build(settings: &RedisSettings) -> anyhow::Result<Option<Redis>> {
        let Some(url) = &settings.url else { return Ok(None) };
        let mut cfg = Config::from_url(url.expose_secret());
        let mut pool_cfg = PoolConfig::new(settings.pool_size);
        pool_cfg.timeouts =
            Timeouts { wait: Some(settings.timeout), create: Some(settings.timeout), recycle: Some(settings.timeout) };
        cfg.pool = Some(pool_cfg);
        let pool = cfg.create_pool(Some(Runtime::Tokio1)).context("building the redis pool from REDIS_URL")?;
        let client = redis::Client::open(url.expose_secret()).context("parsing REDIS_URL")?;
        Ok(Some(Redis { pool, timeout: settings.timeout, prefix: settings.key_prefix.clone(), client }))
    }

    /// Address, credentials and database from `REDIS_URL`.
    pub fn connection_info(&self) -> &redis::ConnectionInfo {
        self.client.get_connection_info()
    }

    /// One PING, bounded by `timeout`; returns the round-trip time.
    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let fut = async {
            let mut conn = self.pool.get().await.context("getting a redis connection")?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await.context("PING")?;
            anyhow::Ok(())
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| anyhow::anyhow!("redis did not answer within {timeout:?}"))??;
        Ok(started.elapsed())
    }

    /// Waits for Redis at start-up, up to `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.ping(Duration::from_secs(1)).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() + delay < deadline => {
                    tracing::warn!(error = format!("{e:#}"), "redis not reachable yet");
                }
                Err(e) => return Err(e).context(format!("redis unreachable after {deadline:?}")),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// `{prefix}{part}:{part}…`, in one allocation (the limiter makes one per request).
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
        key.push_str(&self.prefix);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        key
    }
}
