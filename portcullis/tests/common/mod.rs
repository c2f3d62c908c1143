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
#[derive(Default)]
pub struct Opts {
    /// Mock behaviour.
    pub mock: MockOptions,
    /// Extra YAML appended to the provider entry (indented 4 spaces), e.g. timeouts.
    /// May also append further providers (`  - name: ...`); [`MOCK_BASE_URL`] in it is
    /// replaced by the mock's base URL.
    pub provider_extra: String,
    /// Extra lines of the `admin:` section (indented two spaces), after the master key.
    pub admin_extra: String,
    /// Extra top-level YAML ([`MOCK_BASE_URL`] is replaced as in `provider_extra`).
    pub top_extra: String,
    /// Use a manual clock starting at this epoch ms.
    pub manual_clock: Option<i64>,
    /// Replaces the provider's `allowed_endpoints` list (YAML flow list).
    pub allowed_endpoints: Option<String>,
    /// Point the provider at this base URL instead of the mock.
    pub base_url_override: Option<String>,
}

/// Tests send many bad credentials from 127.0.0.1 on purpose: unless a test
/// configures `auth:` itself, the per-address lockout is off.
fn with_default_auth(top: &str) -> String {
    if top.starts_with("auth:") || top.contains("\nauth:") {
        top.to_owned()
    } else {
        format!("{top}auth:\n  lockout:\n    enabled: false\n")
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

/// Placeholder in [`Opts::provider_extra`] / [`Opts::top_extra`] for the mock's base URL.
pub const MOCK_BASE_URL: &str = "@MOCK_BASE_URL@";

/// The harness provider's default `allowed_endpoints`.
pub const ALLOWED: &str = "[chat, completions, embeddings, responses, models, moderations, images, audio, files, uploads, assistants, threads, vector_stores, conversations, batches]";

/// The models the test provider lists.
pub const MODELS: &str = "[gpt-4o-mini, gpt-4o, text-embedding-3-small, gpt-image-1, tts-1, mock-transcribe, mock-hang, mock-hang-mid-stream, mock-die-mid-stream, mock-error-400, mock-error-401, mock-error-429, mock-error-500, mock-no-usage]";

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
            "listen: 127.0.0.1:0\ndatabase: sqlite://{db}\nadmin:\n  master_key: {MASTER}\n{admin_extra}providers:\n  - name: openai\n    kind: openai\n    base_url: {base}\n    api_key: {PROVIDER_KEY}\n    models: {MODELS}\n    allowed_endpoints: {allowed}\n{extra}{top}",
            allowed = opts.allowed_endpoints.as_deref().unwrap_or(ALLOWED),
            db = dir.path().join("portcullis.db").display(),
            admin_extra = opts.admin_extra,
            extra = opts.provider_extra.replace(MOCK_BASE_URL, &mock.base_url()),
            top = with_default_auth(&opts.top_extra.replace(MOCK_BASE_URL, &mock.base_url())),
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

    /// An admin call with the master key; `path` starts with `/admin`.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(MASTER);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// `GET` an admin path with the master key: the JSON answer.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.admin(reqwest::Method::GET, path, None)
            .await
            .json()
            .await
            .unwrap()
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

/// A response read off a raw socket by [`raw_http`].
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_text()))
    }

    /// The body as (lossy) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` byte for byte over a fresh TCP connection to the gateway at
/// `url` (`http://host:port`) and reads the response until the server closes.
/// Nothing normalises the request target, so hostile paths arrive as written.
/// The request should carry `Connection: close`.
pub async fn raw_http(url: &str, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://").unwrap_or(url);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("raw response timed out")
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let raw_body = &buf[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut out = Vec::new();
        let mut rest = raw_body;
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..nl]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            rest = &rest[nl + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
        out
    } else {
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(raw_body.len());
        raw_body[..len.min(raw_body.len())].to_vec()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A raw HTTP/1.1 request with `Connection: close`: `method target`, the
/// given extra header lines (each without CRLF) and a body.
pub fn raw_request(method: &str, target: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A mock provider and a gateway started from a configuration file in a temp
/// dir, so `POST /admin/reload` has a file to re-read; [`FileGateway::rewrite`]
/// changes it.
pub struct FileGateway {
    pub mock: MockProvider,
    pub gw: Running,
    pub url: String,
    pub http: reqwest::Client,
    pub path: std::path::PathBuf,
    pub dir: tempfile::TempDir,
}

impl FileGateway {
    /// Starts with extra `admin:` lines (indented two spaces) and extra top-level YAML.
    pub async fn start(admin_extra: &str, top_extra: &str) -> FileGateway {
        let mock = MockProvider::start("127.0.0.1:0".parse().unwrap(), MockOptions::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.yaml");
        let text = Self::yaml(&dir, &mock, admin_extra, top_extra);
        std::fs::write(&path, text).unwrap();
        let gw = server::spawn(Config::load(Some(&path)).unwrap(), None)
            .await
            .unwrap();
        let url = gw.url();
        FileGateway {
            mock,
            gw,
            url,
            http: reqwest::Client::new(),
            path,
            dir,
        }
    }

    fn yaml(
        dir: &tempfile::TempDir,
        mock: &MockProvider,
        admin_extra: &str,
        top_extra: &str,
    ) -> String {
        format!(
            "listen: 127.0.0.1:0\ndatabase: sqlite://{}\nadmin:\n  master_key: {MASTER}\n{admin_extra}auth:\n  lockout: {{enabled: false}}\nproviders:\n  - name: openai\n    kind: openai\n    base_url: {}\n    api_key: {PROVIDER_KEY}\n    models: [gpt-4o-mini, gpt-4o]\n{top_extra}",
            dir.path().join("db.sqlite").display(),
            mock.base_url()
        )
    }

    /// Rewrites the file (the gateway sees it on the next reload).
    pub fn rewrite(&self, admin_extra: &str, top_extra: &str) {
        std::fs::write(
            &self.path,
            Self::yaml(&self.dir, &self.mock, admin_extra, top_extra),
        )
        .unwrap();
    }

    /// `POST /admin/reload` with `cred`.
    pub async fn reload(&self, cred: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/admin/reload", self.url))
            .bearer_auth(cred)
            .send()
            .await
            .unwrap()
    }

    /// Creates a key with the master key; returns (id, key).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let v: Value = self
            .http
            .post(format!("{}/admin/keys", self.url))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }
}
