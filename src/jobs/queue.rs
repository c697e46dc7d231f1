//! All SQL touching the `jobs` table. Claims and completions work in batches: one
//! `FOR UPDATE SKIP LOCKED` query claims up to a batch, one statement completes many.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// NOTIFY channel that wakes workers on enqueue.
pub const CHANNEL_ENQUEUED: &str = "ballast_jobs";
/// NOTIFY channel carrying the id of a running job whose cancellation was requested.
pub const CHANNEL_CANCEL: &str = "ballast_job_cancel";

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant: String,
    pub kind: String,
    /// queued, running, succeeded, failed or cancelled.
    #[schema(example = "queued")]
    pub status: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub priority: i16,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub cancel_requested: bool,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub request_hash: Option<String>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

const COLUMNS: &str = "id, tenant, kind, status, payload, priority, attempts, max_attempts, run_at, \
     cancel_requested, result, last_error, trace_id, created_at, updated_at, started_at, finished_at, request_hash, idempotency_key";

pub struct NewJob {
    pub tenant: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub run_at: Option<DateTime<Utc>>,
    pub priority: i16,
    pub max_attempts: i32,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub trace_id: Option<String>,
}

pub enum Enqueued {
    Created(Job),
    /// The tenant already used this Idempotency-Key: the original job.
    Existing(Job),
}

/// Inserts a job and wakes workers in one round trip: the NOTIFY rides in the INSERT's
/// RETURNING, so it is delivered when that statement's own transaction commits. Only a replayed
/// Idempotency-Key costs a second statement (a fresh snapshot that sees the original's commit).
pub async fn enqueue(db: &PgPool, new: &NewJob) -> Result<Enqueued, sqlx::Error> {
    let mut out = enqueue_many(db, std::slice::from_ref(new)).await?;
    out.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Inserts many jobs in one statement and one commit (one NOTIFY), results in input order.
/// Concurrent enqueues share it through [`super::enqueuer::Enqueuer`]: per job, a commit and a
/// round trip cost Postgres several times what the row itself does. Keys replayed, including
/// twice within the batch, come back as [`Enqueued::Existing`], read after the insert commits.
pub async fn enqueue_many(db: &PgPool, jobs: &[NewJob]) -> Result<Vec<Enqueued>, sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let inserted: Vec<Job> = sqlx::query_as(&ENQUEUE_SQL)
        .bind(&ids)
        .bind(jobs.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| sqlx::types::Json(&j.payload)).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.idempotency_key.as_deref()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.request_hash.as_deref()).collect::<Vec<_>>())
        .bind(jobs.iter().map(|j| j.trace_id.as_deref()).collect::<Vec<_>>())
        .bind(CHANNEL_ENQUEUED)
        .fetch_all(db)
        .await?;
    let mut created: HashMap<Uuid, Job> = inserted.into_iter().map(|j| (j.id, j)).collect();
    let mut out: Vec<Option<Enqueued>> = ids.iter().map(|id| created.remove(id).map(Enqueued::Created)).collect();

    let replayed: Vec<&NewJob> = jobs.iter().zip(&out).filter(|(_, o)| o.is_none()).map(|(j, _)| j).collect();
    if !replayed.is_empty() {
        let originals: Vec<Job> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE (tenant, idempotency_key) IN \
               (SELECT * FROM UNNEST($1::text[], $2::text[]))"
        ))
        .bind(replayed.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>())
        .bind(replayed.iter().map(|j| j.idempotency_key.as_deref()).collect::<Vec<_>>())
        .fetch_all(db)
        .await?;
        for (slot, new) in out.iter_mut().zip(jobs) {
            if slot.is_none() {
                let original =
                    originals.iter().find(|o| o.tenant == new.tenant && o.idempotency_key == new.idempotency_key);
                *slot = original.cloned().map(Enqueued::Existing);
            }
        }
    }
    // A row neither inserted nor found: its original was deleted between the two statements.
    out.into_iter().map(|o| o.ok_or(sqlx::Error::RowNotFound)).collect()
}

