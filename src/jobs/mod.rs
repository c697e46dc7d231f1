//! Durable background jobs on Postgres: the queue (all job SQL), the worker pool, the kinds.

pub mod api;
pub mod queue;
pub mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};

/// Live counters of this process's worker pool, read by health and metrics.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub busy: AtomicUsize,
    pub size: AtomicUsize,
}

impl WorkerStats {
    pub fn snapshot(&self) -> (usize, usize) {
        (self.busy.load(Ordering::Relaxed), self.size.load(Ordering::Relaxed))
    }
}
