//! `hookline-bench`: starts the real `hookline serve` per scenario on loopback, drives its
//! management API, receives its deliveries with its own receiver, and reports figures next
//! to the goals of issue 5. See BENCHMARKS.md.

mod charts;
mod disk;
mod http;
mod pg;
mod receiver;
mod results;
mod scenarios;
mod server;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use crate::http::Payloads;
use crate::results::ScenarioResult;
use crate::scenarios::{Counts, Ctx, PAYLOAD_BYTES};

#[derive(Parser)]
#[command(
    name = "hookline-bench",
    about = "Benchmarks hookline end to end on loopback and writes results.json and SVG charts"
)]
struct Cli {
    /// Scenarios to run (in this order), or `all`. The ratio scenarios (ingest, e2e) run
    /// the baseline first when it is not selected.
    #[arg(value_enum, required = true)]
    scenarios: Vec<Which>,
    /// Small counts: checks that everything runs (well under a minute), not timings.
    #[arg(long)]
    quick: bool,
    /// The hookline binary to benchmark; without it, `cargo build --release -p hookline`
    /// runs first and `target/release/hookline` is used.
    #[arg(long, value_name = "PATH")]
    hookline_bin: Option<PathBuf>,
    /// Where results.json, results.md, the charts and the server logs go
    /// (default `target/bench/<timestamp>`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run every server on PostgreSQL: a `postgres://` URL of a database the harness may
    /// create databases from (each scenario's server gets a fresh one, dropped after).
    /// The CPU column then adds the PostgreSQL server's processes. `nodes` and
    /// `takeover` need it (and `all` leaves them out without it).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Messages of the ingest, e2e and nodes loads (default 50 000; 1 000 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    messages: Option<u64>,
    /// `nodes` runs the e2e load on 1, 2, … N hookline processes sharing one database;
    /// `takeover` runs N.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    nodes: u64,
    /// `takeover`: each process's `--lease-secs` (how long a delivery it claimed stays
    /// its own; hookline's default is 120).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(10..=3600))]
    lease_secs: u64,
    /// `takeover`: the steady load, messages per second over all processes (default
    /// 1 000; 200 with --quick).
    #[arg(long, value_name = "MSG_PER_S", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    takeover_rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Which {
    Baseline,
    Ingest,
    E2e,
    Latency,
    Fanout,
    Isolation,
    Backlog,
    /// The e2e load on 1, 2 … `--nodes` processes sharing one PostgreSQL database.
    Nodes,
    /// `--nodes` processes under steady load, one of them SIGKILLed.
    Takeover,
    /// One endpoint, a receiver answering in 1 ms: default settings against
    /// `maxConcurrency: 256`.
    Hot,
    /// The same with a receiver answering in 50 ms.
    HotSlow,
    /// One endpoint whose receiver queues past 16 at once: default settings against a
    /// sweep of fixed limits.
    Knee,
    /// `knee` over `--nodes` processes sharing one PostgreSQL database: default settings
    /// against `maxConcurrency` at the knee.
    KneeNodes,
    /// The console's and the portal's pages over a store of 1 000 000 messages and
    /// 100 000 attempts (10 000 and 1 000 with --quick): p50/p99 per page.
    Console,
    All,
}

impl Which {
    const EVERY: [Which; 14] = [
        Which::Baseline,
        Which::Ingest,
        Which::E2e,
        Which::Latency,
        Which::Fanout,
        Which::Isolation,
        Which::Backlog,
        Which::Nodes,
        Which::Takeover,
        Which::Hot,
        Which::HotSlow,
        Which::Knee,
        Which::KneeNodes,
        Which::Console,
    ];

    /// Several processes share a database only on PostgreSQL.
    fn needs_postgres(self) -> bool {
        matches!(self, Which::Nodes | Which::Takeover | Which::KneeNodes)
    }

