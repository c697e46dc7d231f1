//! All SQL touching the `jobs` table.

use sqlx::PgPool;

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
