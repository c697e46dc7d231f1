//! Decisions of concurrent requests leave for Redis together, as one pipeline on one
//! connection the limiter owns.
//!
//! A multiplexed connection would pipeline them too, but its driver task is woken by each
//! command and, being the task woken last, runs right after the sender: every decision went
//! out in its own `writev` (1.9 writes per limited request, measured). Here one task collects
//! the decisions: it takes the first, yields until the worker has run every request that was
//! ready (they queue theirs meanwhile), then writes all of them at once. A second task reads
//! the replies, in the order the batches were written, each batch bounded by
//! `REDIS_TIMEOUT_MS` from its write.

use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use super::wire::{self, Frame, Replies};
use crate::kv::Redis;

/// `(allowed, remaining, retry_after_ms, reset_ms)`, as `gcra.lua` returns them.
pub type Reply = (i64, i64, i64, i64);

type Answer = oneshot::Sender<Result<Reply, Arc<anyhow::Error>>>;

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
    reply: Answer,
}

/// The GCRA step Redis runs, and its sha1 for `EVALSHA`.
struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    fn gcra() -> Script {
        const BODY: &str = include_str!("gcra.lua");
        Script { body: BODY, sha: redis::Script::new(BODY).get_hash().to_owned() }
    }
}

/// The sending side; the collecting task ends when this is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the collecting task on the current runtime.
    pub fn start(redis: Redis) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(redis, Script::gcra(), rx));
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

/// The decisions of one write, answered in order by the reader.
struct Flight {
    deadline: Instant,
    answers: Vec<Answer>,
}

/// The writing side of a live connection; the reader closes `flights` when the connection
/// fails, which tells the collector to connect again.
struct Link {
    write: wire::WriteHalf,
    flights: mpsc::UnboundedSender<Flight>,
}

impl Link {
    async fn open(redis: &Redis, script: &Script) -> anyhow::Result<Link> {
        let info = redis.connection_info();
        let deadline = Instant::now() + redis.timeout;
        let (read, mut write) = match timeout_at(deadline, wire::connect(info)).await {
            Ok(connected) => connected?,
            Err(_) => anyhow::bail!("no connection to redis within {:?} (REDIS_TIMEOUT_MS)", redis.timeout),
        };
        let mut replies = Replies::new(read);
        wire::handshake(&info.redis, script.body, &script.sha, &mut replies, &mut write, deadline).await?;
        let (flights, queued) = mpsc::unbounded_channel();
        tokio::spawn(read_replies(replies, queued));
        Ok(Link { write, flights })
    }
}

async fn collect(redis: Redis, script: Script, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut link: Option<Link> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
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
        let live = match link.take() {
            Some(l) if !l.flights.is_closed() => Ok(l),
            _ => Link::open(&redis, &script).await,
        };
        let mut live = match live {
            Ok(l) => l,
            Err(e) => {
                fail(batch.into_iter().map(|p| p.reply), e);
                continue;
            }
        };
        buf.clear();
        for p in &batch {
            wire::evalsha(&mut buf, &script.sha, &p.key, p.interval_us, p.burst);
        }
        // Handed to the reader before the write, so it knows what the replies answer.
        let deadline = Instant::now() + redis.timeout;
        let flight = Flight { deadline, answers: batch.into_iter().map(|p| p.reply).collect() };
        if let Err(mpsc::error::SendError(flight)) = live.flights.send(flight) {
            fail(flight.answers, anyhow::anyhow!("the connection to redis failed"));
            continue;
        }
        match timeout_at(deadline, live.write.write_all(&buf)).await {
            // A failed write leaves the flight to the reader, which fails it by its deadline.
            Ok(Err(e)) => tracing::warn!(error = %e, "rate limiter: writing to redis failed"),
            Err(_) => tracing::warn!("rate limiter: redis took no commands within REDIS_TIMEOUT_MS"),
            Ok(Ok(())) => link = Some(live),
        }
    }
}

/// Answers each flight's decisions from the replies, in order, until the connection fails:
/// then every decision in flight or queued shares the error, and the collector reconnects.
async fn read_replies(mut replies: Replies, mut flights: mpsc::UnboundedReceiver<Flight>) {
    'connection: while let Some(flight) = flights.recv().await {
        let mut answers = flight.answers.into_iter();
        while let Some(answer) = answers.next() {
            match replies.next(flight.deadline, decision).await {
                Ok(Ok(reply)) => {
                    let _ = answer.send(Ok(reply));
                }
                Ok(Err(Refusal::Other(e))) => {
                    let _ = answer.send(Err(Arc::new(e)));
                }
                // A flushed script must be loaded again, which a new connection does.
                Ok(Err(Refusal::NoScript(e))) | Err(e) => {
                    fail(std::iter::once(answer).chain(answers), e);
                    break 'connection;
                }
            }
        }
    }
    flights.close();
    while let Ok(flight) = flights.try_recv() {
        fail(flight.answers, anyhow::anyhow!("the connection to redis failed"));
    }
}

enum Refusal {
    NoScript(anyhow::Error),
    Other(anyhow::Error),
}

fn decision(frame: Frame<'_>) -> Result<Reply, Refusal> {
    match frame {
        Frame::Bulk(Some(text)) => match std::str::from_utf8(text) {
            Ok(text) => parse(text).map_err(Refusal::Other),
            Err(_) => Err(Refusal::Other(anyhow::anyhow!("the rate-limit script answered with bytes, not text"))),
        },
        Frame::Error(e) if e.starts_with(b"NOSCRIPT") => {
            Err(Refusal::NoScript(anyhow::anyhow!("redis has forgotten the rate-limit script (NOSCRIPT)")))
        }
        other => Err(Refusal::Other(anyhow::anyhow!("rate-limit script: redis answered {}", wire::described(&other)))),
    }
}

fn fail(answers: impl IntoIterator<Item = Answer>, error: anyhow::Error) {
    let error = Arc::new(error);
    let mut decisions = 0;
    for answer in answers {
        decisions += 1;
        let _ = answer.send(Err(error.clone()));
    }
    tracing::warn!(error = format!("{error:#}"), decisions, "rate limiter: redis unavailable, falling back");
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
