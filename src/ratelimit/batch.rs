//! Decisions of concurrent requests leave for Redis together, as one pipeline.
//!
//! The multiplexed connection would pipeline them too, but its driver task is woken by each
//! command and, being the task woken last, runs right after the sender: every decision went
//! out in its own `writev` (1.9 writes per limited request, measured). Here one task collects
//! the decisions: it takes the first, yields until the worker has run every request that was
//! ready (they queue theirs meanwhile), then sends all of them in one write.

use std::sync::Arc;

use anyhow::Context as _;
use redis::{ErrorKind, Pipeline, Script};
use tokio::sync::{mpsc, oneshot};

use crate::kv::Redis;

/// `(allowed, remaining, retry_after_ms, reset_ms)`, as `gcra.lua` returns them.
pub type Reply = (i64, i64, i64, i64);

/// `"1 9 0 6000"`: the script's four numbers in one string.
fn parse(reply: &str) -> anyhow::Result<Reply> {
    let mut numbers = reply.split(' ').map(str::parse::<i64>);
    match (numbers.next(), numbers.next(), numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(a)), Some(Ok(r)), Some(Ok(t)), Some(Ok(s)), None) => Ok((a, r, t, s)),
        _ => anyhow::bail!("unexpected reply from the rate-limit script: {reply:?}"),
    }
}

/// More than this many in one pipeline would delay the first reply behind the last.
const MAX_BATCH: usize = 128;

struct Pending {
    key: String,
    interval_us: u64,
    burst: u32,
    reply: oneshot::Sender<Result<Reply, Arc<anyhow::Error>>>,
}

/// The sending side; the collecting task ends when this is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the collecting task on the current runtime.
    pub fn start(redis: Redis, script: Script) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(Arc::new(redis), Arc::new(script), rx));
        Batcher { tx }
    }

    /// One GCRA step for `key`. Errors are shared by every decision of a failed pipeline.
    pub async fn decide(&self, key: String, interval_us: u64, burst: u32) -> Result<Reply, Arc<anyhow::Error>> {
        let (reply, answer) = oneshot::channel();
        let gone = || {
            tracing::warn!("rate limiter: the redis pipeline task has stopped, falling back");
            Arc::new(anyhow::anyhow!("the rate limiter's redis pipeline has stopped"))
        };
        self.tx.send(Pending { key, interval_us, burst, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn collect(redis: Arc<Redis>, script: Arc<Script>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        // Deferred until this worker has no ready task left: requests that arrived with this
        // one add their decisions meanwhile.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Sent from a task of its own: the next batch need not wait for this one's replies.
        tokio::spawn(send(redis.clone(), script.clone(), batch));
    }
}

async fn send(redis: Arc<Redis>, script: Arc<Script>, batch: Vec<Pending>) {
    let mut pipe = redis::pipe();
    for p in &batch {
        pipe.cmd("EVALSHA").arg(script.get_hash()).arg(1).arg(&p.key).arg(p.interval_us).arg(p.burst);
    }
    let result = match query(&redis, &pipe).await {
        // A restarted or flushed Redis has forgotten the script: load it and try once more.
        Err(e) if is_noscript(&e) => match load(&redis, &script).await {
            Ok(()) => query(&redis, &pipe).await,
            Err(load_error) => Err(load_error),
        },
        other => other,
    };
    let sent = batch.len();
    match result {
        Ok(replies) if replies.len() == sent => {
            for (p, r) in batch.into_iter().zip(replies) {
                let _ = p.reply.send(parse(&r).map_err(Arc::new));
            }
        }
        Ok(replies) => fail(batch, anyhow::anyhow!("redis answered {} of {sent} decisions", replies.len())),
        Err(e) => fail(batch, e),
    }
}

fn fail(batch: Vec<Pending>, error: anyhow::Error) {
    tracing::warn!(
        error = format!("{error:#}"),
        decisions = batch.len(),
        "rate limiter: redis unavailable, falling back"
    );
    let error = Arc::new(error);
    for p in batch {
        let _ = p.reply.send(Err(error.clone()));
    }
}

async fn query(redis: &Redis, pipe: &Pipeline) -> anyhow::Result<Vec<String>> {
    redis.with_shared(|mut conn| async move { pipe.query_async(&mut conn).await }).await
}

async fn load(redis: &Redis, script: &Script) -> anyhow::Result<()> {
    redis
        .with_shared(|mut conn| async move { script.prepare_invoke().load_async(&mut conn).await })
        .await
        .context("loading the rate-limit script")
        .map(|_| ())
}

fn is_noscript(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<redis::RedisError>().is_some_and(|r| r.kind() == ErrorKind::NoScriptError))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn the_scripts_reply_is_four_integers_or_an_error() {
        assert_eq!(parse("1 9 0 6000").unwrap(), (1, 9, 0, 6000));
        assert_eq!(parse("0 0 1000 60000000000").unwrap(), (0, 0, 1000, 60_000_000_000));
        for bad in ["", "1 2 3", "1 2 3 4 5", "1 2 x 4", "1.5 2 3 4"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
