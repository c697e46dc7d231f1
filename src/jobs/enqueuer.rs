//! Group commit for enqueues: concurrent `POST /api/v1/jobs` requests share one INSERT, one
//! commit and one NOTIFY. Each request still gets its answer only after its row is committed.
//!
//! Nothing waits to fill a batch. A request that finds a free slot is flushed at once (a lone
//! client sees a plain INSERT's latency); requests arriving while [`IN_FLIGHT`] batches are in
//! Postgres queue up and leave together in the next one. Batches grow with load, by themselves.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

use super::queue::{self, Enqueued, NewJob};

/// Batches in Postgres at once: enough to keep it busy while the next batch forms, few
/// enough to leave most of the pool to workers and reads.
const IN_FLIGHT: usize = 2;
/// Rows per statement at most (one statement's arrays stay small; latency stays flat).
const MAX_BATCH: usize = 256;
/// Enqueues waiting for a batch; past this, callers wait to hand theirs over (backpressure).
const QUEUE: usize = 4096;

struct Pending {
    job: NewJob,
    reply: oneshot::Sender<Result<Enqueued, sqlx::Error>>,
}

#[derive(Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
    db: sqlx::PgPool,
    wake: Arc<Notify>,
}

impl Enqueuer {
    /// Starts the batching task on the current runtime; it ends when the last handle is dropped.
    pub fn spawn(db: sqlx::PgPool) -> Enqueuer {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        tokio::spawn(run(db.clone(), rx, wake.clone()));
        Enqueuer { tx, db, wake }
    }

    /// Signalled when this process committed new jobs: its own workers need not wait for the
    /// NOTIFY to come back from Postgres (other processes still get that).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Enqueues one job, committed when this returns `Ok`.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(Pending { job, reply }).await {
            // The batching task is gone (only while the runtime shuts down): insert directly.
            return queue::enqueue(&self.db, &pending.job).await;
        }
        // The task never drops a reply unanswered unless it panicked mid-batch.
        answer.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))
    }
}

async fn run(db: sqlx::PgPool, mut rx: mpsc::Receiver<Pending>, wake: Arc<Notify>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = Vec::with_capacity(rx.len().min(MAX_BATCH - 1) + 1);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let db = db.clone();
        let wake = wake.clone();
        tokio::spawn(async move {
            flush(&db, batch).await;
            wake.notify_one();
            drop(slot);
        });
    }
}

async fn flush(db: &sqlx::PgPool, batch: Vec<Pending>) {
    let (jobs, replies): (Vec<NewJob>, Vec<_>) = batch.into_iter().map(|p| (p.job, p.reply)).unzip();
    match queue::enqueue_many(db, &jobs).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(sqlx::Error::Database(e)) => {
            // Postgres refused the statement, so nothing of it committed. Each job again on its
            // own, concurrently: every caller gets its own answer, one bad row fails no other.
            tracing::debug!(error = %e, batch = jobs.len(), "batched enqueue refused; retrying each job alone");
            let singles = jobs.iter().map(|job| queue::enqueue(db, job));
            for (reply, result) in replies.into_iter().zip(futures::future::join_all(singles).await) {
                let _ = reply.send(result);
            }
        }
        // The connection or the pool failed: the batch may have committed, so retrying could
        // run jobs twice. Everyone gets the failure (a 503; clients retry with their key).
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(replicate(&e)));
            }
        }
    }
}

/// The same failure for each waiter (sqlx errors are not `Clone`).
fn replicate(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::Tls(tls) => sqlx::Error::Io(std::io::Error::other(tls.to_string())),
        other => sqlx::Error::Protocol(format!("batched enqueue failed: {other}")),
    }
}
