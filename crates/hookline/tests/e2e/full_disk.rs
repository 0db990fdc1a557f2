//! A full disk (issue 15, defect 5), on a real one: a 4 MiB tmpfs as the data dir, filled
//! up while the server runs. Writes are refused with 503 `storage_full` and `Retry-After`
//! (never a 500, never a connection closed without an answer), health says degraded,
//! `/metrics` shows it, the log says so once; once space is freed everything resumes by
//! itself, and every message acknowledged before, during or after is intact and
//! delivered. Needs root to mount the tmpfs; skipped (with a line saying so) otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::delivery_limits::{new_app, new_endpoint};
use crate::receiver::{Behavior, Receiver};
use crate::support::{Api, Server, ADMIN_TOKEN};

/// A tmpfs of `size` mounted on a temp dir; unmounted when dropped, also on a panic.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, after saying so, when not root or the mount fails.
    fn mount(size: &str, test: &str) -> Option<Tmpfs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("{test}: skipped: needs root to mount a tmpfs");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk has no room left; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk) {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "filling: {e}");
                return filler;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files open must not keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// One request's fate: the status, `Retry-After` and body, or the transport error.
type Answer = Result<(u16, Option<String>, Value), String>;

async fn create_message(http: &reqwest::Client, base: &str, app: &str, i: usize) -> Answer {
    let resp = http
        .post(format!("{base}/api/v1/app/{app}/msg"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "eventType": "disk.test",
            "payload": {"index": i, "pad": "x".repeat(2000)},
        }))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.json().await.map_err(|e| format!("body: {e:?}"))?;
    Ok((status, retry_after, body))
}

