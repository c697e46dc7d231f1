use std::collections::BTreeSet;

use crate::helpers::*;

fn env_example_vars() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).expect(".env.example");
    // Only the service's section: below the marker come compose/script variables.
    let app_section = text.split("# ==== deployment").next().unwrap_or_default();
    app_section
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn env_example_documents_exactly_the_variables_the_code_reads() {
    let documented = env_example_vars();
    let known: BTreeSet<String> = ballast::config::vars::VARS.iter().map(|v| v.name.to_string()).collect();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&known).collect();
    assert!(undocumented.is_empty(), "read by the code but missing from .env.example: {undocumented:?}");
    assert!(stale.is_empty(), "in .env.example but never read: {stale:?}");
}

#[test]
fn no_code_reads_the_environment_behind_the_config_module() {
    // Every variable goes through config::vars so .env.example stays complete.
    let mut offenders = Vec::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") && !p.starts_with(format!("{root}/config")) {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for (n, line) in text.lines().enumerate() {
                    if line.contains("env::var(\"") || line.contains("env::var_os(\"") {
                        offenders.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "read these through config::vars instead: {offenders:#?}");
}

#[tokio::test]
async fn check_config_reports_every_problem_at_once_and_exits_78_without_echoing_secrets() {
    let (code, _out, err) = run_cli(
        &["check-config"],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgres://ballast:hunter2@db/ballast"),
            ("JWT_SECRET", "changeme-but-still-too-short"),
            ("MAX_UPLOAD_BYTES", "a lot"),
            ("LOG_FORMAT", "pretty"),
        ],
    )
    .await;
    assert_eq!(code, 78, "{err}");
    for var in ["DATABASE_URL", "JWT_SECRET", "MAX_UPLOAD_BYTES", "LOG_FORMAT"] {
        assert!(err.contains(&format!("  - {var}:")), "{var} not reported:\n{err}");
    }
    assert!(err.contains("Fix:"), "each problem says how to fix it:\n{err}");
    assert!(!err.contains("hunter2") && !err.contains("changeme-but"), "a secret leaked:\n{err}");
}

#[tokio::test]
async fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let (code, out, err) = run_cli(
        &["check-config"],
        &[
            ("DATABASE_URL", "postgres://ballast:s3cr3t-passw0rd@db/ballast"),
            ("JWT_SECRET", JWT_SECRET),
            ("REQUEST_TIMEOUT_SECS", "12"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("REQUEST_TIMEOUT_SECS=12    # env"), "{out}");
    assert!(out.contains("JWT_SECRET=[REDACTED]"), "{out}");
    assert!(out.contains("DATABASE_URL=postgres://ballast:[REDACTED]@db/ballast"), "{out}");
    assert!(!out.contains("s3cr3t") && !out.contains(JWT_SECRET), "{out}");
}

#[tokio::test]
async fn serve_refuses_to_start_on_invalid_config_with_exit_78() {
    let (code, _, err) = run_cli(&["serve"], &[("JWT_SECRET", "short")]).await;
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("DATABASE_URL") && err.contains("JWT_SECRET"), "{err}");
}

#[tokio::test]
async fn serve_gives_up_on_an_unreachable_database_after_the_startup_timeout() {
    let port = free_port(); // nothing listens there
    let started = std::time::Instant::now();
    let (code, out, err) = run_cli(
        &["serve"],
        &[
            ("DATABASE_URL", &format!("postgres://postgres@127.0.0.1:{port}/x")),
            ("JWT_SECRET", JWT_SECRET),
            ("STARTUP_DEPENDENCY_TIMEOUT_SECS", "1"),
            ("HTTP_ADDR", "127.0.0.1:0"),
            ("MANAGEMENT_ADDR", "127.0.0.1:0"),
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("postgres unreachable"), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("postgres not reachable yet"), "retries are logged:\n{out}");
    println!("gave up after {:?}", started.elapsed());
}

#[tokio::test]
async fn token_command_mints_a_token_the_server_accepts_and_refuses_a_bad_ttl() {
    let (code, out, _) =
        run_cli(&["token", "--sub", "alice", "--scope", "admin", "--ttl", "5m"], &[("JWT_SECRET", JWT_SECRET)]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim().split('.').count(), 3, "a JWT: {out}");
    let (code, _, err) = run_cli(&["token", "--sub", "alice", "--ttl", "forever"], &[("JWT_SECRET", JWT_SECRET)]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_cli(&["token", "--sub", "alice"], &[]).await;
    assert_eq!(code, 78);
}
