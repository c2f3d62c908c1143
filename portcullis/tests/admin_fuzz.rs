//! Property-based fuzzing of the admin API from its own OpenAPI document:
//! schemathesis (installed by `scripts/test` from
//! `tests/sdk/requirements.txt`) generates valid and invalid requests for
//! every documented operation — including stateful sequences that create,
//! change, rotate and revoke keys — and this test fails on any 5xx answer.
//! A fixed seed keeps runs repeatable. Without schemathesis the test fails,
//! on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_input_makes_the_gateway_fail() {
    let h = Harness::start().await;
    let work = tempfile::tempdir().unwrap();
    let schema = format!("{}/admin/openapi.json", h.url);
    let auth = format!("Authorization: Bearer {MASTER}");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args([
        "-m",
        "schemathesis.cli",
        "run",
        &schema,
        "--url",
        &h.url,
        "-H",
        &auth,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--seed",
        "20261202",
        // A slow CI machine must not fail the run by Hypothesis' timing checks.
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--no-color",
    ])
    .current_dir(work.path())
    .env("SCHEMATHESIS_TELEMETRY", "false")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(300), cmd.output()).await {
        Err(_) => panic!("schemathesis did not finish in 300 s"),
        Ok(Err(e)) => {
            panic!("cannot run python3 ({e}); run scripts/test, which installs schemathesis")
        }
        Ok(Ok(out)) => out,
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named schemathesis"),
        "schemathesis is not installed: run scripts/test (it installs portcullis/tests/sdk/requirements.txt)\n{text}"
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(
        text.contains("generated"),
        "schemathesis ran no test cases:\n{text}"
    );
    assert!(!text.contains(MASTER), "the master key was echoed");
    h.stop().await;
}
