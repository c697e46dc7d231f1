//! The one shared state, built in `app::Application::build` and nowhere else.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::Verifier;
use crate::config::Settings;
use crate::health::HealthCache;
use crate::jobs::enqueuer::Enqueuer;
use crate::jobs::WorkerStats;
use crate::kv::Redis;
use crate::ratelimit::Limiter;
use crate::shutdown::Lifecycle;
use crate::storage::Storage;

pub struct App {
    pub settings: Settings,
    pub db: PgPool,
    pub redis: Option<Redis>,
    pub storage: Storage,
    pub metrics: PrometheusHandle,
    pub lifecycle: Lifecycle,
    pub health: HealthCache,
    pub verifier: Verifier,
    pub limiter: Limiter,
    pub workers: Arc<WorkerStats>,
    pub enqueuer: Enqueuer,
    pub started_at: Instant,
    pub started_wall: SystemTime,
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
