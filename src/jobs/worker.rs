//! The worker pool: one dispatcher claims batches (woken by NOTIFY, with a poll fallback),
//! each job runs in its own task (a panic fails the attempt, not the worker), outcomes are
//! written back in batches, and a heartbeat renews leases and picks up cancellations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::queue::{self, Claimed, FailOutcome};
use super::{JobContext, JobError, Registry};
use crate::metrics as m;
use crate::state::AppState;

#[derive(Debug, Default, Clone, Copy)]
pub struct DrainSummary {
    pub finished: u64,
    pub released: u64,
}

struct RunningJob {
    cancel: CancellationToken,
    kind: String,
}

/// Running jobs of this process by id.
type Running = Arc<Mutex<HashMap<Uuid, RunningJob>>>;

struct Outcome {
    id: Uuid,
    kind: String,
    result: Result<serde_json::Value, JobError>,
    attempts: i32,
    elapsed: Duration,
}

pub struct WorkerPool {
    state: AppState,
    worker_id: String,
    running: Running,
    tasks: Vec<JoinHandle<()>>,
    completer: Option<JoinHandle<()>>,
    job_tasks: Arc<tokio_util::task::TaskTracker>,
    stop_background: CancellationToken,
}

fn lock(running: &Running) -> std::sync::MutexGuard<'_, HashMap<Uuid, RunningJob>> {
    // A poisoned map only means a panic elsewhere while holding it; the data is still sound.
    running.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exponential backoff with full jitter, capped at 10 minutes: 1 s, 2 s, 4 s … × [0.5, 1).
pub fn backoff(attempt: i32) -> Duration {
    let base = 2f64.powi(attempt.clamp(1, 20) - 1).min(600.0);
    Duration::from_secs_f64(base * rand::thread_rng().gen_range(0.5..1.0))
}

