//! A fake, fast, OpenAI-compatible LLM provider.
//!
//! `mock-provider` is used by Portcullis's quickstart, its black-box tests and
//! its benchmark. It speaks HTTP/1.1 and h2c (HTTP/2 over cleartext, prior
//! knowledge) on one port, answers every endpoint instantly and
//! deterministically, and can be told to misbehave through the `model` name.
//!
//! It is built to never be the bottleneck of a benchmark: the chat,
//! completion and embedding paths take no lock at all (the in-memory object
//! store is only touched by the stateful endpoints, the request log only when
//! recording is enabled), bodies are rendered with `serde` or pre-rendered
//! templates, and the request counter is a single atomic.
//!
//! # Library use
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_provider::{MockOptions, MockProvider};
//! let mock = MockProvider::start("127.0.0.1:0".parse().map_err(std::io::Error::other)?,
//!                                MockOptions::default()).await?;
//! let base = mock.base_url(); // "http://127.0.0.1:PORT/v1"
//! // ... point a client at `base` ...
//! assert_eq!(mock.request_count(), 0);
//! mock.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The same server is available as the `mock-provider` binary and as
//! `portcullis mock-provider` (both take [`MockArgs`] and call [`run`]).
//!
//! # Endpoints
//!
//! Everything lives under `/v1` and uses OpenAI's JSON shapes. Errors are
//! always `{"error":{"message","type","param","code"}}`; an unknown object id
//! answers 404 `invalid_request_error` (e.g. `No such File object: file-…`).
//! Ids are a prefix (`chatcmpl-`, `cmpl-`, `file-`, `asst_`, `thread_`,
//! `msg_`, `run_`, `step_`, `vs_`, `vsfb_`, `batch_`, `resp_`, `modr-`)
//! followed by 24 random alphanumerics.
//!
//! | Method & path | Notes |
//! |---|---|
//! | `POST /v1/chat/completions` | `chat.completion`, or SSE `chat.completion.chunk`s with `stream: true` |
//! | `POST /v1/completions` | legacy `text_completion`, also streamable |
//! | `POST /v1/embeddings` | `input`: string, strings, token array(s); `dimensions` (default 8); `encoding_format` `float`/`base64` |
//! | `POST /v1/moderations` | never flagged |
//! | `POST /v1/images/generations`, `POST /v1/audio/speech`, `POST /v1/audio/transcriptions` | images and transcriptions report `usage.input_tokens`/`output_tokens`; speech answers audio bytes |
//! | `GET /v1/models`, `GET /v1/models/{id}` | a fixed list; any id can be retrieved |
//! | `POST/GET /v1/files`, `GET/DELETE /v1/files/{id}`, `GET /v1/files/{id}/content` | multipart upload (`file`, `purpose`), `purpose` filter on list |
//! | `POST/GET /v1/assistants`, `GET/POST/DELETE /v1/assistants/{id}` | create, list, retrieve, modify, delete |
//! | `POST /v1/threads`, `GET/POST/DELETE /v1/threads/{id}` | create (optional `messages`), retrieve, modify, delete |
//! | `POST/GET /v1/threads/{t}/messages`, `GET/POST/DELETE …/messages/{m}` | list honours `run_id` |
//! | `POST/GET /v1/threads/{t}/runs`, `POST /v1/threads/runs`, `GET/POST …/runs/{r}`, `POST …/runs/{r}/cancel` | runs complete at once, append an assistant message, carry `usage`; `stream: true` emits Assistants SSE events |
//! | `GET …/runs/{r}/steps`, `GET …/runs/{r}/steps/{s}` | one `message_creation` step per run |
//! | `POST/GET /v1/vector_stores`, `GET/POST/DELETE /v1/vector_stores/{id}` | `file_ids` on create |
//! | `POST/GET /v1/vector_stores/{id}/files`, `GET/POST/DELETE …/files/{file}` | list honours `filter` |
//! | `POST /v1/vector_stores/{id}/file_batches`, `GET …/{b}`, `POST …/{b}/cancel`, `GET …/{b}/files` | |
//! | `POST/GET /v1/batches`, `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel` | completes at once; `output_file_id` holds one JSONL result per input line |
//! | `POST /v1/responses`, `GET/DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` | `previous_response_id` must exist; `stream: true` emits typed SSE events |
//! | uploads (+ parts, complete), conversations (+ items), fine-tuning jobs (+ checkpoints, events), containers (+ files), evals (+ runs, output items), videos (+ remix, content), skills, voice consents, voices | one generic store (`generic.rs`): create, list, retrieve, modify, delete, `…/content`, actions |
//! | anything else under `/v1` | 404 `Invalid URL (METHOD /path)` |
//! | `GET /healthz` | 200 `ok` |
//! | `GET /__mock/requests` / `DELETE /__mock/requests` | recorded requests as JSON (empty unless recording) / clear them and the counter |
//! | `GET /__mock/count` | `{"request_count": N}` |
//!
//! List endpoints return `{"object":"list","data":[…],"first_id","last_id","has_more"}`
//! and honour `limit` (default 20, clamped to 1..=100), `order` (`asc` |
//! `desc`, default `desc` by `created_at`, ties broken by insertion order),
//! `after` and `before` (ids of objects in the list; an unknown cursor is a
//! 400). Cancelling a run, a file batch or a batch (which all complete at
//! once) succeeds and sets the status to `cancelled`.
//!
//! `latency` (see [`MockOptions`]) is slept before the response headers of
//! every `/v1` request; `/healthz` and `/__mock/*` answer at once and are not
//! counted by [`MockProvider::request_count`].
//!
//! # Generated text and token accounting
//!
//! A completion consists of `N` content chunks where
//! `N = min(chunks, limit)` and `limit` is `max_completion_tokens` (else
//! `max_tokens`) for chat, `max_tokens` for legacy completions,
//! `max_output_tokens` for responses and `max_completion_tokens` for runs —
//! or unlimited when absent. The text is the word `mock` repeated `N` times
//! and separated by single spaces (`"mock mock mock"`); streamed, the first
//! delta is `"mock"` and every following one `" mock"`, so the deltas
//! concatenate to the non-streamed text. `completion_tokens` (`output_tokens`
//! for responses) is `N`; `finish_reason` is always `"stop"`.
//!
//! Prompt tokens are computed with integer division as
//!
//! ```text
//! prompt_tokens = Σ over messages ( 3 + (chars + 3) / 4 )
//! ```
//!
//! where `chars` is the number of Unicode scalar values (`str::chars().count()`)
//! of the message's string `content`, or of the concatenated `text` fields of
//! its content parts (parts without `text`, e.g. images, count 0; a missing or
//! `null` content counts 0). This applies to
//!
//! * chat completions: the `messages`;
//! * responses: `instructions` (if present) counts as one message, then each
//!   `input` item (a string `input` is one message);
//! * runs: every message of the thread at the time of the run (including
//!   `additional_messages`, excluding the generated reply).
//!
//! For legacy completions and embeddings, where there are no messages, every
//! prompt / input string counts `(chars + 3) / 4` and every token array its
//! length. `total_tokens = prompt_tokens + completion_tokens`.
//!
//! Embeddings are deterministic: the vector of an input is derived from an
//! FNV-1a hash of its text (or tokens) and the dimension count, then
//! normalised to unit length.
//!
//! # Fault injection
//!
//! Any endpoint that takes a `model` (including streams, `GET /v1/models/{id}`
//! and runs, where the run's `model` or else the assistant's is used) reacts to
//! these model names (a `provider/` prefix is ignored, e.g. `openai/mock-hang`):
//!
//! | Model | Behaviour |
//! |---|---|
//! | `mock-hang` | never sends response headers (sleeps for an hour) |
//! | `mock-hang-mid-stream` | sends headers and the first 2 content chunks (after the role chunk), then stalls forever; non-streamed, sends the first half of the JSON body then stalls |
//! | `mock-die-mid-stream` | sends 2 content chunks then aborts the body (HTTP/1.1 connection closed mid-chunk, HTTP/2 stream reset); non-streamed, aborts after half of the JSON body |
//! | `mock-error-NNN` | answers status `NNN` with an OpenAI error body (`400` `invalid_request_error`, `401` `invalid_api_key`, `403` `permission_denied`, `404` `model_not_found`, `429` `rate_limit_exceeded`, `5xx` `server_error`, …) |
//! | `mock-no-usage` | a normal answer without any `usage`: no field in the body, no usage chunk (even with `include_usage`) and no `"usage":null` on chunks |
//!
//! `mock-error-401` echoes the received key like OpenAI:
//! `Incorrect API key provided: sk-te********wxyz. You can find your API key at https://platform.openai.com/account/api-keys.`
//! The key is the `Authorization: Bearer` token; the echo is its first 5
//! characters, then `*` repeated `len - 12` times (saturating at 0; OpenAI's
//! 51-character keys show 39 stars), then its last 4 characters. Keys shorter
//! than 9 characters are echoed unchanged. Without a bearer token the message
//! is OpenAI's "You didn't provide an API key…".

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod assistants;
mod batches;
mod chat;
mod embeddings;
mod error;
mod fault;
mod files;
mod generic;
mod media;
mod responses;
mod router;
mod server;
mod sse;
mod store;
mod tokens;
mod util;
mod vector_stores;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinHandle;

