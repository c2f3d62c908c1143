//! Black-box tests of the real `portcullis` binary: `check-config`, `serve`
//! (master-key bootstrap, graceful SIGTERM with a stream in flight, secrets
//! never logged), the `keys` CLI and `quickstart`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod procs;

use std::path::Path;

use futures_util::StreamExt;
use procs::{Gateway, Proc, create_key, mock_provider, run, serve, sse_data};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const MASTER: &str = "master-LEAKCHECK-7f3a9c2e51d04b88e6";
const PROVIDER_KEY: &str = "sk-provider-LEAKCHECK-4d2e8a1b9c7f6e5d-Qz9W";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

// ------------------------------------------------------------- check-config

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "ok.yaml",
        "listen: 127.0.0.1:9999\n\
         database: sqlite://${DB_PATH:-gateway.db}\n\
         admin:\n  master_key: ${TEST_MASTER}\n\
         default_provider: local\n\
         providers:\n\
         \x20 - name: openai\n    kind: openai\n    api_key: ${TEST_PROVIDER_KEY}\n    models: [gpt-4o-mini]\n\
         \x20 - name: local\n    kind: openai_compatible\n    base_url: http://127.0.0.1:9/v1\n    allowed_endpoints: [chat, embeddings]\n    timeouts:\n      connect: 2s\n      first_byte: 5m\n      idle: 1m\n\
         limits:\n  max_body_bytes: 1048576\n",
    );
    let (status, out, err) = run(
        dir.path(),
        &["check-config", "--config", &cfg],
        &[("TEST_MASTER", MASTER), ("TEST_PROVIDER_KEY", PROVIDER_KEY)],
    )
    .await;
    assert!(status.success(), "valid config refused: {err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(out.contains("2 provider(s)"), "{out}");
    assert!(out.contains("127.0.0.1:9999"), "{out}");
    assert!(
        !out.contains(MASTER) && !out.contains(PROVIDER_KEY) && !err.contains(PROVIDER_KEY),
        "check-config printed a secret: {out}{err}"
    );

    // `$PORTCULLIS_CONFIG` is used when `--config` is absent.
    let (status, out, err) = run(
        dir.path(),
        &["check-config"],
        &[
            ("PORTCULLIS_CONFIG", &cfg),
            ("TEST_MASTER", MASTER),
            ("TEST_PROVIDER_KEY", PROVIDER_KEY),
        ],
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("ok.yaml"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_an_unknown_field_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "typo.yaml",
        "listen: 127.0.0.1:0\nproviders:\n  - name: openai\n    kind: openai\n    api_kee: sk-x\n",
    );
    let (status, out, err) = run(dir.path(), &["check-config", "--config", &cfg], &[]).await;
    assert!(!status.success(), "an unknown field was accepted: {out}");
    assert!(err.contains("api_kee"), "field not named: {err}");
    assert!(err.contains("line 5"), "line not named: {err}");
    assert!(err.contains("typo.yaml"), "file not named: {err}");

    // A top-level typo too.
    let cfg = write(dir.path(), "top.yaml", "listen: 127.0.0.1:0\nlistne: x\n");
    let (status, _, err) = run(dir.path(), &["check-config", "--config", &cfg], &[]).await;
    assert!(!status.success());
    assert!(err.contains("listne") && err.contains("line 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_names_every_missing_variable_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "vars.yaml",
        "listen: 127.0.0.1:0\nadmin:\n  master_key: ${PCT_MISSING_MASTER}\nproviders:\n  - name: openai\n    kind: openai\n    api_key: ${PCT_MISSING_PROVIDER}\n    base_url: ${PCT_SET_URL:-http://127.0.0.1:9/v1}\n",
    );
    let (status, out, err) = run(dir.path(), &["check-config", "--config", &cfg], &[]).await;
    assert!(!status.success(), "missing variables accepted: {out}");
    assert!(err.contains("2 error(s)"), "{err}");
    let line_of = |var: &str| {
        err.lines()
            .find(|l| l.contains(var))
            .unwrap_or_else(|| panic!("`{var}` not named: {err}"))
            .to_owned()
    };
    assert!(line_of("PCT_MISSING_MASTER").contains("line 3"), "{err}");
    assert!(line_of("PCT_MISSING_PROVIDER").contains("line 7"), "{err}");
    assert!(
        !err.contains("PCT_SET_URL"),
        "a defaulted variable is an error: {err}"
    );

    // Setting the variables makes the same file valid.
    let (status, _, err) = run(
        dir.path(),
        &["check-config", "--config", &cfg],
        &[
            ("PCT_MISSING_MASTER", MASTER),
            ("PCT_MISSING_PROVIDER", PROVIDER_KEY),
        ],
    )
    .await;
    assert!(status.success(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reports_every_semantic_error_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.yaml",
        "listen: not-an-address\n\
         providers:\n\
         \x20 - name: openai\n    kind: openai\n    base_url: http://127.0.0.1:9/v1\n    api_key: sk-one\n\
         \x20 - name: openai\n    kind: openai\n    base_url: ftp://example\n    api_key: sk-two\n\
         default_provider: nope\n\
         limits:\n  max_body_bytes: 0\n",
    );
    let (status, out, err) = run(dir.path(), &["check-config", "--config", &cfg], &[]).await;
    assert!(!status.success(), "invalid config accepted: {out}");
    for (location, words) in [
        ("listen:", "not-an-address"),
        ("providers[1].name:", "twice"),
        ("providers[1].base_url:", "ftp://example"),
        ("default_provider:", "nope"),
        ("limits.max_body_bytes:", "greater than zero"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(location) && l.contains(words)),
            "no `{location} … {words}` line in:\n{err}"
        );
    }
    assert!(err.contains("5 error(s)"), "{err}");

    // `serve` refuses the same file and does not start.
    let (status, _, err) = run(dir.path(), &["serve", "--config", &cfg], &[]).await;
    assert!(!status.success());
    assert!(err.contains("providers[1].name"), "{err}");

    // An unreadable file is an error naming it.
    let missing = dir.path().join("absent.yaml").display().to_string();
    let (status, _, err) = run(dir.path(), &["check-config", "--config", &missing], &[]).await;
    assert!(!status.success());
    assert!(err.contains("absent.yaml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_without_a_file_uses_defaults_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, err) = run(dir.path(), &["check-config"], &[]).await;
    assert!(status.success(), "defaults refused: {err}");
    assert!(out.contains("built-in defaults"), "{out}");
    assert!(out.contains("0 provider(s)"), "{out}");
    assert!(out.contains("127.0.0.1:8080"), "{out}");

    let (status, out, err) = run(
        dir.path(),
        &["check-config"],
        &[("OPENAI_API_KEY", PROVIDER_KEY)],
    )
    .await;
    assert!(status.success(), "{err}");
    assert!(out.contains("1 provider(s)"), "{out}");
    assert!(!out.contains(PROVIDER_KEY), "{out}");

    // `./portcullis.yaml` is picked up when present.
    write(dir.path(), "portcullis.yaml", "listen: 127.0.0.1:7777\n");
    let (status, out, err) = run(dir.path(), &["check-config"], &[]).await;
    assert!(status.success(), "{err}");
    assert!(
        out.contains("portcullis.yaml") && out.contains("127.0.0.1:7777"),
        "{out}"
    );
}

// --------------------------------------------------------------- master key

/// The generated master key in `serve`'s stderr.
fn generated_master_key(stderr: &str) -> Option<String> {
    let at = stderr.find("pcm_")?;
    let key: String = stderr[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (key.len() > 20).then_some(key)
}

fn db_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("portcullis.db")
        {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    assert!(!all.is_empty(), "no database files in {}", dir.display());
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_the_master_key_once_and_stores_only_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("portcullis.db");
    let db_url = format!("sqlite://{}", db.display());
    let args = ["--listen", "127.0.0.1:0", "--database", &db_url];
    let http = reqwest::Client::new();

    let mut first = serve("serve-1", dir.path(), dir.path(), &args, &[]).await;
    let stderr = first.proc.stderr();
    let master = generated_master_key(&stderr)
        .unwrap_or_else(|| panic!("no generated pcm_ key on stderr:\n{stderr}"));
    assert_eq!(
        stderr.matches(&master).count(),
        1,
        "the key must be shown exactly once:\n{stderr}"
    );
    assert!(first.proc.stdout().is_empty() || !first.proc.stdout().contains(&master));

    let list = |key: String, url: String| {
        let http = http.clone();
        async move {
            http.get(format!("{url}/admin/keys"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = list(master.clone(), first.url.clone()).await;
    assert_eq!(resp.status(), 200, "the generated key does not open /admin");
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"].is_array(), "{v}");
    let last = if master.ends_with('x') { "y" } else { "x" };
    let wrong = format!("{}{last}", &master[..master.len() - 1]);
    assert_eq!(list(wrong, first.url.clone()).await.status(), 401);
    let (_, client_key) = create_key(&first.url, &master, json!({"name": "k"})).await;
    assert_eq!(
        list(client_key.clone(), first.url.clone()).await.status(),
        401,
        "a client key opened the admin API"
    );
    first.proc.stop().await;

    let mut second = serve("serve-2", dir.path(), dir.path(), &args, &[]).await;
    let stderr2 = second.proc.stderr();
    assert!(
        !stderr2.contains("pcm_") && !stderr2.contains(&master),
        "a second start printed a master key:\n{stderr2}"
    );
    let resp = list(master.clone(), second.url.clone()).await;
    assert_eq!(resp.status(), 200, "the first key no longer works");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1), "{v}");
    second.proc.stop().await;

    let bytes = db_bytes(dir.path());
    assert!(
        !contains(&bytes, master.as_bytes()),
        "the master key is in the database"
    );
    assert!(
        !contains(&bytes, client_key.as_bytes()),
        "a client key is in the database"
    );
    let master_hex: String = Sha256::digest(master.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        contains(&bytes, master_hex.as_bytes()),
        "the master key's SHA-256 digest is not stored"
    );
    assert!(
        contains(&bytes, &Sha256::digest(client_key.as_bytes())),
        "the client key's SHA-256 digest is not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_config_file_proxies_to_the_provider_found_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_provider::MockProvider::start(
        "127.0.0.1:0".parse().unwrap(),
        mock_provider::MockOptions::default(),
    )
    .await
    .unwrap();
    let base = mock.base_url();
    let mut gw = serve(
        "gateway",
        dir.path(),
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[
            ("PORTCULLIS_MASTER_KEY", MASTER),
            ("OPENAI_API_KEY", PROVIDER_KEY),
            ("OPENAI_BASE_URL", &base),
        ],
    )
    .await;
    assert!(
        !gw.proc.stderr().contains("pcm_"),
        "a master key was generated although one is configured"
    );
    let (_, key) = create_key(&gw.url, MASTER, json!({})).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str()),
        "the provider did not get OPENAI_API_KEY"
    );
    gw.proc.stop().await;
    // The default store is ./portcullis.db in the working directory.
    assert!(
        dir.path().join("portcullis.db").exists(),
        "no ./portcullis.db"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_plain_text_to_files_and_names_a_busy_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("portcullis.db").display());
    let env = [("PORTCULLIS_MASTER_KEY", MASTER)];
    let mut gw = serve(
        "gateway",
        dir.path(),
        dir.path(),
        &["--listen", "127.0.0.1:0", "--database", &db],
        &env,
    )
    .await;
    let stderr = gw.proc.stderr();
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "terminal escape codes in a log file: {stderr:?}"
    );

    // A second gateway on the same address fails at once and says which address.
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    let (status, _, err) = run(
        dir.path(),
        &["serve", "--listen", &addr, "--database", &other],
        &env,
    )
    .await;
    assert!(!status.success(), "two gateways on one address");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    gw.proc.stop().await;
}

// ------------------------------------------------------------------ SIGTERM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_then_flushes_its_usage_record() {
    sigterm_lets_a_stream_finish("2").await;
}

/// One worker thread runs Tokio's current-thread scheduler: the same serving,
/// streaming, signal handling, drain and ledger flush on that one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_on_the_one_thread_scheduler() {
    sigterm_lets_a_stream_finish("1").await;
}

async fn sigterm_lets_a_stream_finish(threads: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, base) = mock_provider(dir.path(), &["--chunk-delay-ms", "100"]).await;
    let db = dir.path().join("portcullis.db");
    let cfg = write(
        dir.path(),
        "gw.yaml",
        &procs::config_yaml(&db, &base, "[gpt-4o-mini]", true),
    );
    let mut env = vec![
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
    ];
    env.push(("PORTCULLIS_WORKER_THREADS", threads));
    let mut gw = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let scheduler = if threads == "1" {
        "scheduler=\"current_thread\" workers=1"
    } else {
        "scheduler=\"multi_thread\" workers=2"
    };
    assert!(gw.proc.stderr().contains(scheduler), "{}", gw.proc.stderr());
    let (key_id, key) = create_key(&gw.url, MASTER, json!({"user": "u1"})).await;

    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\"content\"") {
        let chunk = stream
            .next()
            .await
            .expect("stream ended early")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let before = sse_data(&text).len();
    assert!(!text.contains("[DONE]"), "the stream was not slow: {text}");

    gw.proc.signal("TERM");
    gw.proc
        .wait_for("the shutdown log line", |t| t.find("shutting down"))
        .await;
    // The listener is closed before that line is logged: no new connections.
    let addr = gw.url.trim_start_matches("http://").to_owned();
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the gateway still accepts connections after SIGTERM"
    );

    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream broke during shutdown"),
        ));
    }
    let data = sse_data(&text);
    assert!(data.len() > before, "nothing arrived after SIGTERM");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content.split(' ').count(), 20, "missing chunks: {content}");
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("no usage chunk");
    assert_eq!(usage["usage"]["completion_tokens"], 20);

    let status = gw.proc.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        gw.proc.output()
    );

    // The shutdown flushed the daily spend too: the file holds it, marked up
    // to the last ledger row, before any open could catch it up.
    {
        let file = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let spend: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(cost_micros), 0) FROM spend_daily WHERE subject = ?",
        )
        .bind(format!("key:{key_id}"))
        .fetch_one(&file)
        .await
        .unwrap();
        let (ledger, last): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(cost_micros), 0), MAX(id) FROM usage_records WHERE key_id = ?",
        )
        .bind(&key_id)
        .fetch_one(&file)
        .await
        .unwrap();
        assert!(ledger > 0, "the streamed request was not priced");
        assert_eq!(spend, ledger, "daily spend not flushed at shutdown");
        let mark: String =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'spend_daily_through_id'")
                .fetch_one(&file)
                .await
                .unwrap();
        assert_eq!(mark, last.to_string());
        file.close().await;
    }
    let store = portcullis::store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = store.usage_by_request(&rid).await.unwrap();
    assert_eq!(rows.len(), 1, "usage record lost at shutdown: {rows:?}");
    let r = &rows[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.key_id.as_deref(), Some(key_id.as_str()));
    assert_eq!(r.user.as_deref(), Some("u1"));
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.endpoint.as_deref(), Some("chat"));
    assert_eq!(r.completion_tokens, Some(20));
    assert_eq!(
        r.prompt_tokens,
        usage["usage"]["prompt_tokens"].as_u64(),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_cuts_the_stream_exits_0_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    // 20 chunks, 400 ms apart: the stream outlasts the 1 s grace period many times over.
    let mock = mock_provider::MockProvider::start(
        "127.0.0.1:0".parse().unwrap(),
        mock_provider::MockOptions {
            chunk_delay: std::time::Duration::from_millis(400),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let db = dir.path().join("portcullis.db");
    let yaml = format!(
        "{}server:\n  shutdown_grace: 1s\n",
        procs::config_yaml(&db, &mock.base_url(), "[gpt-4o-mini]", true)
    );
    let cfg = write(dir.path(), "gw.yaml", &yaml);
    let env = [
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
    ];
    let mut gw = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let (_, key) = create_key(&gw.url, MASTER, json!({})).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.expect("no first chunk").unwrap();
    let mut text = String::from_utf8_lossy(&first).into_owned();

    gw.proc.signal("TERM");
    let mut broken = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    assert!(
        broken || !text.contains("[DONE]"),
        "the stream outlived the grace period: {text}"
    );
    let status = gw.proc.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}\n{}",
        gw.proc.output()
    );
    assert!(
        gw.proc.stderr().contains("grace period over"),
        "{}",
        gw.proc.output()
    );

    let store = portcullis::store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = store.usage_by_request(&rid).await.unwrap();
    assert_eq!(rows.len(), 1, "the cut request was not recorded: {rows:?}");
    assert!(
        rows[0].error_code.is_some(),
        "a cut stream recorded as a success: {:?}",
        rows[0]
    );
    mock.shutdown().await;
}

