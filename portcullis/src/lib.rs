//! # Portcullis
//!
//! An auth-first gateway in front of LLM provider APIs. Provider keys stay in
//! the gateway; callers use gateway-issued keys. For every request the gateway
//! decides who is calling, what they may call, forwards the call with the
//! provider's key swapped in, streams the answer back unbuffered, and accounts
//! for it.
//!
//! ```text
//! listener ─► authn ─► authz ─► limits ─► proxy ─► accounting
//!             who?     may they? how much? forward  what did it cost?
//! ```
//!
//! | module | role |
//! |---|---|
//! | [`server`] | listener, HTTP/1.1 + h2c (or HTTPS), connection cap, graceful shutdown |
//! | [`tls`] | HTTPS and client certificates (mTLS), reloaded on SIGHUP |
//! | [`authn`] | credentials → [`authn::Principal`]; the deny-by-default layer |
//! | [`authz`] | path normalisation, endpoint allowlists, model routing → [`authz::Permit`]; resource ownership ([`authz::ownership`]) |
//! | [`limits`] | request rates (GCRA), token limits, concurrency caps, budgets → [`limits::Reservation`] |
//! | [`proxy`] | the handler that runs the pipeline; upstream clients and header hygiene |
//! | [`accounting`] | usage taps over streamed bodies, the batched usage ledger |
//! | [`store`] | persistence behind the [`store::Store`] trait (SQLite) |
//! | [`admin`] | the admin API (`/admin/...`) and its OpenAPI document |
//! | [`config`] | YAML model, interpolation, validation |
//! | [`error`] | the one public error type → OpenAI-shaped JSON |
//! | [`secret`] | redacting wrapper for every secret |
//! | [`clock`] | the one wall clock, movable in tests |
//! | [`cli`] | the `keys` subcommands, a thin client of the admin API |
//! | [`reload`] | SIGHUP / `POST /admin/reload`: swap in new access rules |

pub mod accounting;
pub mod admin;
pub mod authn;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod limits;
pub mod proxy;
pub mod reload;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::HeaderValue;

use crate::accounting::Ledger;
use crate::authn::Authenticator;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::ApiError;
use crate::proxy::upstream::Upstreams;
use crate::store::SharedStore;

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// The shared parts of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// Validated configuration, as loaded at start.
    pub config: Config,
    /// Access rules; replaced on reload while requests in flight keep theirs.
    pub rules: arc_swap::ArcSwap<authz::rules::Rules>,
    /// Ownership settings (`ownership:`, `forward_user_id`); replaced on reload.
    pub ownership: arc_swap::ArcSwap<authz::ownership::OwnershipConfig>,
    /// The store.
    pub store: SharedStore,
    /// Credential checks and the key cache.
    pub authn: Authenticator,
    /// Usage ledger queue.
    pub ledger: Ledger,
    /// Rate, token and concurrency limits and budgets.
    pub limits: limits::Limiter,
    /// Upstream HTTP clients.
    pub upstreams: Upstreams,
    /// Wall clock.
    pub clock: SharedClock,
    /// The listener's live TLS configuration, when `tls` is configured.
    pub tls: Option<Arc<tls::TlsState>>,
}

impl AppState {
    /// Bundles the parts.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::fmt::Debug for dyn store::Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl std::fmt::Debug for dyn clock::Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The request's id: the client's `x-request-id` if well-formed, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The request id of a request (empty if the middleware did not run).
pub fn request_id_of(req: &Request) -> Arc<str> {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Arc::from(""))
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `req_` + 9 base62 characters of the millisecond clock + 15 random base62
/// characters from the thread-local RNG. Time-ordered, so the ledger's
/// request-id index grows at its end instead of touching a random page per
/// insert; the thread-local RNG avoids a getrandom syscall per request
/// (request ids are not secrets).
fn new_request_id() -> Arc<str> {
    use rand::Rng;
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut time = [b'0'; 9];
    for slot in time.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(t % 62).unwrap_or(0)];
        t /= 62;
    }
    let mut id = String::with_capacity(28);
    id.push_str("req_");
    id.extend(time.iter().map(|b| char::from(*b)));
    let mut rng = rand::rng();
    for _ in 0..15 {
        id.push(char::from(ALPHABET[rng.random_range(0..62)]));
    }
    Arc::from(id)
}

/// `x-request-id`, named once (a `&str` name is parsed on every lookup).
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The one middleware layer around every route: the request id (the
/// client's or a new one, echoed on every answer), then authentication. One
/// layer rather than two: each `from_fn` layer boxes and moves the whole
/// request future once more.
async fn front(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id: Arc<str> = match req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) if valid_request_id(v) => Arc::from(v),
        _ => new_request_id(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = authn::layer(&state, req, next).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    resp
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::StoreUnavailable(e.to_string()).into_response()
        }
    }
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

async fn models_method() -> Response {
    ApiError::EndpointNotAllowed("models".into()).into_response()
}

/// The whole HTTP surface. Authentication wraps every route; only
/// [`authn::PUBLIC_ROUTES`] pass without a credential. With `admin.listen`
/// set, the admin API is not part of it (see [`admin_router`]).
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/v1/models",
            get(proxy::list_models).fallback(models_method),
        )
        .route(
            "/v1/models/{*id}",
            get(proxy::get_model).fallback(models_method),
        )
        .route("/v1/{*rest}", any(proxy::handle))
        .route("/providers/{provider}/{*rest}", any(proxy::handle));
    if state.config.admin.listen.is_none() {
        app = app.nest("/admin", admin::router());
    }
    layered(app, state)
}

/// The admin API alone (and the health checks), for `admin.listen`.
pub fn admin_router(state: AppState) -> Router {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/admin", admin::router());
    layered(app, state)
}

fn layered(app: Router<AppState>, state: AppState) -> Router {
    app.fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}