static ENQUEUE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO jobs (id, tenant, kind, payload, run_at, priority, max_attempts, \
           idempotency_key, request_hash, trace_id) \
         SELECT id, tenant, kind, payload, COALESCE(run_at, now()), priority, max_attempts, \
           idempotency_key, request_hash, trace_id \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[], $6::int2[], \
           $7::int4[], $8::text[], $9::text[], $10::text[]) \
           AS t(id, tenant, kind, payload, run_at, priority, max_attempts, idempotency_key, request_hash, trace_id) \
         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING {COLUMNS}, pg_notify($11, '') IS NULL AS notified"
    )
});

pub async fn get(db: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Newest first; `before` is the last id of the previous page (ids are time-ordered UUIDv7,
/// so pages stay stable while new jobs arrive).
pub async fn list(
    db: &PgPool,
    tenant: &str,
    status: Option<&str>,
    kind: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 \
           AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR kind = $3) \
           AND ($4::uuid IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5"
    ))
    .bind(tenant)
    .bind(status)
    .bind(kind)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub enum CancelOutcome {
    Cancelled(Job),
    Requested(Job),
    AlreadyFinished(Job),
    NotFound,
}

pub async fn cancel(db: &PgPool, tenant: &str, id: Uuid) -> Result<CancelOutcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(job): Option<Job> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2 FOR UPDATE"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(CancelOutcome::NotFound);
    };
    let outcome = match job.status.as_str() {
        "queued" => {
            let job = sqlx::query_as(&format!(
                "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now() \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            CancelOutcome::Cancelled(job)
        }
        "running" => {
            let job = sqlx::query_as(&format!(
                "UPDATE jobs SET cancel_requested = true, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL_CANCEL).bind(id.to_string()).execute(&mut *tx).await?;
            CancelOutcome::Requested(job)
        }
        _ => CancelOutcome::AlreadyFinished(job),
    };
    tx.commit().await?;
    Ok(outcome)
}

pub enum DeleteOutcome {
    Deleted,
    NotFinished,
    NotFound,
}

pub async fn delete(db: &PgPool, tenant: &str, id: Uuid) -> Result<DeleteOutcome, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "WITH target AS (SELECT id, status FROM jobs WHERE tenant = $1 AND id = $2), \
              gone AS (DELETE FROM jobs j USING target t WHERE j.id = t.id \
                         AND t.status IN ('succeeded', 'failed', 'cancelled') RETURNING j.id) \
         SELECT CASE WHEN EXISTS (SELECT 1 FROM gone) THEN 'deleted' ELSE (SELECT status FROM target) END",
    )
    .bind(tenant)
    .bind(id)
    .fetch_one(db)
    .await?;
    Ok(match status.as_deref() {
        Some("deleted") => DeleteOutcome::Deleted,
        Some(_) => DeleteOutcome::NotFinished,
        None => DeleteOutcome::NotFound,
    })
}

/// A job handed to this worker.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub tenant: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub trace_id: Option<String>,
}

/// The claim statement ($1 worker, $2 batch size, $3 lease seconds); public so tests can
/// EXPLAIN its generic plan.
pub const CLAIM_SQL: &str = "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
        locked_until = now() + make_interval(secs => $3), started_at = now(), updated_at = now() \
     WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now() \
                          ORDER BY priority DESC, run_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)) \
     RETURNING id, tenant, kind, payload, attempts, max_attempts, trace_id";

/// The batched completion ($1 ids, $2 results as one object keyed by id, $3 worker); public
/// for the same reason.
pub const COMPLETE_SQL: &str = "UPDATE jobs j SET status = 'succeeded', result = $2::jsonb -> (j.id::text), \
        finished_at = now(), updated_at = now(), locked_until = NULL, locked_by = NULL \
     WHERE j.id = ANY($1::uuid[]) AND j.locked_by = $3";

/// Claims up to `n` due jobs for `worker` with a lease of `lease`.
///
/// The ids go through `ARRAY(…)`, evaluated once before the update, so the update finds its
/// rows by primary key whatever the statistics say: as `id IN (subquery)`, the cached generic
/// plan could hash-join the subquery against a sequential scan of the whole table.
pub async fn claim(db: &PgPool, worker: &str, n: i64, lease: Duration) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(CLAIM_SQL).bind(worker).bind(n).bind(lease.as_secs_f64()).fetch_all(db).await
}

