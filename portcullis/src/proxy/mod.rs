//! The proxy handler: the whole pipeline on one screen.
//!
//! ```text
//! authn (layer) ─► authz::authorize ─► ownership::guard ─► limits::admit ─► forward ─► ownership::record ─► MeteredBody (accounting)
//!                                      └─ own list ─► answered from the store   (Reservation → Meter, settled when it finishes)
//! ```

pub mod pool;
pub mod ssrf;
pub mod upstream;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use crate::AppState;
use crate::RequestId;
use crate::accounting::usage::TapKind;
use crate::accounting::{Meter, MeteredBody};
use crate::authn::Principal;
use crate::authz::ownership::{self, Plan};
use crate::authz::{self, Permit, RouteFacts, RouteRequest, Surface};
use crate::error::{ApiError, error_body};
use crate::limits::{self, estimate};

/// `/v1/*` and `/providers/{name}/*` in the route table: [`serve`].
pub async fn handle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> Response {
    serve(&state, principal, rid, req).await
}

/// `/v1/*` and `/providers/{name}/*`: authorize, forward, meter. Reached from
/// the route table ([`handle`]) or straight from [`crate::App`].
pub async fn serve(
    state: &AppState,
    principal: Principal,
    rid: RequestId,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let mut meter = Meter::new(
        state.ledger.clone(),
        state.clock.now_ms(),
        &rid.0,
        parts.method.as_str(),
        &principal,
    );
    let mut facts = RouteFacts::default();
    let result = pipeline(state, principal, &parts, body, &mut facts, &mut meter).await;
    meter.route(facts);
    match result {
        Ok(Outcome::Forwarded(permit, plan, upstream, admitted)) => {
            respond(state, &permit, &plan, upstream, meter, admitted).await
        }
        Ok(Outcome::Answered(resp)) => {
            meter.first_byte();
            meter.finish(resp.status().as_u16(), None, None);
            resp
        }
        Err(e) => {
            log_refusal(&rid, &e);
            meter.finish(e.status().as_u16(), None, Some(e.code()));
            e.into_response()
        }
    }
}

/// What the pipeline produced: a provider response to pass on, or an answer the
/// gateway made itself (a top-level list of the caller's own resources).
/// Built once per request and matched at once, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Forwarded(Permit, Plan, pool::UpstreamResponse, Admitted),
    Answered(Response),
}

/// What admission decided for the response: rate headers, and whether to
/// strip the usage chunk the gateway asked for.
struct Admitted {
    headers: limits::RateHeaders,
    strip_usage_chunk: bool,
}

async fn pipeline(
    state: &AppState,
    principal: Principal,
    parts: &Parts,
    body: Body,
    facts: &mut RouteFacts,
    meter: &mut Meter,
) -> Result<Outcome, ApiError> {
    let surface = surface_of(parts.uri.path())?;
    let body = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let route = RouteRequest {
        surface,
        query: parts.uri.query(),
        content_type,
        body,
    };
    let mut permit =
        authz::authorize(&state.config, &state.rules.load(), principal, route, facts).await?;
    let plan = ownership::guard(state, &mut permit, &parts.method, content_type).await?;
    if let Some(list) = plan.owned_list() {
        let answer = ownership::list::answer(state, &permit, parts, list).await?;
        return Ok(Outcome::Answered(answer));
    }
    let admitted = admit(state, &mut permit, content_type, meter).await?;
    let upstream = forward(state, parts, &permit).await?;
    Ok(Outcome::Forwarded(permit, plan, upstream, admitted))
}

/// Limits: estimates the request, adds what the body lacks, reserves against
/// every limit and budget that covers it, and hands the reservation to the
/// meter (so a client that leaves from here on is charged it).
async fn admit(
    state: &AppState,
    permit: &mut Permit,
    content_type: Option<&str>,
    meter: &mut Meter,
) -> Result<Admitted, ApiError> {
    let lim = &state.limits;
    let price = permit
        .model()
        .and_then(|m| lim.price(&permit.provider().name, m));
    let mut estimate = limits::Estimate::default();
    let mut strip_usage_chunk = false;
    let stream_usage = permit.provider().stream_usage;
    if lim.active()
        || lim.default_max_tokens().is_some()
        || (stream_usage && estimate::may_stream(permit.body()))
    {
        let found = estimate::inspect(
            permit.group(),
            permit.provider().kind,
            stream_usage,
            content_type,
            permit.body(),
            lim.default_max_tokens(),
            limits::config::FALLBACK_RESERVED_OUTPUT,
        );
        estimate = found.estimate;
        strip_usage_chunk = found.strip_usage_chunk;
        if let Some(body) = found.body {
            permit.set_body(body);
        }
    }
    let reservation = lim.admit(permit, estimate, price).await?;
    let headers = reservation.headers;
    meter.price(price);
    meter.reserve(reservation);
    Ok(Admitted {
        headers,
        strip_usage_chunk,
    })
}

/// Splits a raw path into its surface; nothing here decodes.
fn surface_of(path: &str) -> Result<Surface<'_>, ApiError> {
    if let Some(rest) = path.strip_prefix("/v1") {
        return Ok(Surface::V1 { rest });
    }
    let after = path.strip_prefix("/providers/").ok_or(ApiError::NotFound)?;
    let (provider, rest) = after.split_at(after.find('/').ok_or(ApiError::NotFound)?);
    Ok(Surface::Native { provider, rest })
}

/// Reads the body up to `limit` bytes; larger bodies get 413 before or while reading.
async fn read_body(body: Body, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest {
            message: "The request body could not be read.".into(),
            param: None,
        })
        .inspect_err(|_| tracing::debug!(error = %e, "request body read failed")),
    }
}

