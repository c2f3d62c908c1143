//! Shared black-box harness: a real mock provider and a real gateway, both on
//! `127.0.0.1:0`, a SQLite store in a temp dir, and an HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use mock_provider::{MockOptions, MockProvider};
use portcullis::clock::{ManualClock, SharedClock};
use portcullis::config::{Config, ConfigSource};
use portcullis::server::{self, Running};
use serde_json::{Value, json};

/// The master key every harness gateway uses.
pub const MASTER: &str = "pcm_test-master-key-0123456789abcdef";
/// The provider key the mock should see (never the client's).
pub const PROVIDER_KEY: &str = "sk-provider-secret-key-abcdefghijklmnop";

/// Knobs for [`Harness::start_with`].
pub struct Opts {
    /// Mock behaviour.
    pub mock: MockOptions,
    /// Extra YAML appended to the provider entry (indented 4 spaces), e.g. timeouts.
    pub provider_extra: String,
    /// Extra top-level YAML.
    pub top_extra: String,
    /// Use a manual clock starting at this epoch ms.
    pub manual_clock: Option<i64>,
    /// Point the provider at this base URL instead of the mock.
    pub base_url_override: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            mock: MockOptions::default(),
            provider_extra: String::new(),
            top_extra: String::new(),
            manual_clock: None,
            base_url_override: None,
        }
    }
}

/// A running mock provider + gateway.
pub struct Harness {
    pub mock: MockProvider,
    pub gw: Running,
    pub url: String,
    pub http: reqwest::Client,
    pub clock: Option<Arc<ManualClock>>,
    pub dir: tempfile::TempDir,
}

/// The models the test provider lists.
pub const MODELS: &str = "[gpt-4o-mini, gpt-4o, text-embedding-3-small, mock-hang, mock-hang-mid-stream, mock-die-mid-stream, mock-error-400, mock-error-401, mock-error-429, mock-error-500, mock-no-usage]";

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> Harness {
        let mock = MockProvider::start("127.0.0.1:0".parse().unwrap(), opts.mock.clone())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let base = opts
            .base_url_override
            .clone()
            .unwrap_or_else(|| mock.base_url());
        let yaml = format!(
            "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\nadmin:\n  master_key: {MASTER}\nproviders:\n  - name: openai\n    kind: openai\n    base_url: {base}\n    api_key: {PROVIDER_KEY}\n    models: {MODELS}\n    allowed_endpoints: [chat, completions, embeddings, responses, models, moderations, images, audio, files, uploads, assistants, threads, vector_stores, conversations, batches]\n{extra}{top}",
            db = dir.path().join("portcullis.db").display(),
            extra = opts.provider_extra,
            top = opts.top_extra,
        );
        let env = |_: &str| None;
        let config = Config::from_yaml(&yaml, &env, ConfigSource::Defaults)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{yaml}"));
        let clock = opts.manual_clock.map(|t| Arc::new(ManualClock::new(t)));
        let shared: Option<SharedClock> = clock.clone().map(|c| c as SharedClock);
        let gw = server::spawn(config, shared).await.unwrap();
        let url = gw.url();
        Harness {
            mock,
            gw,
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            clock,
            dir,
        }
    }

    /// Creates a key through the admin API; returns (id, key).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let resp = self
            .http
            .post(format!("{}/admin/keys", self.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "create key failed");
        let v: Value = resp.json().await.unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A key with no restrictions.
    pub async fn key(&self) -> String {
        self.create_key(json!({"name": "test", "user": "alice", "team": "red"}))
            .await
            .1
    }

    /// POST /v1/chat/completions with `model`.
    pub async fn chat(&self, key: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until the ledger holds a record for `request_id` (the writer is asynchronous).
    pub async fn usage_record(&self, request_id: &str) -> portcullis::store::UsageRecord {
        for _ in 0..200 {
            let rows = self
                .gw
                .state
                .store
                .usage_by_request(request_id)
                .await
                .unwrap();
            if let Some(r) = rows.into_iter().next() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no usage record for {request_id}");
    }

    /// Graceful shutdown (flushes the ledger).
    pub async fn stop(self) {
        self.gw.shutdown().await.unwrap();
    }
}

/// Simple chat body.
pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

/// Asserts an OpenAI-shaped error with `status` and `code`; returns the body.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "unexpected status");
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "x-request-id missing"
    );
    if status == 401 {
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
    }
    let v: Value = resp.json().await.expect("error body is JSON");
    let e = &v["error"];
    assert!(e.is_object(), "no error object: {v}");
    assert!(e["message"].is_string(), "no message: {v}");
    assert!(e["type"].is_string(), "no type: {v}");
    assert!(e.get("param").is_some(), "no param: {v}");
    assert_eq!(e["code"].as_str(), Some(code), "wrong code: {v}");
    v
}