// ------------------------------------------------------------------ secrets

/// What the mock echoes for a key (OpenAI's mask: 5 chars, stars, 4 chars).
fn masked(key: &str) -> String {
    let n = key.chars().count();
    format!(
        "{}{}{}",
        &key[..5],
        "*".repeat(n.saturating_sub(12)),
        &key[n - 4..]
    )
}

/// The secret part of a client key (after `pcs_<id>_`).
fn secret_part(key: &str) -> String {
    key.splitn(3, '_').nth(2).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_listings_or_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_provider::MockProvider::start(
        "127.0.0.1:0".parse().unwrap(),
        mock_provider::MockOptions::default(),
    )
    .await
    .unwrap();
    let db = dir.path().join("portcullis.db");
    let cfg = write(
        dir.path(),
        "gw.yaml",
        &procs::config_yaml(
            &db,
            &mock.base_url(),
            "[gpt-4o-mini, text-embedding-3-small, mock-error-401]",
            true,
        ),
    );
    let env = [
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
        ("RUST_LOG", "trace"),
    ];
    let mut gw = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let http = reqwest::Client::new();
    let url = gw.url.clone();
    let mut bodies = Vec::new(); // every body the gateway sent back

    // Create a key via the admin API.
    let resp = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "leak", "user": "u", "team": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let key = created["key"].as_str().unwrap().to_owned();

    // A chat completion, a stream and an embedding.
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    bodies.push(resp.text().await.unwrap());
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .header("x-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let streamed = resp.text().await.unwrap();
    assert!(streamed.contains("[DONE]"), "{streamed}");
    bodies.push(streamed);

    // A wrong (well-formed, unknown) key, a malformed one, a key in the query string.
    let (_, wrong) = portcullis::authn::keys::generate();
    let wrong = wrong.expose().to_owned();
    let malformed = format!("{}-typo", &key[..key.len() - 3]);
    for bad in [&wrong, &malformed] {
        let resp = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(bad)
            .json(&chat("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        bodies.push(resp.text().await.unwrap());
    }
    for query in [format!("api_key={key}"), format!("x={key}")] {
        let resp = http
            .get(format!("{url}/v1/models?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "a key in the query string was accepted");
        bodies.push(resp.text().await.unwrap());
    }
    // Two different credentials.
    let resp = http
        .get(format!("{url}/v1/models"))
        .bearer_auth(&key)
        .header("api-key", &wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    bodies.push(resp.text().await.unwrap());

    // The provider refuses "our" key and echoes a fragment of it.
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("mock-error-401"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let upstream_error = resp.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&upstream_error).unwrap()["error"]["message"].is_string(),
        "{upstream_error}"
    );
    bodies.push(upstream_error);

    // Rotate, use the new key, revoke it, list and show.
    let resp = http
        .post(format!("{url}/admin/keys/{id}/rotate"))
        .bearer_auth(MASTER)
        .json(&json!({"grace_seconds": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let rotated: Value = resp.json().await.unwrap();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let resp = http
        .get(format!("{url}/v1/models"))
        .bearer_auth(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(format!("{url}/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the rotated-out key still works");
    bodies.push(resp.text().await.unwrap());
    let resp = http
        .delete(format!("{url}/admin/keys/{new_id}"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    bodies.push(resp.text().await.unwrap());
    let resp = http
        .get(format!("{url}/v1/models"))
        .bearer_auth(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the revoked key still works");
    bodies.push(resp.text().await.unwrap());
    for path in [
        "/admin/keys".to_owned(),
        format!("/admin/keys/{id}"),
        format!("/admin/keys/{new_id}"),
        "/admin/usage?group_by=key".to_owned(),
    ] {
        let resp = http
            .get(format!("{url}{path}"))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        if path.starts_with("/admin/keys") {
            assert!(text.contains("_…"), "{path} shows no key prefix: {text}");
        }
        bodies.push(text);
    }
    // A wrong master key.
    let resp = http
        .get(format!("{url}/admin/keys"))
        .bearer_auth(format!("{MASTER}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    bodies.push(resp.text().await.unwrap());

    // The provider did get its key, and never a client credential.
    let seen = mock.requests();
    assert!(seen.len() >= 3, "{seen:?}");
    for r in &seen {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        let all = format!("{:?}", r.headers);
        assert!(!all.contains(&key) && !all.contains(MASTER), "{all}");
    }

    gw.proc.stop().await;
    let output = gw.proc.output();
    assert!(
        output.contains("TRACE"),
        "the gateway did not log at trace level:\n{output}"
    );
    assert!(output.contains(&id), "key ids (public) should be logged");

    let fragment = masked(PROVIDER_KEY);
    let secrets: Vec<(&str, String)> = vec![
        ("provider key", PROVIDER_KEY.to_owned()),
        ("provider key fragment", fragment.clone()),
        ("provider key fragment (start)", fragment[..8].to_owned()),
        ("master key", MASTER.to_owned()),
        ("secret marker", "LEAKCHECK".to_owned()),
        ("client key", key.clone()),
        ("client key secret", secret_part(&key)),
        ("rotated key", new_key.clone()),
        ("rotated key secret", secret_part(&new_key)),
        ("wrong key", wrong.clone()),
        ("wrong key secret", secret_part(&wrong)),
        ("malformed key", malformed.clone()),
        ("upstream's echo", "Incorrect API key".to_owned()),
    ];
    for (what, secret) in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the {what} appears in the gateway's output"
        );
        for b in &bodies {
            assert!(
                !b.contains(secret.as_str()),
                "the {what} appears in a response body: {b}"
            );
        }
    }
    mock.shutdown().await;
}

// --------------------------------------------------------------------- keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_cli_creates_lists_shows_updates_rotates_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("portcullis.db");
    let cfg = write(
        dir.path(),
        "gw.yaml",
        &procs::config_yaml(
            &db,
            "http://127.0.0.1:9/v1",
            "[gpt-4o-mini, gpt-4o, text-embedding-3-small]",
            true,
        ),
    );
    let env = [
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
    ];
    let mut gw: Gateway = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let url = gw.url.clone();
    let cli_env = [
        ("PORTCULLIS_URL", url.as_str()),
        ("PORTCULLIS_ADMIN_KEY", MASTER),
    ];
    let keys = |args: &'static [&'static str]| {
        let dir = dir.path().to_path_buf();
        async move {
            let mut all = vec!["keys"];
            all.extend_from_slice(args);
            run(&dir, &all, &cli_env).await
        }
    };
    let http = reqwest::Client::new();
    let models = |key: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.get(format!("{url}/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };

    // create (table)
    let (status, out, err) = keys(&[
        "create", "--name", "ci-bot", "--user", "bob", "--team", "blue", "--models", "gpt-4o*",
    ])
    .await;
    assert!(status.success(), "{err}");
    let header = out.lines().next().unwrap_or_default();
    for col in ["ID", "NAME", "USER", "TEAM", "STATUS", "MODELS"] {
        assert!(header.contains(col), "no {col} column: {out}");
    }
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line: {out}"))
        .trim()
        .to_owned();
    assert!(key.starts_with("pcs_"), "{key}");
    assert_eq!(out.matches(&key).count(), 1, "the key must be shown once");
    assert!(
        out.contains("ci-bot") && out.contains("bob") && out.contains("active"),
        "{out}"
    );
    let id = key.split('_').nth(1).unwrap().to_owned();
    let resp = models(key.clone()).await;
    assert_eq!(resp.status(), 200, "the created key does not work");
    let listed: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"gpt-4o-mini") && !ids.contains(&"text-embedding-3-small"),
        "--models was not applied: {ids:?}"
    );

    // create --json
    let (status, out, err) = keys(&["create", "--json", "--name", "scripted"]).await;
    assert!(status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).expect("--json output parses");
    let id2 = v["id"].as_str().unwrap().to_owned();
    let key2 = v["key"].as_str().unwrap().to_owned();
    assert_eq!(v["name"], "scripted");
    assert_eq!(models(key2.clone()).await.status(), 200);

    // list
    let (status, out, err) = keys(&["list"]).await;
    assert!(status.success(), "{err}");
    assert!(out.contains(&id) && out.contains(&id2), "{out}");
    assert!(
        !out.contains(&key) && !out.contains(&key2),
        "list shows a secret"
    );
    let (status, out, _) = keys(&["list", "--json"]).await;
    assert!(status.success());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(
        !out.contains(&secret_part(&key)),
        "list --json shows a secret"
    );

    // show, update
    let (status, out, err) = run(dir.path(), &["keys", "show", &id], &cli_env).await;
    assert!(status.success(), "{err}");
    assert!(out.contains(&id) && out.contains("ci-bot"), "{out}");
    assert!(!out.contains(&key));
    let (status, _, err) = run(
        dir.path(),
        &[
            "keys",
            "update",
            &id,
            "--name",
            "renamed",
            "--team",
            "green",
            "--all-models",
        ],
        &cli_env,
    )
    .await;
    assert!(status.success(), "{err}");
    let (status, out, _) = run(dir.path(), &["keys", "show", &id, "--json"], &cli_env).await;
    assert!(status.success());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "renamed");
    assert_eq!(v["team"], "green");
    assert_eq!(v["user"], "bob");
    assert!(v["models"].is_null(), "{v}");

    // rotate
    let (status, out, err) = run(dir.path(), &["keys", "rotate", &id], &cli_env).await;
    assert!(status.success(), "{err}");
    let rotated = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line: {out}"))
        .trim()
        .to_owned();
    assert_ne!(rotated, key);
    assert_eq!(
        models(key.clone()).await.status(),
        401,
        "old key still works"
    );
    assert_eq!(models(rotated.clone()).await.status(), 200);

    // revoke
    let rotated_id = rotated.split('_').nth(1).unwrap().to_owned();
    let (status, out, err) = run(dir.path(), &["keys", "revoke", &rotated_id], &cli_env).await;
    assert!(status.success(), "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(models(rotated).await.status(), 401, "revoked key works");
    assert_eq!(models(key2).await.status(), 200, "an unrelated key broke");

    // errors: wrong admin key, no admin key, unknown id, unreachable gateway
    let (status, _, err) = run(
        dir.path(),
        &["keys", "list"],
        &[
            ("PORTCULLIS_URL", url.as_str()),
            ("PORTCULLIS_ADMIN_KEY", "not-the-master-key-at-all"),
        ],
    )
    .await;
    assert!(!status.success(), "a wrong admin key listed keys");
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("not-the-master-key-at-all"), "{err}");
    let (status, _, err) = run(
        dir.path(),
        &["keys", "list"],
        &[("PORTCULLIS_URL", url.as_str())],
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("PORTCULLIS_ADMIN_KEY"), "{err}");
    let (status, _, err) = run(dir.path(), &["keys", "show", "nosuchkey000"], &cli_env).await;
    assert!(!status.success());
    assert!(err.contains("404"), "{err}");

    gw.proc.stop().await;
    let (status, _, err) = run(dir.path(), &["keys", "list"], &cli_env).await;
    assert!(!status.success(), "listed keys from a stopped gateway");
    assert!(err.contains("cannot reach"), "{err}");
}

// --------------------------------------------------------------- quickstart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_prints_a_working_key_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut qs = Proc::spawn(
        "quickstart",
        dir.path(),
        dir.path(),
        &["quickstart", "--listen", "127.0.0.1:0"],
        &[],
    );
    let url = qs
        .wait_for("the gateway URL", |t| {
            let line = t.lines().find(|l| l.trim_start().starts_with("gateway "))?;
            let url = line.split_whitespace().nth(1)?.to_owned();
            (url.starts_with("http://") && t.contains("client key")).then_some(url)
        })
        .await;
    let key = qs
        .wait_for("the client key", |t| {
            let line = t
                .lines()
                .find(|l| l.trim_start().starts_with("client key"))?;
            let key = line.split_whitespace().nth(2)?.to_owned();
            (key.len() > 20).then_some(key)
        })
        .await;
    assert!(key.starts_with("pcs_"), "{key}");
    qs.wait_for("the curl line", |t| t.find("Ctrl-C")).await;
    let out = qs.stdout();
    assert!(
        out.contains(&format!("curl {url}/v1/chat/completions")),
        "{out}"
    );
    assert!(out.contains("from openai import OpenAI"), "{out}");

    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    let resp = reqwest::Client::new()
        .get(format!("{url}/v1/models"))
        .bearer_auth("pcs_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    qs.signal("INT");
    let status = qs.wait_exit().await;
    assert!(status.success(), "quickstart exited with {status}");
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "the gateway still answers after Ctrl-C"
    );
}

/// SIGHUP re-reads the file like `POST /admin/reload` and leaves an audit
/// event whose actor is `sighup`; a bad file on SIGHUP changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_provider::MockProvider::start(
        "127.0.0.1:0".parse().unwrap(),
        mock_provider::MockOptions::default(),
    )
    .await
    .unwrap();
    let db = dir.path().join("portcullis.db");
    let base = procs::config_yaml(&db, &mock.base_url(), "[gpt-4o-mini]", true);
    let cfg = write(dir.path(), "gw.yaml", &base);
    let env = [
        ("PORTCULLIS_MASTER_KEY", MASTER),
        ("TEST_PROVIDER_KEY", PROVIDER_KEY),
    ];
    let gw = serve("gateway", dir.path(), dir.path(), &["--config", &cfg], &env).await;
    let http = reqwest::Client::new();
    let reloads = || async {
        let v: Value = http
            .get(format!("{}/admin/audit", gw.url))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "config_reloaded")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(reloads().await.is_empty());
    gw.proc.signal("HUP");
    let mut events = Vec::new();
    for _ in 0..200 {
        events = reloads().await;
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor"], "sighup");
    assert_eq!(events[0]["target"], "config");
    // A broken file: refused and logged, no new event, the gateway still serves.
    write(dir.path(), "gw.yaml", &format!("{base}rules: [nonsense\n"));
    gw.proc.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(reloads().await.len(), 1);
    let resp = http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