pub(crate) use router::Shared;

/// Behaviour knobs of a [`MockProvider`].
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Sleep before sending the response headers of every `/v1` request.
    pub latency: Duration,
    /// Sleep between two server-sent events of a stream.
    pub chunk_delay: Duration,
    /// Content chunks (and completion tokens) per stream / completion.
    pub chunks: usize,
    /// Keep every request (method, path, headers, body) in memory.
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunks: 20,
            record: true,
        }
    }
}

/// A request as received by the mock (recorded when [`MockOptions::record`]
/// is on).
#[derive(Clone, Debug, Serialize)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and `?query` exactly as received, e.g. `/v1/files?limit=2`.
    pub path: String,
    /// Headers in received order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Raw body (serialised as a lossy UTF-8 string).
    #[serde(serialize_with = "util::serialize_lossy")]
    pub body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running mock provider. Dropping it (or calling
/// [`MockProvider::shutdown`]) stops the server and closes every connection.
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    /// Dropping it ends the server's HTTP/2 stream tasks.
    closed: Option<tokio::sync::watch::Sender<()>>,
}

impl std::fmt::Debug for MockProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockProvider")
            .field("addr", &self.addr)
            .field("options", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

impl MockProvider {
    /// Binds `listen` (port 0 picks a free port) and spawns the server task
    /// on the current Tokio runtime.
    pub async fn start(listen: SocketAddr, opts: MockOptions) -> std::io::Result<MockProvider> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts));
        let app = router::build(shared.clone());
        let (closed, closed_rx) = tokio::sync::watch::channel(());
        let task = tokio::spawn(server::serve(listener, shared.clone(), app, closed_rx));
        Ok(MockProvider {
            addr,
            shared,
            task: Some(task),
            closed: Some(closed),
        })
    }

    /// The bound address (with the real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/v1`, where an unspecified bind address (`0.0.0.0`,
    /// `::`) is replaced by the matching loopback address.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}/v1", SocketAddr::new(ip, self.addr.port()))
    }

    /// Requests that reached the mock since start (or the last
    /// [`clear`](Self::clear)), counted even when recording is off.
    /// `/healthz` and `/__mock/*` are not counted.
    pub fn request_count(&self) -> usize {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// TCP connections the mock has accepted since start: how a test sees
    /// whether a client reuses its keep-alive connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The recorded requests, oldest first (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorded()
    }

    /// Forgets the recorded requests and resets [`request_count`](Self::request_count).
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// Stops the server: stops accepting and drops every open connection
    /// (including hanging ones).
    pub async fn shutdown(mut self) {
        self.closed.take();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.closed.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Command-line arguments of `mock-provider` / `portcullis mock-provider`.
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Milliseconds to wait before sending response headers.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Milliseconds to wait between two streamed chunks.
    #[arg(long, default_value_t = 0)]
    pub chunk_delay_ms: u64,
    /// Content chunks (completion tokens) per completion.
    #[arg(long, default_value_t = 20)]
    pub chunks: usize,
    /// Record every request in memory (see `GET /__mock/requests`).
    #[arg(long)]
    pub record: bool,
}

impl MockArgs {
    /// The [`MockOptions`] these arguments describe.
    pub fn options(&self) -> MockOptions {
        MockOptions {
            latency: Duration::from_millis(self.latency_ms),
            chunk_delay: Duration::from_millis(self.chunk_delay_ms),
            chunks: self.chunks,
            record: self.record,
        }
    }
}

/// Runs the mock provider until Ctrl-C or SIGTERM.
pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    let mock = MockProvider::start(args.listen, args.options())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        addr = %mock.addr(),
        chunks = args.chunks,
        latency_ms = args.latency_ms,
        chunk_delay_ms = args.chunk_delay_ms,
        record = args.record,
        "mock provider listening on {}",
        mock.base_url()
    );
    shutdown_signal().await?;
    tracing::info!("mock provider shutting down");
    mock.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
