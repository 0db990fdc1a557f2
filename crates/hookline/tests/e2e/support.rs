//! Test harness: start the real `hookline serve` on a temp data dir, find its port, call
//! its API, restart or kill it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const ADMIN_TOKEN: &str = "test_admin_token_0123456789abcdef";

/// A running `hookline serve` process.
pub struct Server {
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
    /// Environment variables set for the process (and for its restarts).
    env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    /// The PostgreSQL database of a run on PostgreSQL, dropped with the server.
    db: Option<TestDb>,
}

impl Server {
    /// Starts a server on a fresh temp data dir with the test admin token.
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra_args).await;
        s._tmp = Some(tmp);
        s
    }

    /// [`start_with`](Self::start_with), with these environment variables set.
    pub async fn start_with_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Self::launch(tmp.path(), extra_args, None, env).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on the given data dir (which survives the server).
    pub async fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        Self::start_logging(data_dir, extra_args, None).await
    }

    /// [`start_in`](Self::start_in), with the server's log (at `info`, unless
    /// `HOOKLINE_TEST_LOG` says otherwise) written to `log` instead of the test's stderr.
    ///
    /// With `HOOKLINE_TEST_E2E_DATABASE=postgres` (and `HOOKLINE_TEST_POSTGRES_URL`), every
    /// server runs on a PostgreSQL database of its own instead of SQLite: that is how the
    /// same e2e tests check both backends (`scripts/test` runs a set of them twice).
    pub async fn start_logging(data_dir: &Path, extra_args: &[&str], log: Option<&Path>) -> Server {
        Self::launch(data_dir, extra_args, log, &[]).await
    }

    /// [`start_logging`](Self::start_logging), with these environment variables set
    /// (`RUST_LOG` among them chooses the log level).
    pub async fn start_logging_env(
        data_dir: &Path,
        extra_args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        Self::launch(data_dir, extra_args, Some(log), env).await
    }

    async fn launch(
        data_dir: &Path,
        extra_args: &[&str],
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut db = None;
        if on_postgres() && !extra.iter().any(|a| a == "--database-url") {
            // A server started again on the same data dir finds the same database.
            let known = DATABASES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(data_dir)
                .cloned();
            let url = match known {
                Some(url) => url,
                None => {
                    let created = TestDb::create("this server").await.expect(
                        "HOOKLINE_TEST_E2E_DATABASE=postgres needs HOOKLINE_TEST_POSTGRES_URL",
                    );
                    let url = created.url.clone();
                    DATABASES
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(data_dir.to_path_buf(), url.clone());
                    db = Some(created);
                    url
                }
            };
            extra.extend(["--database-url".to_string(), url]);
        }
        let (child, base) = spawn(data_dir, &extra, log, &env).await;
        Server {
            base,
            token: ADMIN_TOKEN.to_string(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra,
            env,
            child: Some(child),
            _tmp: None,
            db,
        }
    }

    /// The `--database-url` the server runs on, if any (a PostgreSQL run's database);
    /// `None`: the SQLite file in its data dir.
    pub fn database_url(&self) -> Option<String> {
        let at = self.extra_args.iter().position(|a| a == "--database-url")?;
        self.extra_args.get(at + 1).cloned()
    }

    /// The server's process id (for reading its memory use from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Kills the process with SIGKILL (no chance to clean up).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill");
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        tokio::time::timeout(Duration::from_secs(30), c.wait())
            .await
            .expect("exits within 30 s")
            .expect("wait")
    }

    /// Stops (SIGKILL) and starts again on the same data dir and flags; the port changes.
    pub async fn restart(&mut self) {
        self.kill().await;
        let (child, base) = spawn(&self.data_dir, &self.extra_args, None, &self.env).await;
        self.child = Some(child);
        self.base = base;
    }

    pub fn client(&self) -> Api {
        Api {
            base: self.base.clone(),
            token: Some(self.token.clone()),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        if let Some(db) = self.db.take() {
            // Dropped from a thread of its own: this may run inside the test's runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(db.drop_db());
                }
            })
            .join();
        }
    }
}

