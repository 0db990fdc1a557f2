//! The README's walk-through, run as written: every command of its `sh walkthrough`
//! blocks, in order, through bash, with `hookline` on `PATH` being the binary under test.
//! So the README cannot go stale: a changed flag or output breaks this test.
//!
//! Only what a test cannot take from a person is changed: the server listens on a free
//! port in a temp data dir (flags appended to the README's `serve`), the listener gets a
//! free port (`--port`, and the README's `127.0.0.1:9000` becomes it), and the README's
//! placeholders get the values the server printed (its admin token, its URL). `serve` and
//! `listen` keep running, as they do in their terminals; every other command must exit 0.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::wait_until;

const README: &str = include_str!("../../../../README.md");

/// The commands of the README's `sh walkthrough` blocks, in order: continuation lines
/// joined, comments and blank lines left out.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```sh walkthrough";
            continue;
        }
        if trimmed == "```" {
            in_block = false;
            continue;
        }
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(!in_block, "an unclosed walkthrough block in README.md");
    commands
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A shell with `hookline` on `PATH` and no `HOOKLINE_*` of the test's environment.
fn shell(path: &str, script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .env_remove("HOOKLINE_URL")
        .env_remove("HOOKLINE_TOKEN")
        .env_remove("HOOKLINE_ADMIN_TOKEN")
        .env_remove("HOOKLINE_DATABASE_URL")
        .env_remove("HOOKLINE_DATA_DIR")
        .env_remove("HOOKLINE_CONFIG")
        .env_remove("HOOKLINE_ALLOW_TARGETS")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

#[test]
fn the_walkthrough_blocks_parse() {
    let cmds = walkthrough_commands(
        "x\n```sh walkthrough\n# c\nhookline a \\\n    --b 'c'\n\nexport X=1\n```\n```sh\nno\n```\n",
    );
    assert_eq!(cmds, ["hookline a  --b 'c'", "export X=1"]);
}

#[tokio::test]
async fn readme_walkthrough_runs_as_written() {
    let commands = walkthrough_commands(README);
    for needed in ["hookline serve", "hookline listen", "hookline send"] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "the walk-through has no `{needed}`: {commands:#?}"
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hookline"), bin.join("hookline")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let data = tmp.path().join("data");
    let listen_port = free_port();
    let mut substitutions = vec![(
        "127.0.0.1:9000".to_string(),
        format!("127.0.0.1:{listen_port}"),
    )];
    let mut exports: Vec<String> = Vec::new();
    let mut running: Vec<Child> = Vec::new();
    let listened = Arc::new(Mutex::new(String::new()));
    let mut sends = 0;
    let mut outputs: Vec<(String, String)> = Vec::new();

    for written in &commands {
        let mut cmd = written.clone();
        for (from, to) in &substitutions {
            cmd = cmd.replace(from.as_str(), to);
        }
        let prelude = exports.join("; ");
        if cmd.starts_with("hookline serve") {
            let script = format!(
                "exec {cmd} --listen 127.0.0.1:0 --data-dir '{}'",
                data.display()
            );
            let mut child = shell(&path, &script)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn serve");
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let (token, url) = tokio::time::timeout(Duration::from_secs(30), async {
                let mut token = None;
                while let Some(line) = lines.next_line().await.unwrap() {
                    if line.contains("created an admin API token") {
                        token = lines.next_line().await.unwrap();
                    } else if let Some(url) = line.strip_prefix("hookline: listening on ") {
                        return (
                            token.expect("the first start prints a token"),
                            url.to_string(),
                        );
                    }
                }
                panic!("`{written}` exited before listening");
            })
            .await
            .expect("serve starts within 30 s");
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            substitutions.push(("<the admin token>".into(), token));
            substitutions.push(("http://127.0.0.1:8080".into(), url));
            running.push(child);
        } else if cmd.starts_with("hookline listen") {
            let script = format!("{prelude}; exec {cmd} --port {listen_port}");
            let mut child = shell(&path, &script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn listen");
            let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
            tokio::time::timeout(Duration::from_secs(30), async {
                while let Some(line) = err.next_line().await.unwrap() {
                    if line.starts_with("hookline listen: receiving on") {
                        return;
                    }
                    eprintln!("{line}");
                }
                panic!("`{written}` exited before receiving");
            })
            .await
            .expect("listen starts within 30 s");
            tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
            let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
            let sink = listened.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = out.next_line().await {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
            running.push(child);
        } else if cmd.starts_with("export ") {
            exports.push(cmd);
        } else {
            // A person reads the listener's terminal before going on: each message sent
            // so far has arrived there.
            if sends > 0 {
                wait_until(
                    Duration::from_secs(20),
                    "the listener printed the delivery",
                    || listened.lock().unwrap().matches("signature:").count() >= sends,
                )
                .await;
            }
            let script = format!("set -e; {prelude}; {cmd}");
            let out = tokio::time::timeout(Duration::from_secs(60), shell(&path, &script).output())
                .await
                .unwrap_or_else(|_| panic!("`{written}` did not finish within 60 s"))
                .expect("run bash");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "`{written}` failed ({}):\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            if cmd.starts_with("hookline send") {
                sends += 1;
            }
            outputs.push((written.clone(), stdout));
        }
    }

    // What the README says happens: the delivery arrives, verified, with its body.
    let listened = listened.lock().unwrap().clone();
    eprintln!("the listener printed:\n{listened}");
    assert!(
        listened.contains("signature: valid (standard)"),
        "{listened}"
    );
    assert!(listened.contains("\"name\": \"Ada\""), "{listened}");
    let (_, attempts) = outputs
        .iter()
        .find(|(c, _)| c.starts_with("hookline attempts"))
        .expect("the walk-through shows the attempt log");
    assert!(
        attempts
            .lines()
            .any(|l| l.contains(" success ") && l.contains(" 200 ")),
        "{attempts}"
    );
    drop(running);
}