/// Sends the permitted request with the provider's key, within the first-byte timeout.
async fn forward(
    state: &AppState,
    parts: &Parts,
    permit: &Permit,
) -> Result<pool::UpstreamResponse, ApiError> {
    let provider = permit.provider();
    let rid = parts.extensions.get::<RequestId>().map(|r| &*r.0);
    state
        .upstreams
        .get(&provider.name)?
        .send(
            provider,
            parts.method.clone(),
            permit.upstream_path(),
            Some(permit.body().clone()),
            Some(&parts.headers),
            rid,
        )
        .await
}

/// Streams a successful response through the meter; sanitises an error response.
async fn respond(
    state: &AppState,
    permit: &Permit,
    plan: &Plan,
    upstream: pool::UpstreamResponse,
    mut meter: Meter,
    admitted: Admitted,
) -> Response {
    meter.first_byte();
    let (mut parts, body) = upstream.into_parts();
    let status = parts.status;
    let idle = permit.provider().timeouts.idle;
    if status.is_client_error() || status.is_server_error() {
        return upstream_error(state, permit, status, &parts.headers, body, meter).await;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = TapKind::of(content_type);
    let body = match ownership::record(state, plan, status, content_type, body, idle).await {
        Ok(body) => body,
        Err(e) => {
            meter.finish(e.status().as_u16(), None, Some(e.code()));
            return e.into_response();
        }
    };
    meter.answered();
    let mut body = MeteredBody::new(body, kind, meter, status.as_u16(), idle);
    let strip = admitted.strip_usage_chunk && kind == TapKind::Sse;
    if strip {
        body = body.strip_usage_chunk();
    }
    let mut resp = Response::new(Body::new(body));
    *resp.status_mut() = status;
    upstream::sanitize_response_headers(&mut parts.headers);
    *resp.headers_mut() = std::mem::take(&mut parts.headers);
    if strip {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    rate_headers(&admitted.headers, resp.headers_mut());
    resp
}

/// OpenAI's `x-ratelimit-*` headers for the tightest applicable limits (they
/// replace any the provider sent about the gateway's own account).
fn rate_headers(h: &limits::RateHeaders, out: &mut http::HeaderMap) {
    for (kind, v) in [("requests", h.requests), ("tokens", h.tokens)] {
        if let Some(v) = v {
            limits::insert_rate_headers(out, kind, v.limit, v.remaining, v.reset_ms);
        }
    }
}

/// Upstream error bodies are small: read them (bounded), pass the provider's
/// message on in OpenAI's shape with anything key-like removed. A provider
/// refusing the gateway's own key is the operator's problem: 502. The
/// provider's rate-limit hints go along, and a 429 always carries `Retry-After`.
async fn upstream_error(
    state: &AppState,
    permit: &Permit,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: pool::PooledBody,
    mut meter: Meter,
) -> Response {
    let _ = state;
    let provider = permit.provider();
    let idle = provider.timeouts.idle;
    let bytes = match tokio::time::timeout(idle, Limited::new(body, 64 * 1024).collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    if status == StatusCode::UNAUTHORIZED {
        tracing::error!(provider = %provider.name, "the provider refused the gateway's API key");
        meter.finish(502, None, Some("upstream_auth_failed"));
        return ApiError::UpstreamAuth.into_response();
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| err.and_then(|e| e.get(k)).and_then(|v| v.as_str());
    let raw_message = field("message").map(str::to_owned).unwrap_or_else(|| {
        format!(
            "The upstream provider answered with status {}.",
            status.as_u16()
        )
    });
    let key = provider.api_key.as_ref().map(|k| k.expose());
    let message = upstream::scrub(&raw_message, key);
    let error_type = field("type").unwrap_or(if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    });
    let code = field("code").map(|c| upstream::scrub(c, key));
    let mut out = error_body(&message, error_type, code.as_deref());
    if let Some(p) = field("param") {
        out["error"]["param"] = json!(upstream::scrub(p, key));
    }
    meter.finish(
        status.as_u16(),
        None,
        Some(code.as_deref().unwrap_or("upstream_error")),
    );
    let mut resp = (status, axum::Json(out)).into_response();
    upstream::forward_rate_limit_headers(headers, resp.headers_mut());
    if status == StatusCode::TOO_MANY_REQUESTS && !resp.headers().contains_key(header::RETRY_AFTER)
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn log_refusal(rid: &RequestId, e: &ApiError) {
    match e.fault() {
        crate::error::Fault::Client => {
            tracing::info!(request_id = %rid.0, status = e.status().as_u16(), code = e.code(), cause = %e, "request refused");
        }
        crate::error::Fault::Upstream => {
            tracing::warn!(request_id = %rid.0, status = e.status().as_u16(), code = e.code(), cause = %e, "upstream failure");
        }
        crate::error::Fault::Gateway => {
            tracing::error!(request_id = %rid.0, status = e.status().as_u16(), code = e.code(), cause = %e, "gateway failure");
        }
    }
}

/// `GET /v1/models`: answered by the gateway, the models this caller may use.
pub async fn list_models(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let data: Vec<_> = authz::visible_models(&state.config, &state.rules.load(), &principal)
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{model}`: one of the caller's models, else 404.
pub async fn get_model(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    req: Request,
) -> Response {
    let id = req.uri().path().strip_prefix("/v1/models/").unwrap_or("");
    match authz::visible_models(&state.config, &state.rules.load(), &principal)
        .into_iter()
        .find(|(m, _)| m == id)
    {
        Some((id, owner)) => {
            axum::Json(json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .into_response()
        }
        None => ApiError::ModelNotFound(id.to_owned()).into_response(),
    }
}
