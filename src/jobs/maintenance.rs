//! Runs in every instance; the advisory lock in `queue::maintain` lets one at a time work.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::queue;
use crate::state::AppState;

pub fn spawn(state: AppState, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.settings.jobs.maintenance_interval;
        // Spread instances out so they don't all wake together.
        let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + jitter, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match queue::maintain(&state.db, state.settings.jobs.retention).await {
                Ok(Some((requeued, failed, deleted))) if requeued + failed + deleted > 0 => {
                    tracing::info!(
                        requeued,
                        failed,
                        deleted,
                        "job maintenance: expired leases reaped, old jobs removed"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "job maintenance failed; will retry"),
            }
        }
    })
}
