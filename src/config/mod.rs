//! Typed settings, loaded once at start and validated as a whole: every problem is reported
//! together (variable, what is wrong, how to fix it) and the process exits 78 (EX_CONFIG).

mod load;
pub mod units;
mod validate;
pub mod vars;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

pub use load::{load as load_raw, Raw, Source};

/// Exit code for configuration errors (sysexits.h EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Test,
    Production,
}

impl AppEnv {
    pub fn as_str(self) -> &'static str {
        match self {
            AppEnv::Development => "development",
            AppEnv::Test => "test",
            AppEnv::Production => "production",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    Local,
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageLocation {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// One configuration problem, phrased for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub var: String,
    pub message: String,
    pub fix: String,
}

impl Problem {
    pub fn new(var: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { var: var.to_string(), message: message.into(), fix: fix.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}. Fix: {}.", self.var, self.message, self.fix)
    }
}

#[derive(Debug)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    pub auto_migrate: bool,
}

#[derive(Debug)]
pub struct RedisSettings {
    pub url: Option<SecretString>,
    pub required: bool,
    pub pool_size: usize,
    pub timeout: Duration,
    pub key_prefix: String,
}

#[derive(Debug)]
pub struct AuthSettings {
    pub jwt_secret: Option<SecretString>,
    pub jwks_url: Option<url::Url>,
    pub jwks_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub max_json_body: usize,
    pub max_upload: u64,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_concurrent: usize,
    pub hsts: bool,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub fail_mode: FailMode,
    pub default: RatePolicy,
    pub uploads: RatePolicy,
    pub anonymous: RatePolicy,
    pub ip_per_second: u32,
    pub ip_burst: u32,
}

#[derive(Debug)]
pub struct JobSettings {
    pub concurrency: usize,
    pub claim_batch: i64,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub timeout: Duration,
    pub retention: Duration,
    pub maintenance_interval: Duration,
}

#[derive(Debug)]
pub struct LifecycleSettings {
    pub startup_timeout: Duration,
    pub readiness_delay: Duration,
    pub shutdown_timeout: Duration,
    pub job_drain_timeout: Duration,
}

#[derive(Debug)]
pub struct HealthSettings {
    pub check_timeout: Duration,
    pub cache_ttl: Duration,
}

#[derive(Debug)]
pub struct StorageSettings {
    pub location: StorageLocation,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: Option<SecretString>,
    pub s3_secret_access_key: Option<SecretString>,
    pub s3_allow_http: bool,
}

/// The validated configuration. Built only by [`Settings::load`].
#[derive(Debug)]
pub struct Settings {
    pub env: AppEnv,
    pub service_id: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub health: HealthSettings,
    pub lifecycle: LifecycleSettings,
    pub rate_limit: RateLimitSettings,
    pub jobs: JobSettings,
    pub storage: StorageSettings,
    /// Accepted but worth a log line at start (e.g. DATABASE_ALLOW_INSECURE in production).
    pub warnings: Vec<String>,
    /// `(name, shown value, source)` of every variable, secrets redacted.
    pub effective: Vec<(&'static str, String, String)>,
}

impl Settings {
    /// Loads from the process environment and the config files.
    pub fn load() -> Result<Settings, Vec<Problem>> {
        Self::load_with(&|name| std::env::var(name).ok())
    }

    /// Loads with an injected environment (tests).
    pub fn load_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Vec<Problem>> {
        let (raw, mut problems) = load::load(env);
        let result = validate::validate(&raw);
        match result {
            Ok(settings) if problems.is_empty() => Ok(settings),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }
}

/// Shows a value with its secret parts replaced by `[REDACTED]`.
pub fn redact(var: &vars::Var, value: &str) -> String {
    match var.sensitivity {
        _ if value.is_empty() => String::new(),
        vars::Sensitivity::Plain => value.to_string(),
        vars::Sensitivity::Secret => "[REDACTED]".to_string(),
        vars::Sensitivity::UrlWithPassword => redact_url(value),
    }
}

/// Replaces the password of a URL; unparseable URLs are hidden whole.
pub fn redact_url(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) => {
            if u.password().is_none() {
                return u.to_string();
            }
            // Brackets would be percent-encoded inside the URL: substitute after rendering.
            let _ = u.set_password(Some("__REDACTED__"));
            u.to_string().replace("__REDACTED__", "[REDACTED]")
        }
        Err(_) => "[REDACTED: not a valid URL]".to_string(),
    }
}