pub fn start(state: AppState, concurrency: usize) -> WorkerPool {
    let worker_id = format!(
        "{}:{}:{}",
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into()),
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    state.workers.size.store(concurrency, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!(m::WORKER_POOL_SIZE).set(concurrency as f64);
    let stop_background = CancellationToken::new();
    let running: Running = Arc::default();
    let job_tasks = Arc::new(tokio_util::task::TaskTracker::new());
    let mut pool = WorkerPool {
        state: state.clone(),
        worker_id: worker_id.clone(),
        running: running.clone(),
        tasks: Vec::new(),
        completer: None,
        job_tasks: job_tasks.clone(),
        stop_background: stop_background.clone(),
    };
    // Maintenance runs wherever the database is reachable, even with no workers.
    pool.tasks.push(super::maintenance::spawn(state.clone(), stop_background.clone()));
    if concurrency == 0 {
        return pool;
    }
    tracing::info!(worker_id, concurrency, "worker pool started");

    let wake = state.enqueuer.wake();
    let capacity = Arc::new(Notify::new());
    let (tx, rx) = mpsc::unbounded_channel::<Outcome>();
    pool.completer =
        Some(tokio::spawn(completer(state.clone(), worker_id.clone(), rx, running.clone(), capacity.clone())));
    pool.tasks.push(tokio::spawn(listener(state.clone(), wake.clone(), running.clone(), stop_background.clone())));
    pool.tasks.push(tokio::spawn(heartbeat(
        state.clone(),
        worker_id.clone(),
        running.clone(),
        stop_background.clone(),
    )));
    let reserved = Arc::new(AtomicUsize::new(0));
    for _ in 0..CLAIM_STREAMS {
        let d = Dispatch {
            wake: wake.clone(),
            capacity: capacity.clone(),
            running: running.clone(),
            reserved: reserved.clone(),
            tx: tx.clone(),
            job_tasks: job_tasks.clone(),
        };
        pool.tasks.push(tokio::spawn(dispatcher(state.clone(), worker_id.clone(), concurrency, d)));
    }
    pool
}

struct Dispatch {
    wake: Arc<Notify>,
    capacity: Arc<Notify>,
    running: Running,
    /// Slots promised to claims still in Postgres, so streams never claim past `concurrency`.
    reserved: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Outcome>,
    job_tasks: Arc<tokio_util::task::TaskTracker>,
}

impl Dispatch {
    /// Slots neither running nor promised to a claim in flight.
    fn free(&self, running: &HashMap<Uuid, RunningJob>, concurrency: usize) -> usize {
        concurrency.saturating_sub(running.len() + self.reserved.load(Ordering::Relaxed))
    }
}

/// How long enqueue wake-ups arriving right after a claim are gathered into the next one.
const COALESCE: Duration = Duration::from_millis(1);
/// Claim statements a pool keeps in Postgres at once. With one, every claim waiting for CPU
/// behind a stream of enqueues leaves the pool without new work; two overlap those waits.
const CLAIM_STREAMS: usize = 2;

async fn dispatcher(state: AppState, worker_id: String, concurrency: usize, d: Dispatch) {
    let stop = state.lifecycle.stop_claiming.clone();
    let registry = Registry::shared();
    let s = &state.settings.jobs;
    let mut last_claim = Instant::now();
    loop {
        if stop.is_cancelled() {
            break;
        }
        // Free slots are counted and reserved under the running map's lock, so two streams
        // never both claim the same slots.
        let want = {
            let running = lock(&d.running);
            let want = d.free(&running, concurrency).min(usize::try_from(s.claim_batch).unwrap_or(usize::MAX));
            d.reserved.fetch_add(want, Ordering::Relaxed);
            want
        };
        let mut full_batch = false;
        if want > 0 {
            last_claim = Instant::now();
            // The reservation ends once the claimed jobs are in the running map (or none are).
            match queue::claim(&state.db, &worker_id, want as i64, s.lease).await {
                Ok(jobs) => {
                    full_batch = jobs.len() == want;
                    for job in jobs {
                        spawn_job(&state, registry, &d, job);
                    }
                    d.reserved.fetch_sub(want, Ordering::Relaxed);
                }
                Err(e) => {
                    d.reserved.fetch_sub(want, Ordering::Relaxed);
                    tracing::warn!(error = %e, "claiming jobs failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            }
        }
        let at_capacity = d.free(&lock(&d.running), concurrency) == 0;
        if full_batch && !at_capacity {
            continue; // more may be waiting
        }
        let woken_by_enqueue = tokio::select! {
            _ = d.wake.notified(), if !at_capacity => true,
            _ = d.capacity.notified() => false,
            _ = tokio::time::sleep(s.poll_interval) => false,
            _ = stop.cancelled() => break,
        };
        // Under a stream of enqueues every NOTIFY would start a claim of one or two jobs, and
        // those small statements would cost Postgres more than the jobs. Wake-ups that come
        // right after a claim wait out COALESCE and claim what arrived meanwhile; a wake-up
        // after a quiet spell claims at once.
        let since = last_claim.elapsed();
        if woken_by_enqueue && since < COALESCE {
            tokio::select! {
                _ = tokio::time::sleep(COALESCE - since) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
    tracing::info!("workers stopped claiming");
}

fn spawn_job(state: &AppState, registry: &Registry, d: &Dispatch, job: Claimed) {
    let cancel = CancellationToken::new();
    lock(&d.running).insert(job.id, RunningJob { cancel: cancel.clone(), kind: job.kind.clone() });
    state.workers.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ctx =
        JobContext { id: job.id, tenant: job.tenant.clone(), attempt: job.attempts, cancel, state: state.clone() };
    let span = tracing::info_span!(
        "job", job_id = %job.id, kind = %job.kind, attempt = job.attempts,
        trace_id = job.trace_id.as_deref().unwrap_or("")
    );
    let timeout = state.settings.jobs.timeout;
    let run = registry.run(&job.kind, ctx, job.payload.clone());
    let tx = d.tx.clone();
    d.job_tasks.spawn(
        async move {
            let started = Instant::now();
            // Its own task: a panic in the handler surfaces as a JoinError, not a dead worker.
            let handle = tokio::spawn(async move { tokio::time::timeout(timeout, run).await }.in_current_span());
            let result = match handle.await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(JobError::retryable(format!("timed out after {} s", timeout.as_secs()))),
                Err(e) if e.is_panic() => Err(JobError::retryable("the handler panicked")),
                Err(_) => Err(JobError::retryable("the handler was aborted")),
            };
            match &result {
                Ok(_) => tracing::debug!(duration_ms = started.elapsed().as_millis() as u64, "job succeeded"),
                Err(e) => tracing::warn!(error = %e.message, retryable = e.retryable, "job attempt failed"),
            }
            let _ = tx.send(Outcome {
                id: job.id,
                kind: job.kind,
                result,
                attempts: job.attempts,
                elapsed: started.elapsed(),
            });
        }
        .instrument(span),
    );
}

/// Writes outcomes back, batching successes into one statement.
async fn completer(
    state: AppState,
    worker_id: String,
    mut rx: mpsc::UnboundedReceiver<Outcome>,
    running: Running,
    capacity: Arc<Notify>,
) {
    const MAX_BATCH: usize = 512;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Group completion: jobs finishing together share one statement. Yield while more
        // outcomes keep arriving (no fixed delay: a lone job is written at once); otherwise
        // every wake-up would write the one or two outcomes it found.
        while batch.len() < MAX_BATCH {
            tokio::task::yield_now().await;
            let before = batch.len();
            batch.extend(std::iter::from_fn(|| rx.try_recv().ok()).take(MAX_BATCH - before));
            if batch.len() == before {
                break;
            }
        }
        // Successes: (id, result) for the statement, and each one's kind for its counter.
        let (mut done, mut kinds) = (Vec::new(), Vec::new());
        for o in batch.drain(..) {
            metrics::histogram!(m::JOB_DURATION, "kind" => o.kind.clone()).record(o.elapsed.as_secs_f64());
            match o.result {
                Ok(value) => {
                    done.push((o.id, value));
                    kinds.push(o.kind);
                }
                Err(e) => {
                    let outcome =
                        queue::fail(&state.db, &worker_id, o.id, &e.message, e.retryable, backoff(o.attempts)).await;
                    let label = match outcome {
                        Ok(FailOutcome::Retried) => Some("retried"),
                        Ok(FailOutcome::Failed) => Some("failed"),
                        Ok(FailOutcome::Cancelled) => Some("cancelled"),
                        // Released by the drain or reaped elsewhere: counted where that happened.
                        Ok(FailOutcome::Lost) => None,
                        Err(err) => {
                            // The lease will expire and the reaper requeues it: at-least-once holds.
                            tracing::error!(job_id = %o.id, error = %err, "recording a failed attempt failed");
                            None
                        }
                    };
                    if let Some(label) = label {
                        metrics::counter!(m::JOBS_FINISHED, "kind" => o.kind, "outcome" => label).increment(1);
                    }
                    forget(&state, &running, o.id);
                }
            }
        }
        if !done.is_empty() {
            if let Err(e) = queue::complete_many(&state.db, &worker_id, &done).await {
                tracing::error!(error = %e, jobs = done.len(), "recording successes failed; leases will expire and jobs re-run");
            }
            for ((id, _), kind) in done.into_iter().zip(kinds) {
                metrics::counter!(m::JOBS_FINISHED, "kind" => kind, "outcome" => "succeeded").increment(1);
                forget(&state, &running, id);
            }
        }
        capacity.notify_one();
    }
}

fn forget(state: &AppState, running: &Running, id: Uuid) {
    if lock(running).remove(&id).is_some() {
        state.workers.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// LISTEN for enqueues (wake the dispatcher) and cancellations (cancel the running job).
async fn listener(state: AppState, wake: Arc<Notify>, running: Running, stop: CancellationToken) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&state.db).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; polling until it is back");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if let Err(e) = listener.listen_all([queue::CHANNEL_ENQUEUED, queue::CHANNEL_CANCEL]).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(n) if n.channel() == queue::CHANNEL_CANCEL => {
                        if let Ok(id) = n.payload().parse::<Uuid>() {
                            if let Some(job) = lock(&running).get(&id) {
                                job.cancel.cancel();
                            }
                        }
                    }
                    Ok(_) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

async fn heartbeat(state: AppState, worker_id: String, running: Running, stop: CancellationToken) {
    let lease = state.settings.jobs.lease;
    let mut tick = tokio::time::interval(lease / 3);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let ids: Vec<Uuid> = lock(&running).keys().copied().collect();
        match queue::heartbeat(&state.db, &worker_id, &ids, lease).await {
            Ok(cancelled) => {
                let map = lock(&running);
                for id in cancelled {
                    if let Some(job) = map.get(&id) {
                        job.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease heartbeat failed"),
        }
    }
}

impl WorkerPool {
    /// Shutdown step 4: claiming has stopped; running jobs get `timeout` to finish, the rest
    /// are released to `queued` without consuming an attempt and their handlers cancelled.
    pub async fn drain(mut self, timeout: Duration) -> DrainSummary {
        self.job_tasks.close();
        let in_flight = lock(&self.running).len();
        if in_flight > 0 {
            tracing::info!(in_flight, timeout_s = timeout.as_secs(), "waiting for running jobs");
        }
        let finished_in_time = tokio::time::timeout(timeout, self.job_tasks.wait()).await.is_ok();
        let mut released = 0;
        if !finished_in_time {
            let leftovers: Vec<(Uuid, RunningJob)> = lock(&self.running).drain().collect();
            let ids: Vec<Uuid> = leftovers.iter().map(|(id, _)| *id).collect();
            match queue::release(&self.state.db, &self.worker_id, &ids).await {
                Ok(n) => released = n,
                Err(e) => tracing::error!(error = %e, "releasing jobs failed; their leases will expire"),
            }
            for (id, job) in &leftovers {
                job.cancel.cancel();
                tracing::info!(job_id = %id, kind = %job.kind, "job released to the queue");
                metrics::counter!(m::JOBS_FINISHED, "kind" => job.kind.clone(), "outcome" => "released").increment(1);
            }
            self.state.workers.busy.store(0, std::sync::atomic::Ordering::Relaxed);
            // Handlers were told to stop; give them a moment, their outcomes no longer count.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.job_tasks.wait()).await;
        }
        self.stop_background.cancel();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        // The dispatcher held the outcome sender: once it and the job tasks are gone, the
        // completer flushes the last batch and ends.
        if let Some(c) = self.completer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        DrainSummary { finished: (in_flight as u64).saturating_sub(released), released }
    }
}
