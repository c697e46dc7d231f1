//! The test harness: the real binary, spawned on random ports against real Postgres (a fresh
//! database per test) and real Redis (a unique key prefix per test), its JSON log captured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ballast")
}

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// `admin_url` with the database name replaced.
pub fn db_url(admin: &str, db: &str) -> String {
    let mut u = url::Url::parse(admin).expect("DATABASE_URL parses");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

pub async fn admin_exec(admin: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect to the admin database");
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A scratch database, dropped when the value is dropped.
pub struct TestDb {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create(admin: &str) -> TestDb {
        let name = format!("ballast_t_{}", uuid::Uuid::new_v4().simple());
        admin_exec(admin, &format!("CREATE DATABASE {name}")).await;
        TestDb { admin: admin.to_string(), url: db_url(admin, &name), name }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("connect to test db")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime guarantee: use a private one on a plain thread.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(async {
                    use sqlx::Connection;
                    let drop_db = async {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                        }
                    };
                    // A server a test left unreachable must not hang the suite.
                    let _ = tokio::time::timeout(Duration::from_secs(10), drop_db).await;
                });
            }
        })
        .join();
    }
}

#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn json(&self) -> Vec<serde_json::Value> {
        self.lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits until a JSON line satisfies `pred` (polls the captured output).
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line within {timeout:?}; log:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub struct Spawn {
    pub env: HashMap<String, String>,
    pub command: Vec<String>,
}

impl Spawn {
    pub fn serve(db: &TestDb) -> Spawn {
        let storage = std::env::temp_dir().join(format!("ballast-test-{}", uuid::Uuid::new_v4().simple()));
        let env: HashMap<String, String> = [
            ("APP_ENV", "test".to_string()),
            ("DATABASE_URL", db.url.clone()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", format!("t-{}:", uuid::Uuid::new_v4().simple())),
            ("JWT_SECRET", JWT_SECRET.to_string()),
            ("HTTP_ADDR", "127.0.0.1:0".to_string()),
            ("MANAGEMENT_ADDR", "127.0.0.1:0".to_string()),
            ("STORAGE_URL", format!("file://{}", storage.display())),
            ("SHUTDOWN_READINESS_DELAY_SECS", "0".to_string()),
            ("LOG_FORMAT", "json".to_string()),
            ("LOG_LEVEL", "info".to_string()),
            ("CONFIG_DIR", "/nonexistent".to_string()),
            ("STARTUP_DEPENDENCY_TIMEOUT_SECS", "10".to_string()),
            // Tests run side by side on a small box: a probe must not fail because a healthy
            // Postgres took 80 ms to answer. Tests of hung dependencies set the real bound.
            ("HEALTH_CHECK_TIMEOUT_MS", "500".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Spawn { env, command: vec!["serve".into()] }
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_string(), value.into());
        self
    }

    pub fn command(mut self, args: &[&str]) -> Self {
        self.command = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Spawns and waits for "listening" (start-up done, listeners bound).
    pub async fn start(self) -> TestApp {
        let started = Instant::now();
        let mut app = self.spawn();
        app.wait_listening().await;
        app.startup = started.elapsed();
        app
    }

    /// Spawns and returns at once, for tests that act during start-up.
    pub fn spawn(self) -> TestApp {
        let mut cmd = Command::new(bin());
        cmd.args(&self.command)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn ballast");
        let logs = Logs::default();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let sink = logs.0.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if std::env::var("BALLAST_TEST_ECHO").is_ok() {
                        eprintln!("app| {line}");
                    }
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            });
        }
        TestApp {
            child,
            logs,
            http: None,
            mgmt: None,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            startup: Duration::ZERO,
        }
    }
}

pub struct TestApp {
    pub child: Child,
    pub logs: Logs,
    pub http: Option<SocketAddr>,
    pub mgmt: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// Spawn to "listening" (migrations applied, listeners bound).
    pub startup: Duration,
}