/// Marks many jobs succeeded in one statement. Jobs no longer leased to `worker` (released,
/// reaped) are left alone.
///
/// The plan must be a primary-key lookup whatever the table and its statistics look like;
/// each shape tried before scanned the whole table in the benchmarks:
/// - `status = 'running'` let the planner read every running job through the lease index;
///   `locked_by` alone now says "running here" (a constraint keeps it NULL outside `running`);
/// - a join with `unnest(ids, results)`: statistics saying `locked_by` is all NULL made a
///   sequential scan filtered on it look cheaper than a few hundred key lookups;
/// - any plan cached while the table was small kept its sequential scan as the table grew,
///   until the next ANALYZE.
///
/// So ids are matched with `= ANY` (an index scan costs in proportion to the ids, a sequential
/// scan to the table), results come as one object keyed by id, and the statement is planned
/// afresh on every call (unnamed: parse and plan, ~0.05-0.1 ms per batch). Heartbeats and releases,
/// which also match many ids, are planned afresh too.
pub async fn complete_many(db: &PgPool, worker: &str, done: &[(Uuid, serde_json::Value)]) -> Result<u64, sqlx::Error> {
    if done.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = done.iter().map(|d| d.0).collect();
    let results: HashMap<String, &serde_json::Value> =
        done.iter().map(|(id, result)| (id.to_string(), result)).collect();
    let r = sqlx::query(COMPLETE_SQL)
        .bind(&ids)
        .bind(sqlx::types::Json(&results))
        .bind(worker)
        .persistent(false)
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    Retried,
    Failed,
    Cancelled,
    /// The job was no longer ours (lease lost): nothing written.
    Lost,
}

/// Records a failed attempt: back to `queued` after `backoff` when attempts remain and the
/// error is retryable, else `failed`. A job whose cancellation was requested ends `cancelled`.
pub async fn fail(
    db: &PgPool,
    worker: &str,
    id: Uuid,
    error: &str,
    retryable: bool,
    backoff: Duration,
) -> Result<FailOutcome, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE jobs SET \
            status = CASE WHEN cancel_requested THEN 'cancelled' \
                          WHEN $3 AND attempts < max_attempts THEN 'queued' ELSE 'failed' END, \
            run_at = CASE WHEN $3 AND attempts < max_attempts AND NOT cancel_requested \
                          THEN now() + make_interval(secs => $4) ELSE run_at END, \
            finished_at = CASE WHEN cancel_requested OR NOT ($3 AND attempts < max_attempts) THEN now() END, \
            last_error = $5, locked_until = NULL, locked_by = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'running' AND locked_by = $2 RETURNING status",
    )
    .bind(id)
    .bind(worker)
    .bind(retryable)
    .bind(backoff.as_secs_f64())
    .bind(error)
    .fetch_optional(db)
    .await?;
    Ok(match status.as_deref() {
        Some("queued") => FailOutcome::Retried,
        Some("cancelled") => FailOutcome::Cancelled,
        Some(_) => FailOutcome::Failed,
        None => FailOutcome::Lost,
    })
}

/// Returns jobs to the queue without consuming an attempt (graceful shutdown).
pub async fn release(db: &PgPool, worker: &str, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let r = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = GREATEST(attempts - 1, 0), run_at = now(), \
                locked_until = NULL, locked_by = NULL, updated_at = now() \
         WHERE id IN (SELECT id FROM jobs WHERE id = ANY($1) AND status = 'running' AND locked_by = $2 \
                      FOR UPDATE SKIP LOCKED)",
    )
    .bind(ids)
    .bind(worker)
    .persistent(false)
    .execute(db)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL_ENQUEUED).execute(db).await?;
    Ok(r.rows_affected())
}

