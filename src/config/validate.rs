//! Turns raw strings into [`Settings`], collecting every problem instead of stopping at the first.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use super::units::{parse_duration, parse_size};
use super::vars::VARS;
use super::*;

const PLACEHOLDERS: &[&str] = &["change_me", "changeme", "password", "postgres", "admin", "secret", "example", "test"];
const MS: Duration = Duration::from_millis(1);
const SECS: Duration = Duration::from_secs(1);

struct Parser<'a> {
    raw: &'a Raw,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    fn problem(&mut self, var: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem::new(var, message, fix));
    }

    fn string(&self, name: &str) -> String {
        self.raw.get(name).trim().to_string()
    }

    fn optional(&self, name: &str) -> Option<String> {
        Some(self.string(name)).filter(|s| !s.is_empty())
    }

    fn bool(&mut self, name: &str) -> bool {
        match self.string(name).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            other => {
                let msg = format!("`{other}` is not a boolean");
                self.problem(name, msg, "use true or false");
                false
            }
        }
    }

    fn number<T>(&mut self, name: &str, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let s = self.string(name);
        match s.parse::<T>() {
            Ok(n) if n >= min && n <= max => n,
            Ok(n) => {
                self.problem(name, format!("{n} is out of range"), format!("use a value between {min} and {max}"));
                min
            }
            Err(_) => {
                self.problem(
                    name,
                    format!("`{s}` is not a whole number"),
                    format!("use a value between {min} and {max}"),
                );
                min
            }
        }
    }

    fn duration(&mut self, name: &str, bare_unit: Duration, allow_zero: bool) -> Duration {
        match parse_duration(&self.string(name), bare_unit) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.problem(name, "must be greater than zero", "use a positive duration such as 30s");
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(name, e, "use a number or a duration such as 500ms, 30s, 5m");
                Duration::from_secs(1)
            }
        }
    }

    fn size(&mut self, name: &str) -> u64 {
        match parse_size(&self.string(name)) {
            Ok(0) => {
                self.problem(name, "must be greater than zero", "use a size such as 1MiB");
                1
            }
            Ok(n) => n,
            Err(e) => {
                self.problem(name, e, "use bytes or a size such as 1MiB, 100MiB");
                1
            }
        }
    }

    fn socket_addr(&mut self, name: &str) -> SocketAddr {
        let s = self.string(name);
        s.parse().unwrap_or_else(|_| {
            self.problem(name, format!("`{s}` is not an address"), "use IP:PORT, e.g. 0.0.0.0:8080");
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn url(&mut self, name: &str, schemes: &[&str]) -> Option<url::Url> {
        let s = self.optional(name)?;
        match url::Url::parse(&s) {
            Ok(u) if schemes.contains(&u.scheme()) => Some(u),
            Ok(u) => {
                let msg = format!("scheme `{}` is not supported", u.scheme());
                self.problem(name, msg, format!("use a URL starting with {}", schemes.join(":// or ") + "://"));
                None
            }
            // The value may embed a password: never echo it.
            Err(e) => {
                self.problem(
                    name,
                    format!("is not a valid URL ({e})"),
                    format!("use a URL such as {}://host/…", schemes[0]),
                );
                None
            }
        }
    }

    fn policy(&mut self, prefix: &str) -> RatePolicy {
        RatePolicy {
            per_minute: self.number(&format!("{prefix}_PER_MINUTE"), 1, 1_000_000),
            burst: self.number(&format!("{prefix}_BURST"), 1, 1_000_000),
        }
    }
}

fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    PLACEHOLDERS.contains(&v.as_str()) || v.contains("change_me") || v.contains("changeme")
}

pub(super) fn validate(raw: &Raw) -> Result<Settings, Vec<Problem>> {
    let mut p = Parser { raw, problems: Vec::new() };
    let mut warnings = Vec::new();

    let env = match p.string("APP_ENV").as_str() {
        "development" => AppEnv::Development,
        "test" => AppEnv::Test,
        "production" => AppEnv::Production,
        other => {
            let msg = format!("`{other}` is not an environment");
            p.problem("APP_ENV", msg, "use development, test or production");
            AppEnv::Development
        }
    };
    let prod = env == AppEnv::Production;

    let log_format = match p.string("LOG_FORMAT").as_str() {
        "json" => LogFormat::Json,
        "pretty" => LogFormat::Pretty,
        other => {
            let msg = format!("`{other}` is not a log format");
            p.problem("LOG_FORMAT", msg, "use json or pretty");
            LogFormat::Json
        }
    };
    let log_level = p.string("LOG_LEVEL");
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        p.problem(
            "LOG_LEVEL",
            format!("`{log_level}` is not a log filter"),
            "use info, debug, or e.g. ballast=debug,sqlx=warn",
        );
    }

    // --- listeners
    let mut addr = p.socket_addr("HTTP_ADDR");
    if let Some(port) = p.optional("PORT") {
        match port.parse::<u16>() {
            Ok(port) => addr.set_port(port),
            Err(_) => p.problem(
                "PORT",
                format!("`{port}` is not a port"),
                "use a number between 0 and 65535, or leave it empty",
            ),
        }
    }
    let management_addr = p.socket_addr("MANAGEMENT_ADDR");
    if addr.port() != 0 && addr.port() == management_addr.port() {
        p.problem(
            "MANAGEMENT_ADDR",
            "uses the same port as the public listener",
            "give /metrics its own port (default 8081)",
        );
    }

    // --- postgres
    let db_url = p.url("DATABASE_URL", &["postgres", "postgresql"]);
    if p.optional("DATABASE_URL").is_none() {
        p.problem(
            "DATABASE_URL",
            "is required",
            "set it, e.g. postgres://ballast:PASSWORD@db:5432/ballast (or DATABASE_URL_FILE)",
        );
    }
    let allow_insecure = p.bool("DATABASE_ALLOW_INSECURE");
    if let (Some(u), true) = (&db_url, prod) {
        check_password(&mut p, "DATABASE_URL", u);
        let sslmode = u.query_pairs().find(|(k, _)| k == "sslmode").map(|(_, v)| v.to_string());
        let secure = matches!(sslmode.as_deref(), Some("require" | "verify-ca" | "verify-full"));
        if !secure && !allow_insecure {
            p.problem(
                "DATABASE_URL",
                "has no sslmode=require|verify-ca|verify-full in production",
                "append ?sslmode=require (or verify-full), or set DATABASE_ALLOW_INSECURE=true if the network is private",
            );
        } else if !secure {
            warnings.push("DATABASE_ALLOW_INSECURE=true: the database connection is not encrypted".to_string());
        }
    }
    let max_connections = p.number("DATABASE_MAX_CONNECTIONS", 1u32, 1000);
    let min_connections = p.number("DATABASE_MIN_CONNECTIONS", 0u32, 1000);
    if min_connections > max_connections {
        p.problem("DATABASE_MIN_CONNECTIONS", "is above DATABASE_MAX_CONNECTIONS", "lower it or raise the maximum");
    }
    let database = DatabaseSettings {
        url: SecretString::from(p.string("DATABASE_URL")),
        max_connections,
        min_connections,
        acquire_timeout: p.duration("DATABASE_ACQUIRE_TIMEOUT_MS", MS, false),
        statement_timeout: p.duration("DATABASE_STATEMENT_TIMEOUT_MS", MS, true),
        auto_migrate: p.bool("DATABASE_AUTO_MIGRATE"),
    };

    // --- redis
    let redis_required = p.bool("REDIS_REQUIRED");
    let redis_url = p.url("REDIS_URL", &["redis", "rediss"]);
    if redis_required && p.optional("REDIS_URL").is_none() {
        p.problem(
            "REDIS_URL",
            "is required because REDIS_REQUIRED=true",
            "set REDIS_URL, e.g. redis://:PASSWORD@redis:6379/0",
        );
    }
    if let (Some(u), true) = (&redis_url, prod) {
        check_password(&mut p, "REDIS_URL", u);
    }
    if let Some(u) = &redis_url {
        // What the Redis client itself refuses (a bad database number, say) fails here, not
        // at the first connection.
        if let Err(e) = redis::Client::open(u.as_str()) {
            p.problem("REDIS_URL", format!("is not usable by the Redis client: {e}"), "see .env.example for the form");
        }
        if u.scheme() == "rediss" && u.fragment() == Some("insecure") {
            warnings.push("REDIS_URL ends in #insecure: the Redis server's TLS certificate is not verified".into());
        }
    }
    let redis = RedisSettings {
        url: redis_url.map(|u| SecretString::from(u.to_string())),
        required: redis_required,
        pool_size: p.number("REDIS_POOL_SIZE", 1usize, 1000),
        timeout: p.duration("REDIS_TIMEOUT_MS", MS, false),
        key_prefix: p.string("REDIS_KEY_PREFIX"),
    };

    // --- auth
    let jwt_secret = p.optional("JWT_SECRET");
    let jwks_url = p.url("JWT_JWKS_URL", &["https", "http"]);
    match &jwt_secret {
        None if p.optional("JWT_JWKS_URL").is_none() => p.problem(
            "JWT_SECRET",
            "is required (or JWT_JWKS_URL)",
            "generate one with `openssl rand -base64 48` and set JWT_SECRET or JWT_SECRET_FILE",
        ),
        Some(s) if s.chars().count() < 32 => {
            let msg = format!("is {} characters long; at least 32 are required", s.chars().count());
            p.problem("JWT_SECRET", msg, "generate one with `openssl rand -base64 48`")
        }
        Some(s) if prod && is_placeholder(s) => {
            p.problem("JWT_SECRET", "is a placeholder value", "generate one with `openssl rand -base64 48`")
        }
        _ => {}
    }
    if let (Some(u), true) = (&jwks_url, prod) {
        if u.scheme() != "https" {
            p.problem("JWT_JWKS_URL", "must use https in production", "serve the key set over https");
        }
        // A shared identity provider signs tokens for many applications with the same keys.
        if p.optional("JWT_AUDIENCE").is_none() {
            warnings.push(
                "JWT_JWKS_URL without JWT_AUDIENCE: tokens the issuer minted for other applications are accepted"
                    .into(),
            );
        }
    }
    let auth = AuthSettings {
        jwt_secret: jwt_secret.map(SecretString::from),
        jwks_url,
        jwks_refresh: p.duration("JWT_JWKS_REFRESH_SECS", SECS, false),
        issuer: p.optional("JWT_ISSUER"),
        audience: p.optional("JWT_AUDIENCE"),
    };

    // --- health and lifecycle
    let health = HealthSettings {
        check_timeout: p.duration("HEALTH_CHECK_TIMEOUT_MS", MS, false),
        cache_ttl: p.duration("HEALTH_CACHE_MS", MS, true),
    };
    if health.check_timeout >= Duration::from_millis(100) {
        warnings.push(
            "HEALTH_CHECK_TIMEOUT_MS >= 100: probes may answer slower than 100 ms when a dependency hangs".into(),
        );
    }
    let lifecycle = LifecycleSettings {
        startup_timeout: p.duration("STARTUP_DEPENDENCY_TIMEOUT_SECS", SECS, false),
        readiness_delay: p.duration("SHUTDOWN_READINESS_DELAY_SECS", SECS, true),
        shutdown_timeout: p.duration("SHUTDOWN_TIMEOUT_SECS", SECS, false),
        job_drain_timeout: p.duration("JOB_DRAIN_TIMEOUT_SECS", SECS, false),
    };
    if lifecycle.job_drain_timeout >= lifecycle.shutdown_timeout {
        p.problem(
            "JOB_DRAIN_TIMEOUT_SECS",
            "must be below SHUTDOWN_TIMEOUT_SECS",
            "keep the job drain shorter than the shutdown budget (defaults 25 and 30)",
        );
    }

    // --- http
    let max_json_body = p.size("MAX_JSON_BODY_BYTES");
    let cors_origins: Vec<String> =
        p.string("CORS_ALLOWED_ORIGINS").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    for origin in &cors_origins {
        if origin == "*" {
            if prod {
                p.problem(
                    "CORS_ALLOWED_ORIGINS",
                    "`*` is refused in production",
                    "list the allowed origins explicitly",
                );
            }
        } else if url::Url::parse(origin).map(|u| u.origin().is_tuple()).unwrap_or(false) {
            if prod && !origin.starts_with("https://") {
                let msg = format!("origin `{origin}` is not https");
                p.problem("CORS_ALLOWED_ORIGINS", msg, "use https:// origins in production");
            }
        } else {
            let msg = format!("`{origin}` is not an origin");
            p.problem("CORS_ALLOWED_ORIGINS", msg, "use scheme://host[:port], comma-separated");
        }
    }
    let mut trusted_proxies = Vec::new();
    for item in p.string("TRUSTED_PROXIES").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<IpNet>().or_else(|_| item.parse::<IpAddr>().map(IpNet::from)) {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => {
                let msg = format!("`{item}` is not a CIDR or IP");
                p.problem("TRUSTED_PROXIES", msg, "use a comma-separated list such as 10.0.0.0/8,172.16.0.0/12")
            }
        }
    }
    let http = HttpSettings {
        addr,
        management_addr,
        max_json_body: usize::try_from(max_json_body).unwrap_or(usize::MAX),
        max_upload: p.size("MAX_UPLOAD_BYTES"),
        request_timeout: p.duration("REQUEST_TIMEOUT_SECS", SECS, false),
        header_read_timeout: p.duration("HEADER_READ_TIMEOUT_SECS", SECS, false),
        max_concurrent: p.number("MAX_CONCURRENT_REQUESTS", 1usize, 1_000_000),
        hsts: p.bool("HSTS_ENABLED"),
        cors_origins,
        trusted_proxies,
    };

    // --- rate limiting
    let enabled = p.bool("RATE_LIMIT_ENABLED");
    if prod && !enabled {
        p.problem(
            "RATE_LIMIT_ENABLED",
            "false is refused in production",
            "remove it (the limiter is for benchmarks only off)",
        );
    }
    let fail_mode = match p.string("RATE_LIMIT_FAIL_MODE").as_str() {
        "local" => FailMode::Local,
        "open" => FailMode::Open,
        "closed" => FailMode::Closed,
        other => {
            let msg = format!("`{other}` is not a fail mode");
            p.problem("RATE_LIMIT_FAIL_MODE", msg, "use local, open or closed");
            FailMode::Local
        }
    };
    let rate_limit = RateLimitSettings {
        enabled,
        fail_mode,
        default: p.policy("RATE_LIMIT_DEFAULT"),
        uploads: p.policy("RATE_LIMIT_UPLOADS"),
        anonymous: p.policy("RATE_LIMIT_ANONYMOUS"),
        ip_per_second: p.number("RATE_LIMIT_IP_PER_SECOND", 1, 1_000_000),
        ip_burst: p.number("RATE_LIMIT_IP_BURST", 1, 1_000_000),
    };

    // --- jobs
    let jobs = JobSettings {
        concurrency: p.number("WORKER_CONCURRENCY", 0usize, 1000),
        claim_batch: p.number("JOB_CLAIM_BATCH", 1i64, 10_000),
        poll_interval: p.duration("JOB_POLL_INTERVAL_MS", MS, false),
        lease: p.duration("JOB_LEASE_SECS", SECS, false),
        timeout: p.duration("JOB_TIMEOUT_SECS", SECS, false),
        retention: p.duration("JOB_RETENTION", SECS, false),
        maintenance_interval: p.duration("JOB_MAINTENANCE_INTERVAL_SECS", SECS, false),
    };
    if jobs.lease < Duration::from_secs(2) {
        p.problem("JOB_LEASE_SECS", "is shorter than 2s", "use at least a few seconds so heartbeats can renew it");
    }

    // --- storage
    let location = match p.url("STORAGE_URL", &["file", "s3"]) {
        Some(u) if u.scheme() == "file" => StorageLocation::Local(PathBuf::from(u.path())),
        Some(u) => StorageLocation::S3 {
            bucket: u.host_str().unwrap_or_default().to_string(),
            prefix: u.path().trim_matches('/').to_string(),
        },
        None => {
            if p.optional("STORAGE_URL").is_none() {
                p.problem("STORAGE_URL", "is required", "use file:///var/lib/ballast/storage or s3://bucket");
            }
            StorageLocation::Local(PathBuf::from("/var/lib/ballast/storage"))
        }
    };
    let access_key = p.optional("STORAGE_S3_ACCESS_KEY_ID");
    let secret_key = p.optional("STORAGE_S3_SECRET_ACCESS_KEY");
    if access_key.is_some() != secret_key.is_some() {
        p.problem("STORAGE_S3_SECRET_ACCESS_KEY", "only one of the S3 key id / secret is set", "set both or neither");
    }
    if let (Some(s), true) = (&secret_key, prod) {
        if is_placeholder(s) {
            p.problem("STORAGE_S3_SECRET_ACCESS_KEY", "is a placeholder value", "use the real secret key");
        }
    }
    let storage = StorageSettings {
        location,
        s3_endpoint: p.optional("STORAGE_S3_ENDPOINT"),
        s3_region: p.string("STORAGE_S3_REGION"),
        s3_access_key_id: access_key.map(SecretString::from),
        s3_secret_access_key: secret_key.map(SecretString::from),
        s3_allow_http: p.bool("STORAGE_S3_ALLOW_HTTP"),
    };

    // --- production-only hygiene
    if prod {
        if log_format != LogFormat::Json {
            p.problem("LOG_FORMAT", "must be json in production", "set LOG_FORMAT=json (log shippers parse it)");
        }
        if log_level.to_ascii_lowercase().contains("trace") {
            p.problem("LOG_LEVEL", "trace logging is refused in production (it can log payloads)", "use info or debug");
        }
    }

    if !p.problems.is_empty() {
        return Err(p.problems);
    }
    let effective = VARS
        .iter()
        .map(|v| {
            let (value, source) = raw.values.get(v.name).cloned().unwrap_or_default_pair();
            (v.name, redact(v, &value), source.to_string())
        })
        .collect();
    Ok(Settings {
        env,
        service_id: p.string("SERVICE_ID"),
        log_format,
        log_level,
        http,
        database,
        redis,
        auth,
        health,
        lifecycle,
        rate_limit,
        jobs,
        storage,
        warnings,
        effective,
    })
}

