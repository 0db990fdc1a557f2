//! Starting `hookline serve` for one scenario, and reading its memory and CPU from /proc.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::http::Api;

pub const ADMIN_TOKEN: &str = "sk_bench_admin_token_0123456789abcdef";

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `sysconf(_SC_CLK_TCK)`, which
/// the kernel fixes at 100 (USER_HZ) on every Linux architecture we run on; reading it
/// would need libc (and `unsafe`, which the workspace forbids).
const CLK_TCK: f64 = 100.0;

/// A process's memory and CPU so far.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcStats {
    /// VmRSS: resident now, MB.
    pub rss_mb: f64,
    /// VmHWM: peak resident, MB.
    pub peak_rss_mb: f64,
    /// utime + stime, seconds.
    pub cpu_s: f64,
}

pub fn proc_stats(pid: &str) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) in parentheses; utime and
    // stime are fields 14 and 15 of the whole line, so 11 and 12 counting from `state`.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    let cpu = ticks(11).zip(ticks(12)).map(|(u, s)| (u + s) / CLK_TCK);
    Ok(ProcStats {
        rss_mb: kb("VmRSS:") / 1024.0,
        peak_rss_mb: kb("VmHWM:") / 1024.0,
        cpu_s: cpu.context("parsing /proc/<pid>/stat")?,
    })
}

/// The harness's own CPU and memory (client and receiver run in this process).
pub fn own_stats() -> ProcStats {
    proc_stats("self").unwrap_or_default()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The main key of every server on PostgreSQL (base64 of 32 bytes): a bench database
/// holds no real secret.
const SHARED_KEY: &str = "aG9va2xpbmUtYmVuY2gtbWFpbi1rZXktMzItYnl0ZXM=";

pub struct Server {
    child: Child,
    pub api: Api,
    data_dir: PathBuf,
    log: PathBuf,
    /// VmRSS once the server answered its health check, before any load.
    pub idle_rss_mb: f64,
    /// On PostgreSQL: the database made for this server (none when it shares one the
    /// caller owns, see [`Server::spawn`]), and the PostgreSQL processes' CPU seconds when
    /// it started.
    db: Option<(Option<crate::pg::Scratch>, f64)>,
    /// Killed on purpose ([`Server::sigkill`]): its numbers are gone.
    killed: bool,
}

impl Server {
    /// Starts `bin serve` on a fresh data dir and a free loopback port, logging to `log`,
    /// and waits until its health check answers. With `database_url`, on a fresh
    /// database made from it (dropped with the server).
    pub async fn start(
        bin: &Path,
        log: &Path,
        extra: &[String],
        env: &[(&str, &str)],
        database_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let scratch = match database_url {
            Some(url) => Some(crate::pg::Scratch::create(url).await?),
            None => None,
        };
        let url = scratch.as_ref().map(|s| s.url.clone());
        let mut server = Self::spawn(bin, log, extra, env, url.as_deref()).await?;
        if let Some((db, _)) = server.db.as_mut() {
            *db = scratch;
        }
        Ok(server)
    }

    /// Like [`Server::start`], but on the database `database_url` itself (one the caller
    /// made and drops, which several servers may share).
    pub async fn spawn(
        bin: &Path,
        log: &Path,
        extra: &[String],
        env: &[(&str, &str)],
        database_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let data_dir = std::env::temp_dir().join(format!(
            "hookline-bench-{}-{port}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        std::fs::create_dir_all(&data_dir)?;
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        // Only the flags below (and `env`) configure it, whatever the caller's
        // environment says.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("HOOKLINE_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--allow-target")
            .arg("127.0.0.0/8")
            .arg("--admin-token")
            .arg(ADMIN_TOKEN)
            .args(extra)
            .args(database_url.iter().flat_map(|url| ["--database-url", url]))
            // Processes that share a database share its main key, as a deployment's
            // nodes do (each would otherwise make its own key file and the second would
            // find the database sealed under another key).
            .args(
                database_url
                    .iter()
                    .flat_map(|_| ["--encryption-key", SHARED_KEY]),
            )
            // `HOOKLINE_BENCH_SERVER_LOG` sets the servers' `RUST_LOG` (for a look inside
            // a run, e.g. `info,hookline_delivery=trace` logs each adaptive limit change).
            .env(
                "RUST_LOG",
                std::env::var("HOOKLINE_BENCH_SERVER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Self {
            child,
            api: Api::new(addr, ADMIN_TOKEN),
            data_dir,
            log: log.to_path_buf(),
            idle_rss_mb: 0.0,
            db: database_url.map(|_| (None, crate::pg::server_cpu_s())),
            killed: false,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "hookline exited during start ({status}); its log ({}):\n{}",
                    server.log.display(),
                    server.log_tail()
                );
            }
            if server.api.healthy().await {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "hookline did not answer its health check within 30 s; its log:\n{}",
                    server.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.idle_rss_mb = server.stats()?.rss_mb;
        Ok(server)
    }

    /// On PostgreSQL: the CPU seconds its processes used since this server started.
    pub fn db_cpu_s(&self) -> Option<f64> {
        self.db
            .as_ref()
            .map(|(_, at_start)| crate::pg::server_cpu_s() - at_start)
    }

    pub fn stats(&self) -> anyhow::Result<ProcStats> {
        if self.killed {
            bail!("this server was killed");
        }
        proc_stats(&self.child.id().to_string())
    }

    /// SIGKILL, as a crash or power loss would end it: no drain, no hand-back. Its data
    /// dir stays until the server is dropped.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        // std's `Child::kill` sends SIGKILL on Unix.
        self.child.kill().context("sending SIGKILL")?;
        self.child.wait().context("reaping the killed server")?;
        self.killed = true;
        Ok(())
    }

    /// Fails if the server died (a crash under load is an error, not a slow result).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if self.killed {
            return Ok(());
        }
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "hookline exited under load ({status}); its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the server (its numbers are taken before) and removes its data dir.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some((Some(db), _)) = self.db.take() {
            db.drop_now();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_stats_are_readable() {
        let s = super::proc_stats("self").unwrap();
        assert!(s.rss_mb > 0.0 && s.peak_rss_mb >= s.rss_mb);
        assert!(s.cpu_s >= 0.0);
    }
}
