//! The contract test: schemathesis (from PyPI, in the test venv) generates requests for
//! every operation of `/api/v1/openapi.json` (schema-valid ones and schema-breaking
//! ones, in its examples, coverage, fuzzing and stateful phases) and runs all of its
//! checks on the answers: no 5xx, only documented status codes, content types and
//! headers, bodies that match the documented schemas, schema-breaking requests refused,
//! schema-valid ones accepted, `405` with `Allow` for other methods, auth not ignored.
//! A fixed seed and a bounded number of examples per operation keep the run
//! reproducible and short.
//!
//! The rules JSON Schema cannot state (across fields, against the clock or stored data)
//! are in the document's prose; `tests/python/contract_hooks.py` excuses a refusal of a
//! "schema-valid" request only when the 422 names one of them, and the run prints how
//! many it excused.
//!
//! The fuzzer makes up endpoint URLs, so the server runs with `--deny-target
//! 0.0.0.0/0,::/0`: no delivery connects anywhere, and no host name is even resolved.

use std::process::Command;

use crate::support::{require_python, Server, ADMIN_TOKEN};

/// Examples per operation and phase: about 4 000 cases in about 30 s on 2 cores.
const MAX_EXAMPLES: &str = "20";
const SEED: &str = "20261205";

/// The figure after `label` on the line that holds it (`Tested: 41`).
fn figure(out: &str, label: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?;
        rest.trim().split([' ', '/']).next()?.parse().ok()
    })
}

#[tokio::test]
async fn schemathesis_finds_the_server_true_to_its_openapi_document() {
    let Some(python) = require_python("schemathesis_finds_the_server_true_to_its_openapi_document")
    else {
        return;
    };
    let installed = Command::new(&python)
        .args(["-c", "import schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        if std::env::var_os("HOOKLINE_TEST_REQUIRE_TOOLS").is_some() {
            panic!("schemathesis is not installed in the test venv; run scripts/test");
        }
        eprintln!("SKIPPED contract test: schemathesis is not in the test venv (run scripts/test)");
        return;
    }
    let server = Server::start_with(&["--deny-target", "0.0.0.0/0,::/0"]).await;
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python");
    let work = tempfile::tempdir().expect("tempdir");
    let schema = server.url("/api/v1/openapi.json");
    let started = std::time::Instant::now();
    // A blocking child process: run it off the runtime that serves nothing here anyway.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .args(["-m", "schemathesis.cli", "run", &schema])
            .args([
                "--checks",
                "all",
                "--seed",
                SEED,
                "--max-examples",
                MAX_EXAMPLES,
            ])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            // Nothing learnt from an earlier run may change this one.
            .args(["--generation-database", "none", "--no-color"])
            .args(["--request-timeout", "10"])
            .env("SCHEMATHESIS_HOOKS", "contract_hooks")
            .env("PYTHONPATH", hooks)
            .current_dir(work.path())
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("join");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let operations = figure(&text, "Tested:");
    let cases = text
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .and_then(|l| l.trim().split(' ').next()?.parse::<u64>().ok());
    eprintln!(
        "contract: schemathesis tested {} operations with {} generated cases in {:.0?} (seed {SEED}, at most {MAX_EXAMPLES} examples per operation)",
        operations.map_or("?".into(), |n| n.to_string()),
        cases.map_or("?".into(), |n| n.to_string()),
        started.elapsed()
    );
    for line in text.lines().filter(|l| l.starts_with("contract:")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{text}",
        out.status.code()
    );
    assert!(
        operations.is_some_and(|n| n >= 40),
        "schemathesis tested too few operations:\n{text}"
    );
    assert!(
        cases.is_some_and(|n| n >= 1000),
        "schemathesis generated too few cases:\n{text}"
    );
}