async fn metrics(api: &Api) -> String {
    let resp = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_answers_503_storage_full_and_recovers_by_itself() {
    let test = "a_full_disk_answers_503_storage_full_and_recovers_by_itself";
    let Some(fs) = Tmpfs::mount("4m", test) else {
        return;
    };
    let log_dir = tempfile::tempdir().expect("tempdir");
    let log = log_dir.path().join("hookline.log");
    let receiver = Receiver::start().await;
    // Slow enough that the first attempts end, and fail to be recorded, on the full disk.
    receiver.set("/hook", Behavior::Delay(Duration::from_millis(1500), 200));
    let server = Server::start_logging(
        &fs.path().join("data"),
        &["--allow-target", "127.0.0.0/8"],
        Some(&log),
    )
    .await;
    let api = server.client();
    let app = new_app(&api, "full disk").await;
    new_endpoint(&api, &app, json!({"url": receiver.url("/hook")})).await;
    let http = reqwest::Client::new();
    // Message id -> the payload index it carries, for everything acknowledged.
    let mut acked: Vec<(String, usize)> = Vec::new();
    let mut next = 0;
    for _ in 0..5 {
        let (status, _, body) = create_message(&http, &server.base, &app, next)
            .await
            .unwrap();
        assert_eq!(status, 202, "before the disk is full: {body}");
        acked.push((body["id"].as_str().unwrap().to_string(), next));
        next += 1;
    }

    let filler = fs.fill();

    // Concurrent creates over pooled keep-alive connections: every one gets an answer,
    // a 202 (the write still fit in room the database had) or a 503 storage_full.
    let mut senders = JoinSet::new();
    for t in 0..8 {
        let (http, base, app) = (http.clone(), server.base.clone(), app.clone());
        senders.spawn(async move {
            let mut answers = Vec::new();
            for k in 0..25 {
                let i = 1000 + t * 100 + k;
                answers.push((i, create_message(&http, &base, &app, i).await));
            }
            answers
        });
    }
    let mut refused = 0;
    while let Some(answers) = senders.join_next().await {
        for (i, answer) in answers.unwrap() {
            let (status, retry_after, body) =
                answer.unwrap_or_else(|e| panic!("a create got no answer on a full disk: {e}"));
            match status {
                202 => acked.push((body["id"].as_str().unwrap().to_string(), i)),
                503 => {
                    refused += 1;
                    assert_eq!(body["code"], "storage_full", "{body}");
                    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
                    assert_eq!(retry_after.as_deref(), Some("5"), "Retry-After on {body}");
                }
                _ => panic!("a create on a full disk answered {status} {body}"),
            }
        }
    }
    assert!(refused > 0, "the disk never filled up");
    eprintln!(
        "{test}: on the full disk {refused} creates were refused, {} acknowledged in all",
        acked.len()
    );

    // Health says degraded, /metrics says full and counts the refusals; reads still work.
    let (status, health) = api.get("/api/v1/health").await;
    assert_eq!(status, 503, "health on a full disk: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["code"], "storage_full", "{health}");
    let text = metrics(&api).await;
    assert_eq!(metric(&text, "hookline_storage_full"), Some(1.0), "{text}");
    assert!(
        metric(&text, "hookline_storage_full_writes_refused_total")
            .is_some_and(|n| n >= refused as f64),
        "{text}"
    );
    let (status, listed) = api.get(&format!("/api/v1/app/{app}/msg?limit=1")).await;
    assert_eq!(status, 200, "reads work on a full disk: {listed}");
    // Other writes are refused the same way. A small write can still fit in room SQLite
    // already holds (a WAL it restarts from the top), so endpoints with 64 KiB of metadata
    // go in until one is refused: 80 of them are more than the whole disk.
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|k| (format!("k{k}"), json!("m".repeat(4096))))
        .collect();
    let mut refused_endpoint = None;
    for _ in 0..80 {
        let (status, body) = api
            .post(
                &format!("/api/v1/app/{app}/endpoint"),
                json!({"url": receiver.url("/other"), "metadata": metadata}),
            )
            .await;
        match status {
            201 => continue,
            503 => {
                refused_endpoint = Some(body);
                break;
            }
            _ => panic!("an endpoint create on a full disk answered {status} {body}"),
        }
    }
    let body = refused_endpoint.expect("80 endpoints of 64 KiB fit on a full 4 MiB disk");
    assert_eq!(body["code"], "storage_full", "{body}");

    // The attempts that started before the disk filled up end now, and cannot be recorded
    // (their deliveries go out again once their lease expires, long after this test).
    assert!(
        receiver
            .wait_for(Duration::from_secs(10), |r| r.count() >= 5)
            .await,
        "the first deliveries never started"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = metrics(&api).await;
    assert!(
        metric(&text, "hookline_storage_full_writes_refused_total")
            .is_some_and(|n| n >= (refused + 6) as f64),
        "attempt reports (and more) refused too: {text}"
    );

    // Space comes back: the server notices by itself, with nothing else written.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, health) = api.get("/api/v1/health").await;
        if status == 200 {
            assert_eq!(health["status"], "ok", "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} {health} 15 s after space came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&metrics(&api).await, "hookline_storage_full"),
        Some(0.0)
    );
    for _ in 0..5 {
        let (status, _, body) = create_message(&http, &server.base, &app, next)
            .await
            .unwrap();
        assert_eq!(status, 202, "after space came back: {body}");
        acked.push((body["id"].as_str().unwrap().to_string(), next));
        next += 1;
    }

    // Every acknowledged message reads back intact and reaches the receiver.
    for (id, i) in &acked {
        let (status, msg) = api.get(&format!("/api/v1/app/{app}/msg/{id}")).await;
        assert_eq!(status, 200, "message {id}: {msg}");
        assert_eq!(msg["payload"]["index"], json!(i), "message {id}: {msg}");
        assert_eq!(msg["payload"]["pad"], json!("x".repeat(2000)));
    }
    let delivered = receiver
        .wait_for(Duration::from_secs(60), |r| {
            let seen: std::collections::HashSet<String> = r
                .requests_to("/hook")
                .iter()
                .filter_map(|q| q.header("webhook-id"))
                .collect();
            acked.iter().all(|(id, _)| seen.contains(id))
        })
        .await;
    assert!(delivered, "not every acknowledged message was delivered");

    // The log tells the episode once, its end once, and nothing per request or attempt.
    let log = std::fs::read_to_string(&log).expect("read the log");
    if std::env::var_os("HOOKLINE_TEST_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("the disk holding the database is full"), 1, "{log}");
    assert_eq!(count("writes succeed again"), 1, "{log}");
    assert_eq!(count("ERROR"), 0, "{log}");
}

#[tokio::test]
async fn a_start_on_a_full_disk_says_so_in_one_line() {
    let test = "a_start_on_a_full_disk_says_so_in_one_line";
    let Some(fs) = Tmpfs::mount("1m", test) else {
        return;
    };
    let data = fs.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    fs.fill();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN_TOKEN,
            ])
            .arg("--data-dir")
            .arg(&data)
            .env_remove("HOOKLINE_DATABASE_URL")
            .env_remove("HOOKLINE_CONFIG")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits within 30 s")
    .expect("run hookline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let expected = format!(
        "hookline: cannot start: the disk holding {} is full",
        data.display()
    );
    assert_eq!(stderr.trim(), expected, "stderr: {stderr}");
}