    fn name(self) -> &'static str {
        match self {
            Which::Baseline => "baseline",
            Which::Ingest => "ingest",
            Which::E2e => "e2e",
            Which::Latency => "latency",
            Which::Fanout => "fanout",
            Which::Isolation => "isolation",
            Which::Backlog => "backlog",
            Which::Nodes => "nodes",
            Which::Takeover => "takeover",
            Which::Hot => "hot",
            Which::HotSlow => "hot-slow",
            Which::Knee => "knee",
            Which::KneeNodes => "knee-nodes",
            Which::Console => "console",
            Which::All => "all",
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo build --release -p hookline`, quietly; returns the binary.
fn build_hookline() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("==> cargo build --release -p hookline");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "hookline"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build --release -p hookline failed ({status})");
    }
    Ok(target_dir().join("release").join("hookline"))
}

fn commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn mem_total_gib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0 / 1024.0)
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Interrupted: dropping the scenario stops its server (and removes its data dir).
    let outcome = tokio::select! {
        r = run(cli) => Some(r),
        () = interrupted() => None,
    };
    match outcome {
        Some(Ok(true)) => {}
        Some(Ok(false)) => std::process::exit(1),
        Some(Err(e)) => {
            eprintln!("hookline-bench: {e:#}");
            std::process::exit(1);
        }
        None => {
            eprintln!("hookline-bench: interrupted");
            std::process::exit(130);
        }
    }
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Between scenarios: the previous one's database (up to hundreds of MB, just deleted)
/// is still being written back, which slows the next server's fsyncs; flush it first.
async fn settle(quick: bool) {
    let _ = tokio::task::spawn_blocking(|| Command::new("sync").status()).await;
    if !quick {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// Ok(false): some scenario failed (its error is in the table and results.json).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let started = Instant::now();
    let on_postgres = cli.database_url.is_some();
    if !on_postgres {
        let refused: Vec<&str> = cli
            .scenarios
            .iter()
            .filter(|w| w.needs_postgres())
            .map(|w| w.name())
            .collect();
        if !refused.is_empty() {
            bail!(
                "{}: several hookline processes share one database, which needs PostgreSQL; \
                 pass --database-url postgres://USER@HOST:PORT/DB",
                refused.join(" and ")
            );
        }
    }
    let mut selected: Vec<Which> = if cli.scenarios.contains(&Which::All) {
        if !on_postgres {
            eprintln!(
                "==> all: nodes, takeover and knee-nodes left out (they need --database-url)"
            );
        }
        Which::EVERY
            .into_iter()
            .filter(|w| on_postgres || !w.needs_postgres())
            .collect()
    } else {
        cli.scenarios.clone()
    };
    if selected
        .iter()
        .any(|w| matches!(w, Which::Ingest | Which::E2e))
        && !selected.contains(&Which::Baseline)
    {
        selected.push(Which::Baseline);
    }
    selected.sort();
    selected.dedup();

    let out = match cli.out {
        Some(o) => o,
        None => target_dir()
            .join("bench")
            .join(chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let needs_server = selected.iter().any(|w| *w != Which::Baseline);
    let bin = match cli.hookline_bin {
        Some(b) => b,
        None if needs_server => build_hookline()?,
        None => PathBuf::from("(not used)"),
    };
    if needs_server && !bin.is_file() {
        bail!("no hookline binary at {}", bin.display());
    }
    let mut counts = if cli.quick {
        Counts::quick()
    } else {
        Counts::full()
    };
    if let Some(m) = cli.messages {
        counts.messages = m as usize;
    }
    counts.nodes = cli.nodes as usize;
    counts.lease_secs = cli.lease_secs;
    if let Some(r) = cli.takeover_rate {
        counts.takeover_rate = r;
    }
    let mut ctx = Ctx {
        bin: bin.clone(),
        out: out.clone(),
        counts: counts.clone(),
        payloads: Arc::new(Payloads::new(PAYLOAD_BYTES)),
        baseline_rps: None,
        database_url: cli.database_url.clone(),
        quick: cli.quick,
    };

    // The disk before and after: durable writes are part of every hookline figure.
    let probes = if cli.quick { 20 } else { 200 };
    let disk_before = tokio::task::spawn_blocking(move || disk::fsync_probe(probes))
        .await?
        .context("probing the disk's fsync latency")?;
    eprintln!("==> {}", disk::describe("before", &disk_before));
    let mut results: Vec<ScenarioResult> = Vec::new();
    for (i, which) in selected.iter().enumerate() {
        let name = which.name();
        if i > 0 {
            settle(cli.quick).await;
        }
        eprintln!("==> {name}{}", if cli.quick { " (quick)" } else { "" });
        let cpu0 = server::own_stats().cpu_s;
        let t0 = Instant::now();
        let outcome = match which {
            Which::Baseline => scenarios::baseline(&ctx).await,
            Which::Ingest => scenarios::ingest(&ctx).await,
            Which::E2e => scenarios::e2e(&ctx).await,
            Which::Latency => scenarios::latency(&ctx).await,
            Which::Fanout => scenarios::fanout(&ctx).await,
            Which::Isolation => scenarios::isolation(&ctx).await,
            Which::Backlog => scenarios::backlog(&ctx).await,
            Which::Nodes => scenarios::nodes(&ctx).await,
            Which::Takeover => scenarios::takeover(&ctx).await,
            Which::Hot => scenarios::hot(&ctx).await,
            Which::HotSlow => scenarios::hot_slow(&ctx).await,
            Which::Knee => scenarios::knee(&ctx).await,
            Which::KneeNodes => scenarios::knee_nodes(&ctx).await,
            Which::Console => scenarios::console(&ctx).await,
            Which::All => unreachable!("expanded above"),
        };
        let mut r = outcome.unwrap_or_else(|e| {
            let mut r = ScenarioResult::new(name, String::new());
            r.error = Some(format!("{e:#}"));
            r
        });
        r.wall_s = t0.elapsed().as_secs_f64();
        r.harness_cpu_s = server::own_stats().cpu_s - cpu0;
        if *which == Which::Baseline {
            ctx.baseline_rps = r.figures.first().map(|f| f.value);
        }
        match &r.error {
            Some(e) => eprintln!("    {name} FAILED: {e}"),
            None => {
                for f in &r.figures {
                    eprintln!("    {}: {}", f.label, f.value_text());
                }
            }
        }
        results.push(r);
    }

    settle(cli.quick).await;
    let disk_after = tokio::task::spawn_blocking(move || disk::fsync_probe(probes))
        .await?
        .context("probing the disk's fsync latency")?;
    let disk_lines = format!(
        "{}\n{}\n",
        disk::describe("before", &disk_before),
        disk::describe("after", &disk_after)
    );
    let table = results::text_table(&results);
    println!("\n{table}\n{disk_lines}");
    let report = serde_json::json!({
        "date": chrono::Local::now().to_rfc3339(),
        "commit": commit(),
        "quick": cli.quick,
        "hookline_bin": bin,
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "mem_total_gib": mem_total_gib(),
            "disk_fsync_before_ms": disk_before,
            "disk_fsync_after_ms": disk_after,
        },
        "server_flags": {
            "max_in_flight": scenarios::SERVER_MAX_IN_FLIGHT,
            "endpoint_max_concurrency": scenarios::ENDPOINT_MAX_CONCURRENCY,
            "note": "hookline's defaults; only --listen, --data-dir, --allow-target and --admin-token are given (and --database-url with one; takeover adds --lease-secs)",
        },
        "baseline_concurrency": counts.delivery_concurrency(),
        "counts": counts,
        "total_s": started.elapsed().as_secs_f64(),
        "scenarios": results,
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(
        out.join("results.md"),
        format!("{}\n{disk_lines}", results::markdown_table(&results)),
    )?;
    println!(
        "results: {} (charts and server logs beside it); {:.0} s in all",
        out.join("results.json").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(results.iter().all(|r| r.error.is_none()))
}
