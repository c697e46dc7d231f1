//! The one list of variables the service reads. `.env.example` must list exactly these
//! (tests/api/config.rs enforces it), so adding a setting starts here.

/// How a variable's value is shown by `check-config` and in logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sensitivity {
    Plain,
    /// The whole value is secret.
    Secret,
    /// A URL whose password part is secret.
    UrlWithPassword,
}

#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub sensitivity: Sensitivity,
}

const fn plain(name: &'static str, default: &'static str) -> Var {
    Var { name, default, sensitivity: Sensitivity::Plain }
}

pub const VARS: &[Var] = &[
    plain("APP_ENV", "development"),
    plain("CONFIG_DIR", "config"),
    plain("HTTP_ADDR", "0.0.0.0:8080"),
    plain("PORT", ""),
    plain("MANAGEMENT_ADDR", "0.0.0.0:8081"),
    plain("SERVICE_ID", "ballast"),
    plain("LOG_FORMAT", "json"),
    plain("LOG_LEVEL", "info"),
    Var { name: "DATABASE_URL", default: "", sensitivity: Sensitivity::UrlWithPassword },
    plain("DATABASE_MAX_CONNECTIONS", "10"),
    plain("DATABASE_MIN_CONNECTIONS", "1"),
    plain("DATABASE_ACQUIRE_TIMEOUT_MS", "3000"),
    plain("DATABASE_STATEMENT_TIMEOUT_MS", "30000"),
    plain("DATABASE_AUTO_MIGRATE", "true"),
    plain("DATABASE_ALLOW_INSECURE", "false"),
    Var { name: "REDIS_URL", default: "", sensitivity: Sensitivity::UrlWithPassword },
    plain("REDIS_REQUIRED", "false"),
    plain("REDIS_POOL_SIZE", "16"),
    plain("REDIS_TIMEOUT_MS", "50"),
    plain("REDIS_KEY_PREFIX", "ballast:"),
    Var { name: "JWT_SECRET", default: "", sensitivity: Sensitivity::Secret },
    plain("JWT_JWKS_URL", ""),
    plain("JWT_JWKS_REFRESH_SECS", "300"),
    plain("JWT_ISSUER", ""),
    plain("JWT_AUDIENCE", ""),
    plain("HEALTH_CHECK_TIMEOUT_MS", "80"),
    plain("HEALTH_CACHE_MS", "1000"),
    plain("STARTUP_DEPENDENCY_TIMEOUT_SECS", "30"),
    plain("SHUTDOWN_READINESS_DELAY_SECS", "5"),
    plain("SHUTDOWN_TIMEOUT_SECS", "30"),
    plain("JOB_DRAIN_TIMEOUT_SECS", "25"),
    plain("MAX_JSON_BODY_BYTES", "1MiB"),
    plain("MAX_UPLOAD_BYTES", "100MiB"),
    plain("REQUEST_TIMEOUT_SECS", "30"),
    plain("HEADER_READ_TIMEOUT_SECS", "10"),
    plain("MAX_CONCURRENT_REQUESTS", "1024"),
    plain("HSTS_ENABLED", "false"),
    plain("CORS_ALLOWED_ORIGINS", ""),
    plain("TRUSTED_PROXIES", ""),
    plain("RATE_LIMIT_ENABLED", "true"),
    plain("RATE_LIMIT_FAIL_MODE", "local"),
    plain("RATE_LIMIT_DEFAULT_PER_MINUTE", "600"),
    plain("RATE_LIMIT_DEFAULT_BURST", "60"),
    plain("RATE_LIMIT_UPLOADS_PER_MINUTE", "30"),
    plain("RATE_LIMIT_UPLOADS_BURST", "5"),
    plain("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60"),
    plain("RATE_LIMIT_ANONYMOUS_BURST", "20"),
    plain("RATE_LIMIT_IP_PER_SECOND", "100"),
    plain("RATE_LIMIT_IP_BURST", "200"),
    plain("WORKER_CONCURRENCY", "4"),
    plain("JOB_CLAIM_BATCH", "100"),
    plain("JOB_POLL_INTERVAL_MS", "1000"),
    plain("JOB_LEASE_SECS", "30"),
    plain("JOB_TIMEOUT_SECS", "300"),
    plain("JOB_RETENTION", "7d"),
    plain("JOB_MAINTENANCE_INTERVAL_SECS", "15"),
    plain("STORAGE_URL", "file:///var/lib/ballast/storage"),
    plain("STORAGE_S3_ENDPOINT", ""),
    plain("STORAGE_S3_REGION", "us-east-1"),
    Var { name: "STORAGE_S3_ACCESS_KEY_ID", default: "", sensitivity: Sensitivity::Secret },
    Var { name: "STORAGE_S3_SECRET_ACCESS_KEY", default: "", sensitivity: Sensitivity::Secret },
    plain("STORAGE_S3_ALLOW_HTTP", "false"),
];

pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}
