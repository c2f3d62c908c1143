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
pub(crate) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The gateway's HTTP service. Every request first gets its request id and
/// then authentication (deny by default, whatever the path) in [`App::call`],
/// then goes to the proxy pipeline or to the route table.
///
/// The proxy routes are the hot path, so a request whose path the route table
/// would certainly send to [`proxy::handle`] (see [`proxy_path`]) is handed to
/// the pipeline directly: no route lookup, no boxed layer and handler futures,
/// no path parameters copied (about a tenth of a request's instructions).
/// Every other path, edge cases included, is decided by the route table,
/// which still holds the proxy routes too.
#[derive(Clone, Debug)]
pub struct App {
    state: AppState,
    routes: Router,
    proxy_shortcut: bool,
}

impl App {
    /// Serves one request: its request id (the client's or a new one, echoed
    /// on every answer), then authentication, then [`App::dispatch`].
    pub async fn call(self, mut req: Request) -> Response {
        let id: Arc<str> = match req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
        {
            Some(v) if valid_request_id(v) => Arc::from(v),
            _ => new_request_id(),
        };
        req.extensions_mut().insert(RequestId(id.clone()));
        let mut resp = authn::layer(&self.state, req, |req| self.dispatch(req, &id)).await;
        if let Ok(v) = HeaderValue::from_str(&id) {
            resp.headers_mut().insert(X_REQUEST_ID, v);
        }
        resp
    }

    /// An authenticated request: to the proxy pipeline when its path is
    /// certainly a proxy route, else to the route table.
    async fn dispatch(&self, req: Request, id: &Arc<str>) -> Response {
        if self.proxy_shortcut
            && proxy_path(req.uri().path())
            && let Some(principal) = req.extensions().get::<authn::Principal>().cloned()
        {
            return proxy::serve(&self.state, principal, RequestId(id.clone()), req).await;
        }
        match tower::ServiceExt::oneshot(self.routes.clone(), req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The route table's paths under `/v1` and `/providers` (one place: [`router`]
/// builds the table from them, and a test checks [`proxy_path`] against a
/// table built from them).
mod paths {
    pub const MODELS: &str = "/v1/models";
    pub const MODEL: &str = "/v1/models/{*id}";
    pub const V1: &str = "/v1/{*rest}";
    pub const NATIVE: &str = "/providers/{provider}/{*rest}";
}

/// True when the route table would certainly send `path` to the proxy
/// handler: `/v1/{*rest}` other than the models routes, or
/// `/providers/{provider}/{*rest}`, each part non-empty. Anything less
/// certain is left to the route table.
pub fn proxy_path(path: &str) -> bool {
    if let Some(rest) = path.strip_prefix("/v1/") {
        return !rest.is_empty() && rest != "models" && !rest.starts_with("models/");
    }
    path.strip_prefix("/providers/")
        .and_then(|after| after.find('/').map(|i| (i, &after[i + 1..])))
        .is_some_and(|(i, rest)| i > 0 && !rest.is_empty())
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
pub fn router(state: AppState) -> App {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            paths::MODELS,
            get(proxy::list_models).fallback(models_method),
        )
        .route(paths::MODEL, get(proxy::get_model).fallback(models_method))
        .route(paths::V1, any(proxy::handle))
        .route(paths::NATIVE, any(proxy::handle));
    if state.config.admin.listen.is_none() {
        app = app.nest("/admin", admin::router());
    }
    layered(app, state, true)
}

/// The admin API alone (and the health checks), for `admin.listen`.
pub fn admin_router(state: AppState) -> App {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/admin", admin::router());
    layered(app, state, false)
}

fn layered(app: Router<AppState>, state: AppState, proxy_shortcut: bool) -> App {
    let routes = app
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(state.clone());
    App {
        state,
        routes,
        proxy_shortcut,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every path the shortcut takes is one the route table sends to the
    /// proxy handler (matched by axum's own router on the same paths), and
    /// the ordinary proxy paths do take it.
    #[tokio::test]
    async fn the_proxy_shortcut_takes_only_paths_the_route_table_sends_to_the_proxy() {
        let mark = |name: &'static str| move || async move { name };
        let table: Router = Router::new()
            .route("/healthz", get(mark("other")))
            .route(paths::MODELS, get(mark("other")).fallback(mark("other")))
            .route(paths::MODEL, get(mark("other")).fallback(mark("other")))
            .route(paths::V1, any(mark("proxy")))
            .route(paths::NATIVE, any(mark("proxy")))
            .nest("/admin", Router::new().route("/keys", get(mark("other"))))
            .fallback(mark("other"));
        let paths = [
            "/v1/chat/completions",
            "/v1/files/file-1/content",
            "/v1/x",
            "/v1//x",
            "/v1/models",
            "/v1/models/",
            "/v1/models/gpt-4o",
            "/v1/models/a/b",
            "/v1/modelsx",
            "/v1/",
            "/v1",
            "/v1/%2e%2e/admin/keys",
            "/v1/chat/completions/",
            "/providers/openai/v1/chat/completions",
            "/providers/openai/x",
            "/providers/openai/",
            "/providers/openai",
            "/providers//x",
            "/providers/",
            "/providers",
            "/admin/keys",
            "/healthz",
            "/",
        ];
        for path in paths {
            let resp = tower::ServiceExt::oneshot(
                table.clone(),
                http::Request::builder()
                    .method("POST")
                    .uri(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            let body = axum::body::to_bytes(resp.into_body(), 64).await.unwrap();
            if proxy_path(path) {
                assert_eq!(
                    &body[..],
                    b"proxy",
                    "{path}: the shortcut takes it, the table does not"
                );
            }
        }
        for path in [
            "/v1/chat/completions",
            "/v1/responses",
            "/v1/files/file-1",
            "/v1/modelsx",
            "/providers/anthropic/v1/messages",
        ] {
            assert!(proxy_path(path), "{path}");
        }
    }
}
