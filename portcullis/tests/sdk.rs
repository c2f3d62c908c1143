//! End-to-end test with the official `openai` Python SDK: the real
//! `portcullis serve` in front of `portcullis mock-provider`, driven by
//! `tests/sdk/test_openai_sdk.py` (chat, streamed chat with usage, embeddings,
//! files, models, and a wrong key surfacing as `openai.AuthenticationError`).
//!
//! The SDK is installed by `scripts/test`. Without it this test fails, on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod procs;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use procs::{create_key, mock_provider, serve};
use serde_json::{Value, json};

const MASTER: &str = "sdk-test-master-key-0123456789abcdef";
const PROVIDER_KEY: &str = "sk-sdk-test-provider-key-0123456789";

/// Runs python3 with `args` in the crate directory; returns (success, stdout+stderr).
async fn python(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(Duration::from_secs(180), cmd.output()).await {
        Err(_) => panic!("python3 {} did not finish in 180 s", args.join(" ")),
        Ok(Err(e)) => panic!(
            "cannot run python3 ({e}); install Python 3 and run scripts/test, which installs the openai SDK"
        ),
        Ok(Ok(out)) => out,
    };
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_works_through_the_gateway() {
    let (ok, out) = python(&["-c", "import openai; print(openai.__version__)"], &[]).await;
    assert!(
        ok,
        "the `openai` Python package is not installed: run scripts/test (it installs \
         portcullis/tests/sdk/requirements.txt), or `python3 -m pip install -r \
         portcullis/tests/sdk/requirements.txt`\n{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (_mock, base) = mock_provider(dir.path(), &["--record"]).await;
    let db = dir.path().join("portcullis.db");
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(
        &cfg,
        procs::config_yaml(&db, &base, "[gpt-4o-mini, text-embedding-3-small]", true),
    )
    .unwrap();
    let env = [
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
    ];
    let cfg = cfg.display().to_string();
    let mut gw = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let (_, key) = create_key(&gw.url, MASTER, json!({"name": "sdk", "user": "py"})).await;

    let script = Path::new("tests").join("sdk").join("test_openai_sdk.py");
    let (ok, out) = python(
        &[script.to_str().unwrap()],
        &[
            ("PORTCULLIS_URL", gw.url.as_str()),
            ("PORTCULLIS_KEY", key.as_str()),
        ],
    )
    .await;
    assert!(ok, "the SDK script failed:\n{out}\n{}", gw.proc.output());
    assert!(out.contains("checks ok"), "{out}");

    // The SDK's traffic really went through the gateway and was accounted for.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + procs::WAIT;
    let rows = loop {
        let v: Value = http
            .get(format!("{}/admin/usage?group_by=model", gw.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = v["data"].as_array().cloned().unwrap_or_default();
        let has = |m: &str| rows.iter().any(|r| r["group"] == m);
        if has("gpt-4o-mini") && has("text-embedding-3-small") {
            break rows;
        }
        assert!(Instant::now() < deadline, "usage never recorded: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let chat = rows.iter().find(|r| r["group"] == "gpt-4o-mini").unwrap();
    assert!(chat["requests"].as_i64().unwrap() >= 3, "{chat}");
    assert!(chat["completion_tokens"].as_i64().unwrap() > 0, "{chat}");

    // The provider saw its own key on every request, never the client's.
    let mock_root = base.trim_end_matches("/v1");
    let seen: Value = http
        .get(format!("{mock_root}/__mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen = seen.as_array().cloned().unwrap_or_default();
    assert!(seen.len() >= 6, "too few upstream requests: {seen:?}");
    for r in &seen {
        let text = r.to_string();
        assert!(
            text.contains(&format!("Bearer {PROVIDER_KEY}")),
            "no provider key: {text}"
        );
        assert!(!text.contains(&key), "the client key reached the provider");
    }
    gw.proc.stop().await;
}