/// The PostgreSQL database of each data dir, on PostgreSQL runs.
static DATABASES: std::sync::Mutex<std::collections::BTreeMap<PathBuf, String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The main key of the servers that share a PostgreSQL database (see `spawn`), and of
/// the CLI commands run on one.
pub const TEST_ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The environment a CLI command run with `args` needs: on a PostgreSQL database, the
/// main key its servers share ([`TEST_ENCRYPTION_KEY`]); on SQLite, nothing (the key
/// file in the data dir).
pub fn cli_key_env<S: AsRef<str>>(args: &[S]) -> Vec<(&'static str, &'static str)> {
    let on_pg = args.iter().any(|a| {
        let a = a.as_ref();
        a.starts_with("postgres://") || a.starts_with("postgresql://")
    });
    if on_pg {
        vec![("HOOKLINE_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)]
    } else {
        Vec::new()
    }
}

/// Runs the `hookline` CLI with `args` to its end, with [`cli_key_env`] of the args as
/// its environment's main key: see [`hookline_cli_with`].
pub async fn hookline_cli<S: AsRef<str>>(args: &[S]) -> std::process::Output {
    hookline_cli_with(args, &cli_key_env(args)).await
}

/// Runs the `hookline` CLI with `args` to its end. Of the hookline settings in the test
/// process's environment it sees only `env` (the database, config file, data dir and keys
/// come from the args), so the developer's shell cannot change a test. Dropped before it
/// ends (a timeout), the process is killed.
pub async fn hookline_cli_with<S: AsRef<str>>(
    args: &[S],
    env: &[(&str, &str)],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("HOOKLINE_ENCRYPTION_KEY")
        .env_remove("HOOKLINE_NEW_ENCRYPTION_KEY")
        .env_remove("HOOKLINE_DATABASE_URL")
        .env_remove("HOOKLINE_CONFIG")
        .env_remove("HOOKLINE_DATA_DIR")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run hookline")
}

/// Whether e2e servers run on PostgreSQL (`HOOKLINE_TEST_E2E_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("HOOKLINE_TEST_E2E_DATABASE").is_ok_and(|v| v == "postgres")
}

/// A PostgreSQL database of the test's own on the server named by
/// `HOOKLINE_TEST_POSTGRES_URL`, dropped at the end.
pub struct TestDb {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// `None` (after saying so) when no PostgreSQL is configured for tests.
    pub async fn create(test: &str) -> Option<TestDb> {
        let Ok(admin) = std::env::var("HOOKLINE_TEST_POSTGRES_URL") else {
            eprintln!("skipped {test} on PostgreSQL: HOOKLINE_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("hookline_e2e_{}_{}", std::process::id(), unique());
        admin_client(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        Some(TestDb { admin, name, url })
    }

    pub async fn drop_db(self) {
        let _ = admin_client(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

/// A number no other database of this process has had.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos * 1000 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000
}

pub async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to HOOKLINE_TEST_POSTGRES_URL");
    tokio::spawn(conn);
    client
}

async fn spawn(
    data_dir: &Path,
    extra: &[String],
    log: Option<&Path>,
    env: &[(String, String)],
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
    // Processes sharing a PostgreSQL database share its main key, as in a deployment
    // (each has a data dir of its own, so the key file would differ); a test that
    // chooses the key itself says so.
    let shared_db = extra
        .windows(2)
        .any(|w| w[0] == "--database-url" && w[1].starts_with("postgres"));
    let key_chosen = extra.iter().any(|a| a == "--encryption-key")
        || env.iter().any(|(k, _)| k == "HOOKLINE_ENCRYPTION_KEY");
    if shared_db && !key_chosen {
        cmd.env("HOOKLINE_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY);
    } else {
        cmd.env_remove("HOOKLINE_ENCRYPTION_KEY");
    }
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--admin-token")
        .arg(ADMIN_TOKEN)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("HOOKLINE_DATABASE_URL")
        .env_remove("HOOKLINE_CONFIG")
        .env(
            "RUST_LOG",
            env.iter()
                .find(|(k, _)| k == "RUST_LOG")
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var("HOOKLINE_TEST_LOG").ok())
                .unwrap_or(if log.is_some() { "info" } else { "warn" }.into()),
        )
        .stdout(Stdio::piped())
        .stderr(match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::inherit(),
        })
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn hookline");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(url) = line.strip_prefix("hookline: listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("hookline exited before listening");
    })
    .await
    .expect("hookline starts within 30 s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// A small JSON client for the API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn with_token(&self, token: Option<&str>) -> Api {
        Api {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// Sends a request; `body` is sent as JSON when given. Returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{}", self.base, path),
        );
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// POSTs `body` exactly as given (no re-serialization).
    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.as_deref().expect("token"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path` until `ready` holds for the body (within 10 s), then returns the last
    /// answer. For state written a moment after a receiver saw a request, such as the
    /// attempt log (an attempt is logged once its response is in).
    pub async fn get_until(&self, path: &str, ready: impl Fn(&Value) -> bool) -> (u16, Value) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (status, body) = self.get(path).await;
            if (status == 200 && ready(&body)) || std::time::Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// POST that must succeed; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, json) = self.post(path, body).await;
        assert!(
            (200..300).contains(&status),
            "POST {path} -> {status} {json}"
        );
        json
    }
}

/// A new application with one endpoint (`endpoint` is its JSON): their ids.
pub async fn app_with_endpoint(api: &Api, endpoint: Value) -> (String, String) {
    let id = |v: Value| v["id"].as_str().expect("id").to_string();
    let app = id(api
        .create("/api/v1/app", serde_json::json!({"name": "a"}))
        .await);
    let ep = id(api
        .create(&format!("/api/v1/app/{app}/endpoint"), endpoint)
        .await);
    (app, ep)
}

/// Waits (up to `within`) until `cond` holds; panics saying `what` otherwise. Returns
/// how long it took.
pub async fn wait_until(within: Duration, what: &str, cond: impl Fn() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// The Python interpreter of the test venv (made by `scripts/test`), if there is one.
pub fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HOOKLINE_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-venv/bin/python");
    venv.exists().then_some(venv)
}

/// The Python interpreter for tests that need one. Under `scripts/test` a missing venv
/// is a failure; a bare `cargo test` without it skips, saying so.
pub fn require_python(test: &str) -> Option<PathBuf> {
    match python() {
        Some(p) => Some(p),
        None if std::env::var_os("HOOKLINE_TEST_REQUIRE_TOOLS").is_some() => {
            panic!("{test}: the Python test venv is missing; run scripts/test")
        }
        None => {
            eprintln!("SKIPPED {test}: no Python test venv (run scripts/test to create it)");
            None
        }
    }
}

/// An external program (e.g. `node`) on `PATH`, for tests that need one. Under
/// `scripts/test` (`HOOKLINE_TEST_REQUIRE_TOOLS` set) a missing tool is a failure; a bare
/// `cargo test` without it skips, saying so.
pub fn require_tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("HOOKLINE_TEST_REQUIRE_TOOLS").is_some() => {
            panic!("{test}: `{name}` is not on PATH")
        }
        None => {
            eprintln!("SKIPPED {test}: `{name}` is not on PATH");
            None
        }
    }
}

/// The path of `file` in `examples/<platform>/`.
pub fn example_path(platform: &str, file: &str) -> String {
    format!(
        "{}/../../examples/{platform}/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The text of `file` in `examples/<platform>/`.
pub fn example_text(platform: &str, file: &str) -> String {
    let path = example_path(platform, file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `file` in `examples/<platform>/`, parsed as JSON.
pub fn example_json(platform: &str, file: &str) -> Value {
    serde_json::from_str(&example_text(platform, file))
        .unwrap_or_else(|e| panic!("{platform}/{file}: {e}"))
}

/// Sends `head` and then, after a pause, `body` on `conn` (raw HTTP/1.1, to control when
/// the body arrives), and reads one response: its status line and body (by
/// content-length).
pub async fn exchange(
    conn: &mut tokio::net::TcpStream,
    head: &str,
    body: &str,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(head.as_bytes()).await.expect("send head");
    if !body.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        conn.write_all(body.as_bytes()).await.expect("send body");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).await.expect("read response");
        assert!(
            n > 0,
            "the server closed the connection without answering; so far: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head_text = String::from_utf8_lossy(&got[..end]).to_string();
    let len: usize = head_text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < end + len {
        let n = conn.read(&mut buf).await.expect("read body");
        assert!(n > 0, "the server closed the connection in a response body");
        got.extend_from_slice(&buf[..n]);
    }
    let status = head_text.lines().next().unwrap_or("").to_string();
    (
        status,
        String::from_utf8_lossy(&got[end..end + len]).to_string(),
    )
}

/// A PostgreSQL cluster of a test's own (`initdb` + `pg_ctl` in a temp dir), for what
/// must never be done to the machine's shared server: stopping it, restarting it,
/// running it without TLS or with passwords. It listens on `127.0.0.1` only, on a port
/// free when it started, with its socket in the temp dir; dropping it stops the server
/// (immediately) and removes the dir. Its superuser is `postgres`.
///
/// initdb refuses to run as root, so as root the dir belongs to the `postgres` OS user
/// and every command runs as that user through `runuser`.
pub struct OwnCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    as_postgres: bool,
    running: bool,
    dir: tempfile::TempDir,
}

/// How an [`OwnCluster`] is made.
#[derive(Default)]
pub struct ClusterOptions {
    /// Connections over TCP need this password (SCRAM) instead of none.
    pub password: Option<String>,
}

/// How [`OwnCluster::stop`] stops the server (`pg_ctl stop -m ...`).
#[derive(Clone, Copy)]
pub enum StopMode {
    /// Every server process killed at once, as in a crash; the next start recovers from
    /// the WAL.
    Immediate,
    /// Sessions cut, then a clean shutdown.
    Fast,
}

impl OwnCluster {
    /// Makes and starts a cluster; `None` (after saying so) when the PostgreSQL server
    /// programs are missing, a failure instead under `HOOKLINE_TEST_REQUIRE_TOOLS`.
    pub async fn start(test: &str, opts: ClusterOptions) -> Option<OwnCluster> {
        let bin = match postgres_bin() {
            Ok(bin) => bin,
            Err(why) if std::env::var_os("HOOKLINE_TEST_REQUIRE_TOOLS").is_some() => {
                panic!("{test}: {why}")
            }
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = {
            use std::os::unix::fs::MetadataExt;
            // The dir is ours: its owner is who this process runs as.
            dir.path().metadata().expect("stat the tempdir").uid() == 0
        };
        if as_postgres {
            let ok = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success())
                && std::process::Command::new("runuser")
                    .arg("--help")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            let why = "as root the cluster must run as the `postgres` OS user (initdb refuses \
                       root), through `runuser`: there is no such user, or no runuser";
            if !ok && std::env::var_os("HOOKLINE_TEST_REQUIRE_TOOLS").is_some() {
                panic!("{test}: {why}");
            } else if !ok {
                eprintln!("SKIPPED {test}: {why}");
                return None;
            }
        }
        let data = dir.path().join("data");
        let mut cluster = OwnCluster {
            bin,
            log: dir.path().join("server.log"),
            data: data.clone(),
            port: 0,
            as_postgres,
            running: false,
            dir,
        };

        let mut initdb = vec![
            "-D".to_string(),
            data.display().to_string(),
            "--username=postgres".into(),
            "--auth-local=trust".into(),
            "--no-sync".into(),
            "--no-instructions".into(),
        ];
        if let Some(pw) = &opts.password {
            let file = cluster.dir.path().join("pwfile");
            std::fs::write(&file, pw).expect("write the password file");
            cluster.own(&file);
            initdb.push("--auth-host=scram-sha-256".into());
            initdb.push(format!("--pwfile={}", file.display()));
        } else {
            initdb.push("--auth-host=trust".into());
        }
        cluster.run("initdb", &initdb).await;

        // The port was free a moment ago; should something take it meanwhile, another.
        for attempt in 1.. {
            cluster.port = free_port();
            let conf = format!(
                "\n# {test}\n\
                 listen_addresses = '127.0.0.1'\n\
                 port = {}\n\
                 unix_socket_directories = '{}'\n\
                 ssl = off\n\
                 # Its processes are killed, never the machine: WAL written before a commit\n\
                 # is acknowledged survives in the page cache, so fsync would only cost time.\n\
                 fsync = off\n",
                cluster.port,
                cluster.dir.path().display()
            );
            {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(data.join("postgresql.conf"))
                    .and_then(|mut f| f.write_all(conf.as_bytes()))
                    .expect("configure the cluster");
            }
            match cluster.pg_ctl_start().await {
                Ok(()) => break,
                Err(e) if attempt < 3 && e.contains("could not bind") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        Some(cluster)
    }

    /// A URL for `user` (and `password`) on database `db` of this cluster, over TCP.
    pub fn url_as(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let password = password.map(|p| format!(":{p}")).unwrap_or_default();
        format!("postgres://{user}{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for the superuser on the `postgres` database, without a password.
    pub fn url(&self) -> String {
        self.url_as("postgres", None, "postgres")
    }

    /// Stops the server and waits until it is gone.
    pub async fn stop(&mut self, mode: StopMode) {
        let mode = match mode {
            StopMode::Immediate => "immediate",
            StopMode::Fast => "fast",
        };
        let data = self.data.display().to_string();
        self.run(
            "pg_ctl",
            &["stop", "-D", &data, "-m", mode, "-w", "-t", "30"],
        )
        .await;
        self.running = false;
    }

    /// Starts the server again (same data, same port) and waits until it accepts
    /// connections (after crash recovery, when it was stopped immediately).
    pub async fn start_again(&mut self) {
        if let Err(e) = self.pg_ctl_start().await {
            panic!("{e}");
        }
    }

    async fn pg_ctl_start(&mut self) -> Result<(), String> {
        let (data, log) = (
            self.data.display().to_string(),
            self.log.display().to_string(),
        );
        self.try_run(
            "pg_ctl",
            &["start", "-D", &data, "-l", &log, "-w", "-t", "30"],
        )
        .await?;
        self.running = true;
        Ok(())
    }

    /// Gives `path` to the `postgres` OS user when the cluster runs as that user.
    fn own(&self, path: &Path) {
        if self.as_postgres {
            let ok = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown postgres: {}", path.display());
        }
    }

    /// Runs one of the server programs (as `postgres` when this process is root); a
    /// failure panics with its output and the server's log.
    async fn run<S: AsRef<std::ffi::OsStr>>(&self, program: &str, args: &[S]) {
        if let Err(e) = self.try_run(program, args).await {
            panic!("{e}");
        }
    }

    /// [`run`](Self::run), a failure returned (with the output and the server's log).
    async fn try_run<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: &str,
        args: &[S],
    ) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        // pg_ctl start leaves the server holding its stdout: a pipe would never close.
        let out_file = self.dir.path().join("command.out");
        let out = std::fs::File::create(&out_file).expect("create the command's output file");
        let err = out.try_clone().expect("dup");
        let status = tokio::time::timeout(
            Duration::from_secs(60),
            cmd.args(args)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .status(),
        )
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within 60 s", program.display()))
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
        if status.success() {
            return Ok(());
        }
        let output = std::fs::read_to_string(&out_file).unwrap_or_default();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Err(format!(
            "{} {:?} failed ({status}):\n{output}\nserver log:\n{log}",
            program.display(),
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        ))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = cmd
            .arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The folder of `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin` (Debian's
/// layout, where they are not on `PATH`), else wherever `initdb` is on `PATH`.
fn postgres_bin() -> Result<PathBuf, String> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    let bin = match versions.pop() {
        Some((_, bin)) => bin,
        None => std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).find(|dir| has_both(dir)))
            .ok_or("no PostgreSQL server programs (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH")?,
    };
    Ok(bin)
}

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