impl TestApp {
    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(line) = self.logs.json().into_iter().find(|v| v["message"] == "listening") {
                self.http = line["http_addr"].as_str().and_then(|s| s.parse().ok());
                self.mgmt = line["management_addr"].as_str().and_then(|s| s.parse().ok());
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ballast exited with {status} before listening; log:\n{}", self.logs.lines().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "ballast not listening after 30s; log:\n{}",
                self.logs.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http.expect("public listener"))
    }

    pub fn mgmt_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.mgmt.expect("management listener"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn mgmt_get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.mgmt_url(path)).send().await.expect("GET management")
    }

    pub async fn metrics(&self) -> String {
        self.mgmt_get("/metrics").await.text().await.expect("metrics body")
    }

    /// A token for `sub` minted by the binary's own `token` command.
    pub async fn token(&self, sub: &str, org: Option<&str>) -> String {
        let mut args = vec!["token", "--sub", sub];
        if let Some(o) = org {
            args.extend(["--org", o]);
        }
        let out = Command::new(bin())
            .args(&args)
            .env_clear()
            .env("JWT_SECRET", JWT_SECRET)
            .env("CONFIG_DIR", "/nonexistent")
            .output()
            .await
            .expect("run token");
        assert!(out.status.success(), "token failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running child") as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("ballast did not exit within {timeout:?}; log:\n{}", self.logs.lines().join("\n")),
        }
    }

    /// Polls `path` on the public listener until it answers `status`.
    pub async fn wait_status(&self, url: &str, status: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.client.get(url).send().await {
                if r.status().as_u16() == status {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{url} never answered {status} within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Postgres server of our own that tests may stop, freeze or kill.
pub struct PrivatePostgres {
    pub child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin(name: &str) -> String {
    let mut candidates: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin").join(name)).filter(|p| p.exists()).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().map(|p| p.display().to_string()).unwrap_or_else(|| name.to_string())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn postgres_uid() -> Option<u32> {
    // Postgres refuses to run as root; run it as the `postgres` user when we are root.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let out = std::process::Command::new("id").args(["-u", "postgres"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let uid = postgres_uid();
        if let Some(uid) = uid {
            std::process::Command::new("chown")
                .args(["-R", &uid.to_string(), &dir.path().display().to_string()])
                .status()
                .expect("chown");
        }
        let mut initdb = std::process::Command::new(pg_bin("initdb"));
        initdb
            .args(["-D", &data.display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uid) = uid {
            initdb.uid(uid);
        }
        assert!(initdb.status().expect("initdb").success(), "initdb failed");
        let port = free_port();
        let mut pg = std::process::Command::new(pg_bin("postgres"));
        pg.args(["-D", &data.display().to_string(), "-p", &port.to_string(), "-k", &dir.path().display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uid) = uid {
            pg.uid(uid);
        }
        let child = pg.spawn().expect("start postgres");
        let me = PrivatePostgres { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            use sqlx::Connection;
            if sqlx::PgConnection::connect(&me.admin_url()).await.is_ok() {
                return me;
            }
            assert!(Instant::now() < deadline, "private postgres did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Freezes every process of the server until the guard is dropped (even on a failed
    /// assertion, so cleanup that needs the server cannot hang).
    pub fn freeze(&self) -> Thaw {
        let pids = self.pids();
        for pid in &pids {
            // SAFETY: kill(2) on processes of the server we started.
            unsafe { libc::kill(*pid, libc::SIGSTOP) };
        }
        Thaw(pids)
    }

    /// The postmaster and its children (backends call setsid, so a process-group signal
    /// would miss them).
    pub fn pids(&self) -> Vec<i32> {
        let root = self.child.id() as i32;
        let mut pids = vec![root];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Field 4 (ppid) follows the parenthesised command name.
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                if ppid == Some(root) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    pub fn signal(&self, sig: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) on processes of the server we started.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        // SAFETY: kill(2) on the postmaster we started; SIGQUIT = immediate shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}

/// Sends SIGCONT to frozen processes when dropped.
pub struct Thaw(Vec<i32>);

impl Drop for Thaw {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) on processes we stopped.
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    }
}

/// A Redis server of our own that tests may freeze or kill.
pub struct PrivateRedis {
    pub child: std::process::Child,
    pub port: u16,
    /// `redis-server` arguments beyond port and persistence, kept for `restart`.
    extra: Vec<String>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        Self::start_on(free_port(), Vec::new()).await
    }

    /// With more `redis-server` arguments, e.g. `--requirepass`; `{port}` in one stands for
    /// the port the helper waits on (`--port 0 --tls-port {port}`: TLS only).
    pub async fn start_with(extra: &[&str]) -> PrivateRedis {
        Self::start_on(free_port(), extra.iter().map(|a| a.to_string()).collect()).await
    }

    /// Kills this Redis and starts a new, empty one on the same port (clients' sockets die).
    pub async fn restart(mut self) -> PrivateRedis {
        let (port, extra) = (self.port, std::mem::take(&mut self.extra));
        drop(self); // Drop kills and reaps it
        Self::start_on(port, extra).await
    }

    async fn start_on(port: u16, extra: Vec<String>) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra.iter().map(|a| a.replace("{port}", &port.to_string())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        PrivateRedis { child, port, extra }
    }

    /// One `redis-cli` command against this server; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "--no-auth-warning"])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn freeze(&self) -> Thaw {
        self.signal(libc::SIGSTOP);
        Thaw(vec![self.child.id() as i32])
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for `check-config`, `migrate`, …).
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFIG_DIR", "/nonexistent")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run ballast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

impl TestApp {
    pub async fn post_job(&self, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let resp =
            self.client.post(self.url("/api/v1/jobs")).bearer_auth(token).json(&body).send().await.expect("POST job");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    pub async fn get_job(&self, token: &str, id: &str) -> (u16, serde_json::Value) {
        let resp =
            self.client.get(self.url(&format!("/api/v1/jobs/{id}"))).bearer_auth(token).send().await.expect("GET job");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }

    /// Polls the job until `pred` holds.
    pub async fn wait_job(
        &self,
        token: &str,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.get_job(token, id).await;
            if pred(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} never reached the expected state; last: {job:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Sums a counter's samples whose label set contains every `labels` pair.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Inserts `n` noop jobs of tenant `t` straight into the table, in `status` (finished ones
/// with `finished_at` now): a queue of a given shape without going through the API.
pub async fn seed_jobs(pool: &sqlx::PgPool, n: i32, status: &str) {
    sqlx::query(
        "INSERT INTO jobs (id, tenant, kind, status, finished_at) \
         SELECT gen_random_uuid(), 't', 'noop', $2::text, \
                CASE WHEN $2::text IN ('succeeded', 'failed', 'cancelled') THEN now() END \
         FROM generate_series(1, $1::int4)",
    )
    .bind(n)
    .bind(status)
    .execute(pool)
    .await
    .expect("seed jobs");
}

/// Polls a database condition until it holds.
pub async fn wait_db(pool: &sqlx::PgPool, sql: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ok: bool = sqlx::query_scalar(sql).fetch_one(pool).await.expect("condition query");
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "condition never held within {timeout:?}: {sql}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
