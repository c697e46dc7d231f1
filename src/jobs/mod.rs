//! Durable background jobs on Postgres (DESIGN §6): `queue` owns every job SQL statement,
//! `worker` runs them, `kinds` holds one file per job kind, `api` is the HTTP surface.
//!
//! A new kind is one file implementing [`JobKind`] plus one line in [`Registry::builtin`].

pub mod api;
pub mod enqueuer;
pub mod kinds;
pub mod maintenance;
pub mod queue;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

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

/// What a handler gets besides its payload.
#[derive(Clone)]
pub struct JobContext {
    pub id: Uuid,
    pub tenant: String,
    pub attempt: i32,
    /// Cancelled when the job is cancelled through the API or the process stops draining.
    pub cancel: CancellationToken,
    pub state: AppState,
}

/// Why an attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError { message: message.into(), retryable: true }
    }
    /// Deterministic failures (bad template, missing input): retrying would fail the same way.
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError { message: message.into(), retryable: false }
    }
}

pub type JobResult = Result<serde_json::Value, JobError>;

/// One kind of job. Handlers are async; CPU-heavy work belongs in `spawn_blocking` so the
/// async threads keep serving requests.
pub trait JobKind: Send + Sync + 'static {
    const NAME: &'static str;
    type Payload: DeserializeOwned + Send + 'static;

    /// Checks beyond the payload's shape, run at enqueue time (422 on failure).
    fn validate(_payload: &Self::Payload) -> Result<(), String> {
        Ok(())
    }

    fn run(ctx: JobContext, payload: Self::Payload) -> impl std::future::Future<Output = JobResult> + Send;
}

trait ErasedKind: Send + Sync {
    fn validate(&self, payload: &serde_json::Value) -> Result<(), String>;
    fn run(&self, ctx: JobContext, payload: serde_json::Value) -> BoxFuture<'static, JobResult>;
}

struct Erased<K>(std::marker::PhantomData<K>);

impl<K: JobKind> ErasedKind for Erased<K> {
    fn validate(&self, payload: &serde_json::Value) -> Result<(), String> {
        let typed: K::Payload = serde_json::from_value(payload.clone()).map_err(|e| format!("invalid payload: {e}"))?;
        K::validate(&typed)
    }

    fn run(&self, ctx: JobContext, payload: serde_json::Value) -> BoxFuture<'static, JobResult> {
        Box::pin(async move {
            let typed: K::Payload =
                serde_json::from_value(payload).map_err(|e| JobError::permanent(format!("invalid payload: {e}")))?;
            K::run(ctx, typed).await
        })
    }
}

/// Kinds by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
}

impl Registry {
    pub fn builtin() -> Registry {
        Registry::default()
            .register::<kinds::noop::Noop>()
            .register::<kinds::sleep::Sleep>()
            .register::<kinds::file_digest::FileDigest>()
            .register::<kinds::document_render::DocumentRender>()
    }

    /// The built-in registry, built once (request paths validate against it).
    pub fn shared() -> &'static Registry {
        static SHARED: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::builtin);
        &SHARED
    }

    pub fn register<K: JobKind>(mut self) -> Self {
        self.kinds.insert(K::NAME, Arc::new(Erased::<K>(std::marker::PhantomData)));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// Enqueue-time validation: unknown kinds and bad payloads are refused with the reason.
    pub fn validate(&self, kind: &str, payload: &serde_json::Value) -> Result<(), String> {
        match self.kinds.get(kind) {
            Some(k) => k.validate(payload),
            None => Err(format!("unknown job kind `{kind}`; known kinds: {}", self.names().join(", "))),
        }
    }

    pub fn run(&self, kind: &str, ctx: JobContext, payload: serde_json::Value) -> BoxFuture<'static, JobResult> {
        match self.kinds.get(kind) {
            Some(k) => k.run(ctx, payload),
            None => {
                let msg = format!("no handler for kind `{kind}` in this build");
                Box::pin(async move { Err(JobError::permanent(msg)) })
            }
        }
    }
}
