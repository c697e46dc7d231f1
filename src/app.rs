//! Start-up and the shutdown sequence (DESIGN §9). `build` connects and binds (tests bind
//! port 0 and read the addresses back); `run_until_stopped` serves until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::Verifier;
use crate::build_info;
use crate::config::Settings;
use crate::health::HealthCache;
use crate::http;
use crate::jobs::WorkerStats;
use crate::kv::Redis;
use crate::metrics as m;
use crate::shutdown::{Lifecycle, Signals};
use crate::state::{App, AppState};
use crate::storage::Storage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Public API + management listener + embedded workers.
    Serve,
    /// Workers + management listener only.
    Worker,
}

pub struct Application {
    pub state: AppState,
    mode: Mode,
    public: Option<TcpListener>,
    management: TcpListener,
    signals: Signals,
}

impl Application {
    pub async fn build(settings: Settings, mode: Mode) -> anyhow::Result<Application> {
        let started_at = Instant::now();
        let handle = m::install().context("installing the metrics recorder")?;
        for w in &settings.warnings {
            tracing::warn!(warning = %w, "configuration");
        }
        // From here on a signal is never lost: during the dependency wait it aborts start-up;
        // later in start-up it is kept, and the drain begins as soon as serving does.
        let signals = Signals::listen().context("registering the SIGTERM/SIGINT handlers")?;
        let deadline = settings.lifecycle.startup_timeout;
        let db = crate::db::connect(&settings.database, deadline, signals.first()).await?;
        let redis = Redis::build(&settings.redis)?;
        if let Some(r) = &redis {
            if settings.redis.required {
                r.wait_ready(deadline).await?;
            } else if let Err(e) = r.ping(settings.redis.timeout.max(std::time::Duration::from_millis(500))).await {
                tracing::warn!(error = format!("{e:#}"), "redis unreachable at start: running degraded");
            }
        }
        if settings.database.auto_migrate {
            crate::db::migrate(&db).await?;
        }
        let storage = Storage::open(&settings.storage).await?;

        let public = match mode {
            Mode::Serve => Some(bind("HTTP_ADDR", settings.http.addr).await?),
            Mode::Worker => None,
        };
        let management = bind("MANAGEMENT_ADDR", settings.http.management_addr).await?;

        let started_wall = SystemTime::now();
        metrics::gauge!(m::APP_BUILD_INFO, "version" => build_info::VERSION, "git_sha" => build_info::GIT_SHA).set(1.0);
        metrics::gauge!(m::APP_START_TIME)
            .set(started_wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0));
        metrics::gauge!(m::APP_DRAINING).set(0.0);

        let verifier = Verifier::new(&settings.auth);
        let limiter = crate::ratelimit::Limiter::new(&settings.rate_limit, redis.clone());
        let enqueuer = crate::jobs::enqueuer::Enqueuer::spawn(db.clone());
        let state = AppState(Arc::new(App {
            settings,
            db,
            redis,
            storage,
            metrics: handle,
            lifecycle: Lifecycle::default(),
            health: HealthCache::default(),
            verifier,
            limiter,
            workers: Arc::new(WorkerStats::default()),
            enqueuer,
            started_at,
            started_wall,
        }));
        // A moment for the JWKS so the first RS256/ES256 tokens meet loaded keys; never fatal.
        state.verifier.wait_for_keys(std::time::Duration::from_secs(2)).await;
        Ok(Application { state, mode, public, management, signals })
    }

    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management.local_addr().ok()
    }

    /// Serves until SIGTERM/SIGINT, then drains: readiness 503 → delay → stop accepting and
    /// finish in-flight requests → drain jobs → close pools → one summary line.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let state = self.state.clone();
        let s = &state.settings;
        let lifecycle = &state.lifecycle;
        tracing::info!(
            mode = ?self.mode,
            http_addr = self.public_addr().map(|a| a.to_string()).unwrap_or_default(),
            management_addr = self.management_addr().map(|a| a.to_string()).unwrap_or_default(),
            version = build_info::VERSION,
            startup_ms = state.started_at.elapsed().as_millis() as u64,
            "listening"
        );

        let public_task: Option<JoinHandle<http::server::ServeOutcome>> = self.public.map(|listener| {
            tokio::spawn(http::server::serve(
                "public",
                listener,
                http::public_router(state.clone()),
                s.http.header_read_timeout,
                lifecycle.stop_accepting.clone(),
                s.lifecycle.shutdown_timeout,
            ))
        });
        // The management listener outlives the drain so probes and scrapes see it happen.
        let management_stop = tokio_util::sync::CancellationToken::new();
        let management_task = tokio::spawn(http::server::serve(
            "management",
            self.management,
            http::management_router(state.clone()),
            s.http.header_read_timeout,
            management_stop.clone(),
            std::time::Duration::from_secs(1),
        ));
        let workers = crate::jobs::worker::start(state.clone(), s.jobs.concurrency);
        let housekeeping = {
            let state = state.clone();
            tokio::spawn(async move {
                // The recorder keeps every histogram sample until it is drained into buckets;
                // without upkeep a process that nobody scrapes grows with every request.
                let mut upkeep = tokio::time::interval(std::time::Duration::from_secs(5));
                let mut limiter = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = upkeep.tick() => state.metrics.run_upkeep(),
                        _ = limiter.tick() => state.limiter.housekeeping(),
                    }
                }
            })
        };

        let signal = self.signals.received().await;
        let drain_started = Instant::now();
        lifecycle.start_draining();
        tracing::info!(signal, delay_s = s.lifecycle.readiness_delay.as_secs_f64(), "shutdown: draining");
        // A second signal means "now": exit at once, non-zero.
        let signals = self.signals.clone();
        tokio::spawn(async move {
            signals.again().await;
            tracing::warn!("second signal: exiting immediately");
            crate::telemetry::flush();
            std::process::exit(130);
        });

        tokio::time::sleep(s.lifecycle.readiness_delay).await;
        lifecycle.stop_accepting.cancel();
        lifecycle.stop_claiming.cancel();
        let http_drain = async {
            match public_task {
                Some(t) => t.await.map(|o| o.abandoned).unwrap_or(true),
                None => false,
            }
        };
        let (abandoned, jobs) = tokio::join!(http_drain, workers.drain(s.lifecycle.job_drain_timeout));
        housekeeping.abort();
        management_stop.cancel();
        let _ = management_task.await;
        state.db.close().await;

        tracing::info!(
            signal,
            requests_drained = lifecycle.drained_requests.load(std::sync::atomic::Ordering::Relaxed),
            connections_abandoned = abandoned,
            jobs_finished = jobs.finished,
            jobs_released = jobs.released,
            drain_ms = drain_started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
        Ok(())
    }
}

async fn bind(var: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {var}={addr}"))
}
