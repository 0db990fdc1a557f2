//! The official Svix Python SDK (`svix` from PyPI) drives hookline through a full flow:
//! applications, event types, endpoints (secrets, headers), messages (idempotency,
//! pagination, filters) and the SDK's error types. The flow lives in
//! `tests/python/svix_flow.py`; this test starts the server and runs it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::support::{self, Server};

#[tokio::test(flavor = "multi_thread")]
async fn svix_python_sdk_full_flow() {
    let Some(python) = support::require_python("svix_python_sdk_full_flow") else {
        return;
    };
    let server = Server::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/svix_flow.py");

    let run = Command::new(&python)
        .arg(&script)
        .env("HOOKLINE_URL", &server.base)
        .env("HOOKLINE_TOKEN", &server.token)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("svix_flow.py finishes within 180 s")
        .expect("run svix_flow.py");

    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "svix_flow.py failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("svix_flow: OK"),
        "svix_flow.py exited 0 without its summary:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
}
