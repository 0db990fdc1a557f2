//! Clients that try to exhaust the API: idle connections by the thousand, request heads
//! sent a byte at a time, bodies that never arrive, more connections than allowed. The
//! server must close each within its timeouts and keep answering everyone else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{exchange, Server, ADMIN_TOKEN};

/// Reads until the server closes the connection (EOF or reset), returning what arrived
/// and when the close came, or `None` if it stayed open until `limit`.
async fn wait_closed(conn: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One `GET /api/v1/health` on a new connection; its latency.
async fn health_latency(addr: &str) -> Duration {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).await.expect("connect for health");
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(
            &mut conn,
            "GET /api/v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "",
        ),
    )
    .await
    .expect("health answers within 5 s");
    assert!(status.contains(" 200 "), "{status} {body}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_closed_while_health_keeps_answering() {
    let server = Server::start_with(&[
        "--api-idle-timeout-secs",
        "3",
        "--api-header-timeout-secs",
        "2",
        "--api-body-timeout-secs",
        "2",
    ])
    .await;
    let addr = server.base.trim_start_matches("http://").to_string();

    // 2 000 connections that never send a byte.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(&addr).await.expect("connect idle"));
    }
    // Slowloris: a request head trickled a byte every 300 ms, forever.
    let mut slow_heads = Vec::new();
    for _ in 0..5 {
        let mut conn = TcpStream::connect(&addr).await.expect("connect slow head");
        let started = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let head = b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nx-slow: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if conn.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let _ = tx.send(started.elapsed());
        });
        slow_heads.push(rx);
    }
    // Bodies that declare a megabyte and send ten bytes, with and without a token.
    let mut stalled_bodies = Vec::new();
    for auth in [true, false] {
        let mut conn = TcpStream::connect(&addr)
            .await
            .expect("connect stalled body");
        let auth = if auth {
            format!("authorization: Bearer {ADMIN_TOKEN}\r\n")
        } else {
            String::new()
        };
        let head = format!(
            "POST /api/v1/app HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: 1000000\r\n\r\n{{\"name\":\"x"
        );
        conn.write_all(head.as_bytes()).await.expect("send head");
        stalled_bodies.push((conn, Instant::now()));
    }

    // Everyone else is served promptly meanwhile.
    let mut latencies = Vec::new();
    for _ in 0..60 {
        latencies.push(health_latency(&addr).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    let p95 = latencies[latencies.len() * 95 / 100];
    let max = *latencies.last().unwrap();
    assert!(
        p95 < Duration::from_millis(50) && max < Duration::from_millis(500),
        "health latency with 2 000 idle and slow clients: p95 {p95:?}, max {max:?}"
    );

    // The offenders are closed within their timeouts (plus slack for a loaded machine).
    for (mut conn, since) in stalled_bodies {
        let (got, at) = wait_closed(&mut conn, Duration::from_secs(10))
            .await
            .expect("a stalled body's connection is closed");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 401"),
            "a stalled body is answered 408 (or 401 without a token): {text}"
        );
        if text.starts_with("HTTP/1.1 408") {
            assert!(text.contains("request_timeout"), "{text}");
        }
        assert!(
            at - since < Duration::from_secs(5),
            "stalled body closed after {:?}",
            at - since
        );
    }
    for rx in slow_heads {
        let lasted = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("a trickled head's connection is closed")
            .expect("sender finished");
        assert!(
            lasted < Duration::from_secs(5),
            "a head trickled a byte at a time was allowed {lasted:?}"
        );
    }
    let mut open_after = 0;
    for conn in &mut idle {
        match wait_closed(conn, Duration::from_secs(8)).await {
            Some((got, at)) => {
                assert!(got.is_empty(), "an idle connection got bytes");
                assert!(
                    at - opened < Duration::from_secs(9),
                    "idle connection closed after {:?}",
                    at - opened
                );
            }
            None => open_after += 1,
        }
    }
    assert_eq!(open_after, 0, "idle connections still open after 3 s");

    // And the API still works on a fresh connection.
    health_latency(&addr).await;
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let (_, text) = exchange(
        &mut conn,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "",
    )
    .await;
    for reason in ["idle", "slow_head"] {
        assert!(
            text.contains(&format!(
                "hookline_api_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "metrics count connections closed as {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = Server::start_with(&["--api-max-connections", "20"]).await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut conn = TcpStream::connect(&addr).await.expect("connect");
        // Each is really served (so the server holds it), then kept open idle.
        exchange(
            &mut conn,
            "GET /api/v1/health HTTP/1.1\r\nhost: x\r\n\r\n",
            "",
        )
        .await;
        held.push(conn);
    }
    let mut waiting = TcpStream::connect(&addr)
        .await
        .expect("the backlog takes it");
    waiting
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut buf))
            .await
            .is_err(),
        "a 21st connection is not served while 20 are open"
    );
    held.pop();
    let n = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(held.pop());
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    let (_, metrics) = exchange(
        &mut conn,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "",
    )
    .await;
    assert!(
        metrics.contains("hookline_api_connection_limit_reached_total 1"),
        "the cap being reached is counted once per episode"
    );
    assert!(metrics.contains("hookline_api_connections_open"));
}

/// Logs written to a pipe (a file, a collector) are plain text: colour codes are for a
/// terminal only.
#[tokio::test]
async fn logs_to_a_pipe_carry_no_colour_codes() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookline"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hookline");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("a log line");
            if line.contains("hookline API listening") {
                return line;
            }
        }
    })
    .await
    .expect("logs that it listens");
    assert!(
        !line.contains('\u{1b}'),
        "colour codes in a piped log: {line:?}"
    );
    assert!(line.contains("INFO"), "{line}");
}
