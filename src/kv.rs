//! Redis pool, plus one multiplexed connection for the per-request limiter calls. Redis is
//! optional unless `REDIS_REQUIRED`: every call is bounded by `REDIS_TIMEOUT_MS`, so a hung
//! Redis costs a request at most that long.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};
use redis::aio::MultiplexedConnection;
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

#[derive(Clone)]
pub struct Redis {
    pub pool: Pool,
    pub timeout: Duration,
    pub prefix: String,
    client: redis::Client,
    /// Shared by every request: commands issued together leave in one write and their
    /// replies come back in one read, so Redis and the kernel see a pipeline, not N sockets.
    shared: Arc<Mutex<Option<MultiplexedConnection>>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
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
        Ok(Some(Redis {
            pool,
            timeout: settings.timeout,
            prefix: settings.key_prefix.clone(),
            client,
            shared: Arc::default(),
            connecting: Arc::default(),
        }))
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `call` on the shared connection within `REDIS_TIMEOUT_MS`. A failure or time-out
    /// forgets the connection, so the next call reconnects instead of queueing behind a socket
    /// that may be dead or wedged.
    pub async fn with_shared<T, F, Fut>(&self, call: F) -> anyhow::Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async { anyhow::Ok(call(self.multiplexed().await?).await?) };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within {:?} (REDIS_TIMEOUT_MS)", self.timeout)),
        };
        if result.is_err() {
            *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        result
    }

    /// The shared connection, connecting once if there is none.
    async fn multiplexed(&self) -> anyhow::Result<MultiplexedConnection> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let conn = self.client.get_multiplexed_async_connection().await.context("connecting to redis")?;
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
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
