//! Shared state, the route table and the mock's own endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::fault::Fault;
use crate::store::Store;
use crate::util::{json_bytes, ok_json};
use crate::{
    MockOptions, RecordedRequest, assistants, batches, chat, embeddings, files, responses,
    vector_stores,
};

/// State shared by every request.
pub(crate) struct Shared {
    pub opts: MockOptions,
    /// Requests that reached the mock (excluding `/healthz`, `/__mock/*`).
    pub count: AtomicUsize,
    /// Connections accepted since start (not reset by `clear`).
    pub connections: AtomicUsize,
    recorded: Mutex<Vec<RecordedRequest>>,
    store: Mutex<Store>,
    /// `"mock mock … mock"` with `opts.chunks` words.
    pub words: String,
    /// Rendered `GET /v1/models` body.
    models: Bytes,
}

/// Models listed by `GET /v1/models` (any other id works as well).
const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3-mini",
    "o4-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
    "mock-model",
];

/// `created` of every model.
const MODEL_CREATED: u64 = 1_700_000_000;

fn model_object(id: &str) -> serde_json::Value {
    json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": "mock-provider"})
}

impl Shared {
    pub fn new(opts: MockOptions) -> Self {
        let words = crate::util::words("", opts.chunks.min(1 << 20)).into_owned();
        let models = json!({
            "object": "list",
            "data": MODELS.iter().map(|m| model_object(m)).collect::<Vec<_>>(),
        });
        Self {
            opts,
            count: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            recorded: Mutex::new(Vec::new()),
            store: Mutex::new(Store::default()),
            words,
            models: Bytes::from(serde_json::to_vec(&models).unwrap_or_default()),
        }
    }

    /// Locks the object store (never held across an `.await`).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, r: RecordedRequest) {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(r);
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn clear(&self) {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

/// The full route table.
pub(crate) fn build(shared: Arc<Shared>) -> Router {
    use assistants as a;
    use vector_stores as vs;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/__mock/requests", get(mock_requests).delete(mock_clear))
        .route("/__mock/count", get(mock_count))
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/moderations", post(embeddings::moderations))
        .route("/v1/images/generations", post(crate::media::images))
        .route("/v1/audio/speech", post(crate::media::speech))
        .route(
            "/v1/audio/transcriptions",
            post(crate::media::transcriptions),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/v1/files", post(files::upload).get(files::list))
        .route("/v1/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route(
            "/v1/assistants",
            post(a::create_assistant).get(a::list_assistants),
        )
        .route(
            "/v1/assistants/{id}",
            get(a::get_assistant)
                .post(a::modify_assistant)
                .delete(a::delete_assistant),
        )
        .route("/v1/threads", post(a::create_thread))
        .route("/v1/threads/runs", post(a::create_thread_and_run))
        .route(
            "/v1/threads/{tid}",
            get(a::get_thread)
                .post(a::modify_thread)
                .delete(a::delete_thread),
        )
        .route(
            "/v1/threads/{tid}/messages",
            post(a::create_message).get(a::list_messages),
        )
        .route(
            "/v1/threads/{tid}/messages/{mid}",
            get(a::get_message)
                .post(a::modify_message)
                .delete(a::delete_message),
        )
        .route(
            "/v1/threads/{tid}/runs",
            post(a::create_run).get(a::list_runs),
        )
        .route(
            "/v1/threads/{tid}/runs/{rid}",
            get(a::get_run).post(a::modify_run),
        )
        .route("/v1/threads/{tid}/runs/{rid}/cancel", post(a::cancel_run))
        .route("/v1/threads/{tid}/runs/{rid}/steps", get(a::list_steps))
        .route("/v1/threads/{tid}/runs/{rid}/steps/{sid}", get(a::get_step))
        .route(
            "/v1/vector_stores",
            post(vs::create_store).get(vs::list_stores),
        )
        .route(
            "/v1/vector_stores/{vid}",
            get(vs::get_store)
                .post(vs::modify_store)
                .delete(vs::delete_store),
        )
        .route(
            "/v1/vector_stores/{vid}/files",
            post(vs::create_file).get(vs::list_files),
        )
        .route(
            "/v1/vector_stores/{vid}/files/{fid}",
            get(vs::get_file)
                .post(vs::modify_file)
                .delete(vs::delete_file),
        )
        .route(
            "/v1/vector_stores/{vid}/file_batches",
            post(vs::create_batch),
        )
        .route(
            "/v1/vector_stores/{vid}/file_batches/{bid}",
            get(vs::get_batch),
        )
        .route(
            "/v1/vector_stores/{vid}/file_batches/{bid}/cancel",
            post(vs::cancel_batch),
        )
        .route(
            "/v1/vector_stores/{vid}/file_batches/{bid}/files",
            get(vs::list_batch_files),
        )
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::retrieve))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .fallback(crate::generic::handle)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// `404 Invalid URL (METHOD /path)`.
async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(format!("Invalid URL ({method} {})", uri.path())).into_response()
}

async fn mock_requests(State(s): State<Arc<Shared>>) -> Response {
    ok_json(&s.recorded())
}

async fn mock_clear(State(s): State<Arc<Shared>>) -> Response {
    s.clear();
    ok_json(&json!({"cleared": true}))
}

async fn mock_count(State(s): State<Arc<Shared>>) -> Response {
    ok_json(&json!({"request_count": s.count.load(Ordering::Relaxed)}))
}

async fn list_models(State(s): State<Arc<Shared>>) -> Response {
    json_bytes(http::StatusCode::OK, s.models.clone())
}

async fn get_model(Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    Fault::of(&id).before_headers(&id, &headers).await?;
    Ok(ok_json(&model_object(&id)))
}
