//! Command line: one binary, subcommands (DESIGN §2).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::app::{Application, Mode};
use crate::config::{self, Settings, EX_CONFIG};
use crate::{auth, db, telemetry};

#[derive(Parser, Debug)]
#[command(name = "ballast", version, about = "HTTP API service with durable jobs and files, operations built in")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// HTTP API + management listener + embedded worker pool.
    Serve,
    /// Worker pool + management listener (health, metrics).
    Worker,
    /// Apply, revert or list migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Validate the configuration exactly as `serve` would; print it with secrets redacted.
    CheckConfig,
    /// Probe /health/live of the running process (for Docker HEALTHCHECK; no curl needed).
    Healthcheck {
        /// Defaults to http://127.0.0.1:<MANAGEMENT_ADDR port>/health/live.
        #[arg(long)]
        url: Option<String>,
    },
    /// Mint a JWT signed with JWT_SECRET.
    Token {
        #[arg(long)]
        sub: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migration(s).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// Revert every applied migration.
        #[arg(long)]
        all: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let code = match cli.command {
        Command::Serve => run_service(Mode::Serve),
        Command::Worker => run_service(Mode::Worker),
        Command::CheckConfig => check_config(),
        Command::Migrate { action } => migrate(action),
        Command::Healthcheck { url } => healthcheck(url),
        Command::Token { sub, org, scopes, ttl } => token(&sub, org.as_deref(), &scopes, &ttl),
    };
    telemetry::flush();
    code
}

fn load_or_report() -> Result<Settings, i32> {
    Settings::load().map_err(|problems| {
        report_problems(&problems);
        EX_CONFIG
    })
}

fn report_problems(problems: &[config::Problem]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "configuration invalid: {} problem(s)", problems.len());
    for p in problems {
        let _ = writeln!(err, "  - {p}");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        1
    })
}

fn run_service(mode: Mode) -> i32 {
    let settings = match load_or_report() {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init(settings.log_format, &settings.log_level);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async move {
        let app = Application::build(settings, mode).await?;
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn check_config() -> i32 {
    match Settings::load() {
        Ok(s) => {
            println!("configuration valid (APP_ENV={})", s.env.as_str());
            for w in &s.warnings {
                println!("warning: {w}");
            }
            for (name, value, source) in &s.effective {
                println!("{name}={value}    # {source}");
            }
            0
        }
        Err(problems) => {
            report_problems(&problems);
            EX_CONFIG
        }
    }
}

/// Only what a command needs: `migrate` and `token` must not demand the full service config.
fn raw_var(name: &str) -> String {
    let (raw, _) = config::load_raw(&|n| std::env::var(n).ok());
    raw.get(name).to_string()
}

fn migrate(action: MigrateAction) -> i32 {
    let url = raw_var("DATABASE_URL");
    if url.is_empty() {
        eprintln!("configuration invalid: DATABASE_URL is required");
        return EX_CONFIG;
    }
    telemetry::init(config::LogFormat::Pretty, "warn");
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result: anyhow::Result<()> = rt.block_on(async move {
        let opts = db::connect_options(&url)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to DATABASE_URL: {e}"))?;
        match action {
            MigrateAction::Up => {
                db::migrate(&pool).await?;
                println!("migrations applied; database at version {}", db::applied_version(&pool).await?);
            }
            MigrateAction::Down { steps, all } => {
                let steps = if all { usize::MAX } else { steps };
                let reverted = db::migrate_down(&pool, steps).await?;
                if reverted.is_empty() {
                    println!("nothing to revert");
                }
                for v in reverted {
                    println!("reverted {v}");
                }
            }
            MigrateAction::Status => {
                let all = db::status(&pool).await?;
                for m in &all {
                    println!("{} {:<8} {}", m.version, if m.applied { "applied" } else { "pending" }, m.description);
                }
                let pending = all.iter().filter(|m| !m.applied).count();
                println!("{} applied, {} pending", all.len() - pending, pending);
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn healthcheck(url: Option<String>) -> i32 {
    let url = url.unwrap_or_else(|| {
        let addr = raw_var("MANAGEMENT_ADDR");
        let port = addr.parse::<SocketAddr>().map(|a| a.port()).unwrap_or(8081);
        format!("http://127.0.0.1:{port}/health/live")
    });
    match probe(&url, Duration::from_secs(3)) {
        Ok(200..=299) => 0,
        Ok(code) => {
            eprintln!("unhealthy: {url} answered {code}");
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e:#}");
            1
        }
    }
}

/// A minimal HTTP/1.1 GET: the runtime image has no curl, and this needs no TLS.
fn probe(url: &str, timeout: Duration) -> anyhow::Result<u16> {
    let u = url::Url::parse(url)?;
    anyhow::ensure!(u.scheme() == "http", "only http:// URLs can be probed");
    let host = u.host_str().ok_or_else(|| anyhow::anyhow!("URL has no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: ballast-healthcheck\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow::anyhow!("not an HTTP response"))
}

fn token(sub: &str, org: Option<&str>, scopes: &[String], ttl: &str) -> i32 {
    let (raw, problems) = config::load_raw(&|n| std::env::var(n).ok());
    let secret = raw.get("JWT_SECRET");
    if !problems.is_empty() || secret.chars().count() < 32 {
        eprintln!("configuration invalid: JWT_SECRET (at least 32 characters) is required to mint a token");
        return EX_CONFIG;
    }
    let ttl = match config::units::parse_duration(ttl, Duration::from_secs(1)) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            eprintln!("error: --ttl `{ttl}` is not a positive duration (e.g. 15m, 1h, 7d)");
            return 2;
        }
    };
    let issuer = Some(raw.get("JWT_ISSUER")).filter(|s| !s.is_empty());
    let audience = Some(raw.get("JWT_AUDIENCE")).filter(|s| !s.is_empty());
    let secret = secrecy::SecretString::from(secret.to_string());
    match auth::mint(secret.expose_secret(), sub, org, scopes, ttl, issuer, audience) {
        Ok(t) => {
            println!("{t}");
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
