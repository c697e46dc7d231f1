//! Postgres pool and migrations. Migrations are embedded in the binary; sqlx's migrator
//! takes a Postgres advisory lock, so replicas starting together apply them once.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The newest migration this binary knows; readiness requires the database to have it.
pub fn latest_migration() -> i64 {
    MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).map(|m| m.version).max().unwrap_or(0)
}

pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    // The URL may hold a password: report the parse error without echoing it.
    let opts = PgConnectOptions::from_str(url).map_err(|e| anyhow::anyhow!("DATABASE_URL is invalid: {e}"))?;
    Ok(opts.application_name("ballast").log_slow_statements(log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Connects, retrying with backoff until `deadline` so containers may start in any order.
pub async fn connect(
    settings: &DatabaseSettings,
    startup_timeout: Duration,
    cancel: &CancellationToken,
) -> anyhow::Result<PgPool> {
    let opts = connect_options(settings.url.expose_secret())?;
    let statement_timeout = settings.statement_timeout.as_millis();
    let pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                sqlx::query(&format!("SET statement_timeout = {statement_timeout}")).execute(conn).await?;
                Ok(())
            })
        });
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        // One plain connection per attempt: its error says why (refused, auth, TLS), where a
        // pool would only report "timed out".
        let remaining = startup_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let attempt = match tokio::time::timeout(remaining, opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {remaining:?}")),
        };
        match attempt {
            Ok(()) => return pool_options.connect_with(opts).await.context("opening the postgres pool"),
            Err(e) if started.elapsed() + delay < startup_timeout => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "postgres not reachable yet");
            }
            Err(e) => {
                anyhow::bail!("postgres unreachable after {startup_timeout:?} (STARTUP_DEPENDENCY_TIMEOUT_SECS): {e}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => anyhow::bail!("interrupted while waiting for postgres"),
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Applies pending migrations (under the migrator's advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    MIGRATOR.run(pool).await.context("applying migrations")?;
    tracing::info!(
        version = latest_migration(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "migrations applied"
    );
    Ok(())
}

pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// Every known migration and whether the database has it.
pub async fn status(pool: &PgPool) -> anyhow::Result<Vec<MigrationState>> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await
        {
            Ok(v) => v,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e).context("reading _sqlx_migrations"),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationState {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect())
}

/// Reverts the newest `steps` applied migrations.
pub async fn migrate_down(pool: &PgPool, steps: usize) -> anyhow::Result<Vec<i64>> {
    let applied: Vec<i64> = status(pool).await?.into_iter().filter(|m| m.applied).map(|m| m.version).collect();
    if applied.is_empty() || steps == 0 {
        return Ok(Vec::new());
    }
    let keep = applied.len().saturating_sub(steps);
    let target = if keep == 0 { 0 } else { applied[keep - 1] };
    MIGRATOR.undo(pool, target).await.context("reverting migrations")?;
    Ok(applied[keep..].iter().rev().copied().collect())
}

/// The applied migration version, `0` when none (or the table does not exist yet).
pub async fn applied_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    match sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
    {
        Ok(v) => Ok(v.unwrap_or(0)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(0),
        Err(e) => Err(e),
    }
}