/// Production rule for credentials embedded in URLs: long enough and not a placeholder.
fn check_password(p: &mut Parser<'_>, var: &str, u: &url::Url) {
    let Some(password) = u.password() else { return };
    let decoded = percent_decode(password);
    if decoded.chars().count() < 12 {
        p.problem(
            var,
            "the password is shorter than 12 characters",
            "use a generated password (scripts/init.sh makes one)",
        );
    } else if is_placeholder(&decoded) {
        p.problem(var, "the password is a placeholder value", "use a generated password (scripts/init.sh makes one)");
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

trait DefaultPair {
    fn unwrap_or_default_pair(self) -> (String, Source);
}

impl DefaultPair for Option<(String, Source)> {
    fn unwrap_or_default_pair(self) -> (String, Source) {
        self.unwrap_or((String::new(), Source::Default))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, Vec<super::Problem>> {
        let mut env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.entry("CONFIG_DIR".into()).or_insert_with(|| "/nonexistent".into());
        Settings::load_with(&move |k| env.get(k).cloned())
    }

    fn vars_of(r: Result<Settings, Vec<super::Problem>>) -> Vec<String> {
        r.err().unwrap_or_default().into_iter().map(|p| p.var).collect()
    }

    const OK: &[(&str, &str)] =
        &[("DATABASE_URL", "postgres://u@localhost/db"), ("JWT_SECRET", "0123456789abcdef0123456789abcdef")];

    #[test]
    fn a_minimal_development_config_is_valid() {
        let s = load(OK).expect("valid");
        assert_eq!(s.http.max_upload, 100 * 1024 * 1024);
        assert_eq!(s.http.addr.port(), 8080);
    }

    #[test]
    fn port_overrides_the_port_of_http_addr() {
        let mut env = OK.to_vec();
        env.push(("PORT", "9999"));
        assert_eq!(load(&env).expect("valid").http.addr.port(), 9999);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let vars = vars_of(load(&[
            ("JWT_SECRET", "short"),
            ("MAX_UPLOAD_BYTES", "lots"),
            ("REQUEST_TIMEOUT_SECS", "0"),
            ("JOB_DRAIN_TIMEOUT_SECS", "40"),
            ("RATE_LIMIT_FAIL_MODE", "maybe"),
        ]));
        for v in [
            "DATABASE_URL",
            "JWT_SECRET",
            "MAX_UPLOAD_BYTES",
            "REQUEST_TIMEOUT_SECS",
            "JOB_DRAIN_TIMEOUT_SECS",
            "RATE_LIMIT_FAIL_MODE",
        ] {
            assert!(vars.iter().any(|x| x == v), "{v} missing from {vars:?}");
        }
    }

    #[test]
    fn production_refuses_placeholders_weak_passwords_and_plain_connections() {
        let vars = vars_of(load(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://ballast:postgres@db/ballast"),
            ("REDIS_URL", "redis://:short@redis:6379"),
            ("JWT_SECRET", "CHANGE_ME_CHANGE_ME_CHANGE_ME_CHANGE_ME"),
            ("LOG_FORMAT", "pretty"),
            ("CORS_ALLOWED_ORIGINS", "*,http://app.example.com"),
            ("RATE_LIMIT_ENABLED", "false"),
        ]));
        let count = |v: &str| vars.iter().filter(|x| *x == v).count();
        assert_eq!(count("DATABASE_URL"), 2, "weak password + no sslmode: {vars:?}");
        assert_eq!(count("REDIS_URL"), 1);
        assert_eq!(count("JWT_SECRET"), 1);
        assert_eq!(count("LOG_FORMAT"), 1);
        assert_eq!(count("CORS_ALLOWED_ORIGINS"), 2);
        assert_eq!(count("RATE_LIMIT_ENABLED"), 1);
    }

    #[test]
    fn production_accepts_strong_settings_and_insecure_database_only_when_explicit() {
        let base = [
            ("APP_ENV", "production"),
            ("JWT_SECRET", "f1b9c8e7d6a5b4c3d2e1f0a9b8c7d6e5f4a3"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.org"),
        ];
        let mut env = base.to_vec();
        env.push(("DATABASE_URL", "postgres://ballast:Xk2p9Lq7Vr4mZt8w@db/ballast?sslmode=require"));
        assert!(load(&env).is_ok());
        let mut env = base.to_vec();
        env.push(("DATABASE_URL", "postgres://ballast:Xk2p9Lq7Vr4mZt8w@db/ballast"));
        env.push(("DATABASE_ALLOW_INSECURE", "true"));
        let s = load(&env).expect("explicit opt-in");
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn a_redis_url_the_client_refuses_fails_here_and_unverified_tls_is_warned_about() {
        let problems = load(&[("REDIS_URL", "redis://:hunter2hunter2@127.0.0.1:6379/zero")]).err().unwrap_or_default();
        let text: String = problems.iter().map(|p| p.to_string()).collect();
        assert!(text.contains("REDIS_URL") && text.contains("not usable by the Redis client"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let with = |url| {
            load(&[
                ("DATABASE_URL", "postgres://postgres@127.0.0.1/ballast"),
                ("JWT_SECRET", "f1b9c8e7d6a5b4c3d2e1f0a9b8c7d6e5f4a3"),
                ("REDIS_URL", url),
            ])
            .expect("accepted")
        };
        let s = with("rediss://:pw@redis.example.com:6380/0#insecure");
        assert!(s.warnings.iter().any(|w| w.contains("#insecure")), "{:?}", s.warnings);
        let s = with("rediss://:pw@redis.example.com:6380/0");
        assert!(!s.warnings.iter().any(|w| w.contains("#insecure")), "{:?}", s.warnings);
    }

    #[test]
    fn secrets_never_appear_in_problems_or_effective_config() {
        let problems = load(&[("DATABASE_URL", "mysql://u:hunter2hunter2@x/db"), ("JWT_SECRET", "tiny-secret")])
            .err()
            .unwrap_or_default();
        let text: String = problems.iter().map(|p| p.to_string()).collect();
        assert!(!text.contains("hunter2") && !text.contains("tiny-secret"), "{text}");

        let s = load(&[
            ("DATABASE_URL", "postgres://u:hunter2hunter2@x/db"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
        .expect("valid");
        let shown = format!("{:?} {:?}", s.effective, s);
        assert!(!shown.contains("hunter2") && !shown.contains("0123456789abcdef0123456789abcdef"), "{shown}");
    }

    #[test]
    fn file_variables_are_read_and_trimmed_and_conflicts_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwt");
        std::fs::write(&path, "  0123456789abcdef0123456789abcdef-from-file\n").expect("write");
        let path = path.to_string_lossy().to_string();
        let s = load(&[("DATABASE_URL", "postgres://u@x/db"), ("JWT_SECRET_FILE", &path)]).expect("valid");
        use secrecy::ExposeSecret;
        assert_eq!(
            s.auth.jwt_secret.as_ref().map(|x| x.expose_secret().to_string()).as_deref(),
            Some("0123456789abcdef0123456789abcdef-from-file")
        );
        let vars = vars_of(load(&[
            ("DATABASE_URL", "postgres://u@x/db"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_SECRET_FILE", &path),
        ]));
        assert_eq!(vars, vec!["JWT_SECRET"]);
        let vars = vars_of(load(&[("DATABASE_URL", "postgres://u@x/db"), ("JWT_SECRET_FILE", "/nonexistent/jwt")]));
        assert!(vars.contains(&"JWT_SECRET_FILE".to_string()), "{vars:?}");
    }

    #[test]
    fn config_files_layer_under_the_environment_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("default.toml"), "request_timeout_secs = 12\nmax_upload_bytes = \"5MiB\"\n")
            .expect("write");
        std::fs::write(dir.path().join("test.toml"), "request_timeout_secs = 7\n").expect("write");
        let d = dir.path().to_string_lossy().to_string();
        let mut env = OK.to_vec();
        env.extend([("CONFIG_DIR", d.as_str()), ("APP_ENV", "test")]);
        let s = load(&env).expect("valid");
        assert_eq!(s.http.request_timeout.as_secs(), 7);
        assert_eq!(s.http.max_upload, 5 * 1024 * 1024);
        env.push(("REQUEST_TIMEOUT_SECS", "3"));
        assert_eq!(load(&env).expect("valid").http.request_timeout.as_secs(), 3);

        std::fs::write(dir.path().join("default.toml"), "request_timout_secs = 12\n").expect("write");
        assert_eq!(vars_of(load(&env)), vec!["REQUEST_TIMOUT_SECS"]);
    }
}