/// Extends the lease of this worker's running jobs; returns those whose cancellation was
/// requested (a missed NOTIFY is caught here).
///
/// Rows another statement holds are skipped, never waited for: they are being completed,
/// failed or released right now, and the next beat (a third of a lease later) catches any that
/// are not. Waiting made heartbeats and batched completions lock the same rows in different
/// orders and deadlock, and the losing completion's jobs ran twice after their leases expired.
/// The same holds for every statement below that touches many running rows.
pub async fn heartbeat(db: &PgPool, worker: &str, ids: &[Uuid], lease: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "UPDATE jobs SET locked_until = now() + make_interval(secs => $3) \
         WHERE id IN (SELECT id FROM jobs WHERE id = ANY($1) AND status = 'running' AND locked_by = $2 \
                      FOR UPDATE SKIP LOCKED) \
         RETURNING id, cancel_requested",
    )
    .bind(ids)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .persistent(false)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().filter(|r| r.1).map(|r| r.0).collect())
}

#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    pub queued: i64,
    pub running: i64,
    pub oldest_queued_age_secs: f64,
}

/// Depth by status and age of the oldest due job; uses the partial indexes only.
pub async fn stats(db: &PgPool) -> anyhow::Result<QueueStats> {
    let (queued, running, age): (i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'), \
                (SELECT count(*) FROM jobs WHERE status = 'running'), \
                (SELECT EXTRACT(EPOCH FROM now() - min(run_at))::float8 FROM jobs \
                  WHERE status = 'queued' AND run_at <= now())",
    )
    .fetch_one(db)
    .await?;
    Ok(QueueStats { queued, running, oldest_queued_age_secs: age.unwrap_or(0.0).max(0.0) })
}

/// Maintenance, in one transaction under an advisory lock so one instance runs it at a time:
/// expired leases go back to `queued` (or `failed` when out of attempts), and finished jobs
/// older than `retention` are deleted. Returns `None` when another instance holds the lock.
pub async fn maintain(db: &PgPool, retention: Duration) -> Result<Option<(u64, u64, u64)>, sqlx::Error> {
    const LOCK_KEY: i64 = 0x6261_6c6c_6173_7401; // "ballast" + 1
    let mut tx = db.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(LOCK_KEY).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(None);
    }
    let requeued = sqlx::query(
        "UPDATE jobs SET status = 'queued', locked_until = NULL, locked_by = NULL, run_at = now(), updated_at = now(), \
                last_error = 'lease expired (worker lost)' \
         WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND locked_until < now() \
                        AND attempts < max_attempts FOR UPDATE SKIP LOCKED)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let failed = sqlx::query(
        "UPDATE jobs SET status = 'failed', locked_until = NULL, locked_by = NULL, finished_at = now(), \
                updated_at = now(), last_error = 'lease expired (worker lost) on the last attempt' \
         WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND locked_until < now() \
                        AND attempts >= max_attempts FOR UPDATE SKIP LOCKED)",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Ids are UUIDv7 (creation time first), so a job that finished before the cutoff was also
    // created before it: walking the primary key up to the cutoff's id finds every candidate
    // without a finished_at index, which every completion would otherwise have to update.
    let deleted = sqlx::query(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE id < $2 \
           AND status IN ('succeeded', 'failed', 'cancelled') \
           AND finished_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 10000)",
    )
    .bind(retention.as_secs_f64())
    .bind(uuid_v7_floor(
        chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| Utc::now().checked_sub_signed(r))
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if requeued > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL_ENQUEUED).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some((requeued, failed, deleted)))
}

/// The smallest UUIDv7 of the millisecond `t`: every id generated before `t` sorts below it.
pub fn uuid_v7_floor(t: DateTime<Utc>) -> Uuid {
    let ms = t.timestamp_millis().max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v7_floor_sorts_between_ids_made_before_and_after_it() {
        let now = Utc::now();
        let id = Uuid::now_v7();
        assert!(uuid_v7_floor(now - chrono::Duration::seconds(1)) < id);
        assert!(id < uuid_v7_floor(now + chrono::Duration::seconds(1)));
        assert_eq!(uuid_v7_floor(DateTime::<Utc>::MIN_UTC), Uuid::nil());
    }
}
