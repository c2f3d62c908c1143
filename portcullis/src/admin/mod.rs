//! The admin API under `/admin`: gateway keys, users, usage, audit, reload,
//! explain, and the OpenAPI document generated from these handlers.
//!
//! Who may call which route is decided before any handler runs
//! ([`crate::authn::admin::access`]); a `team_admin` is further confined here
//! to its own team's client keys, users and usage — anything else answers 404,
//! exactly like something that does not exist. Every change is written to the
//! audit log with its actor, target, and the object before and after.

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::OpenApi;

pub mod limits;

use crate::AppState;
use crate::authn::{Admin, AdminRole, keys};
use crate::clock::{parse_time, rfc3339};
use crate::error::ApiError;
use crate::store::{ApiKeyRecord, AuditEvent, KeyPatch, UsageGroup, UsageRow, UserRecord};

/// Admin routes, nested under `/admin`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", post(create_key).get(list_keys))
        .route(
            "/keys/{id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route("/keys/{id}/rotate", post(rotate_key))
        .route("/usage", get(usage))
        .route("/budgets", get(limits::budgets))
        .route("/teams", get(limits::list_teams))
        .route(
            "/teams/{id}",
            get(limits::get_team)
                .patch(limits::patch_team)
                .delete(limits::delete_team),
        )
        .route("/limits", get(limits::stats))
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).patch(update_user))
        .route("/audit", get(audit))
        .route(
            "/resources",
            get(crate::authz::ownership::admin::list_resources),
        )
        .route("/reload", post(reload))
        .route("/explain", post(explain))
        .route("/openapi.json", get(openapi))
}

/// The OpenAPI document of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Portcullis admin API", description = "Manage gateway keys and users, read usage and the audit log. Every route needs an admin credential as `Authorization: Bearer <credential>`: the master key, a gateway key created with an `admin_role`, or an identity token whose roles map through `admin.roles`. Roles: `admin` (everything), `team_admin` (keys, users and usage of its own team), `viewer` (read usage and audit)."),
    paths(create_key, list_keys, get_key, update_key, revoke_key, rotate_key, usage, list_users, get_user, update_user, audit, reload, explain, crate::authz::ownership::admin::list_resources, openapi, limits::budgets, limits::stats, limits::list_teams, limits::get_team, limits::patch_team, limits::delete_team),
    components(schemas(crate::authz::ownership::admin::ResourceList, crate::store::ResourceRecord, ExplainRequest, crate::authz::explain::Explanation, crate::authz::explain::Stage, crate::reload::ReloadReport, UserList, PatchUser, AuditList, UserRecord, AuditEvent, CreateKey, PatchKey, RotateKey, KeyView, CreatedKey, KeyList, UsageList, UsageRow, UsageGroup, limits::BudgetList, limits::BudgetView, limits::LimiterStats, crate::limits::config::BudgetPeriod, crate::limits::config::LimitSet, crate::limits::config::OwnBudget, limits::TeamView, limits::TeamList, limits::PatchOwn)),
    modifiers(&MasterKeyAuth),
    security(("master_key" = []))
)]
pub struct AdminApi;

struct MasterKeyAuth;

impl utoipa::Modify for MasterKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "master_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        // The answers every admin route can give, whatever the handler does:
        // written once here instead of on every path.
        const COMMON: &[(&str, &str)] = &[
            ("400", "Invalid query or body (OpenAI-shaped error)"),
            (
                "401",
                "No admin credential (OpenAI-shaped error, `WWW-Authenticate: Bearer`)",
            ),
            (
                "403",
                "The admin role does not cover this route, or the address is not in `admin.allow_ips`",
            ),
            (
                "429",
                "The address failed authentication too often (`Retry-After`)",
            ),
            ("503", "The store is unavailable (`Retry-After`)"),
        ];
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in COMMON {
                    op.responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| {
                            utoipa::openapi::ResponseBuilder::new()
                                .description(*description)
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A time given as a JSON string (RFC 3339 or Unix seconds) or a JSON integer
/// of Unix seconds, kept as text for [`parse_expiry`].
fn time_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TimeInput {
        Secs(i64),
        Text(String),
    }
    Ok(Option::<TimeInput>::deserialize(d)?.map(|t| match t {
        TimeInput::Secs(s) => s.to_string(),
        TimeInput::Text(s) => s,
    }))
}

fn double_time_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    time_text(d).map(Some)
}

/// Body of `POST /admin/keys`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name.
    pub name: Option<String>,
    /// User the key acts for.
    pub user: Option<String>,
    /// Team the key belongs to.
    pub team: Option<String>,
    /// Model globs (`gpt-4o*`, `openai/*`); absent = every configured model.
    pub models: Option<Vec<String>>,
    /// Endpoint groups (`chat`, `embeddings`, ...); absent = the provider's allowlist.
    pub endpoints: Option<Vec<String>>,
    /// RFC 3339 time or Unix seconds (string or integer) after which the key is refused.
    #[serde(default, deserialize_with = "time_text")]
    pub expires_at: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Makes this an admin key (`admin`, `team_admin` or `viewer`) instead of a
    /// client key: it opens the admin API with that role and never calls models.
    /// Only an `admin` may set it; a `team_admin` key needs a `team`.
    pub admin_role: Option<AdminRole>,
    /// The key's own limits (replacing the units of `limits.defaults.key` it sets).
    pub limits: Option<crate::limits::config::LimitSet>,
    /// The key's own budget.
    pub budget: Option<crate::limits::config::OwnBudget>,
}

/// Body of `PATCH /admin/keys/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    /// Display name.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// User.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub user: Option<Option<String>>,
    /// Team.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub team: Option<Option<String>>,
    /// Model globs.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub models: Option<Option<Vec<String>>>,
    /// Endpoint groups.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub endpoints: Option<Option<Vec<String>>>,
    /// Expiry (RFC 3339 or Unix seconds, string or integer).
    #[serde(default, deserialize_with = "double_time_text")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// Metadata object (replaces the old one; `null` empties it).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<serde_json::Value>>,
    /// Admin role (`null` makes it a client key again). Only an `admin` may change it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<AdminRole>)]
    pub admin_role: Option<Option<AdminRole>>,
    /// The key's own limits (replace; `null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<crate::limits::config::LimitSet>)]
    pub limits: Option<Option<crate::limits::config::LimitSet>>,
    /// The key's own budget (replace; `null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<crate::limits::config::OwnBudget>)]
    pub budget: Option<Option<crate::limits::config::OwnBudget>>,
}

/// Body of `POST /admin/keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the old key stays valid (default 0: refused at once).
    #[serde(default)]
    pub grace_seconds: u64,
}

/// A key as the admin API shows it: never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Public id.
    pub id: String,
    /// The key's recognisable start, e.g. `pcs_AbC123dEf456_…`.
    pub prefix: String,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
    /// Display name.
    pub name: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Model globs.
    pub models: Option<Vec<String>>,
    /// Endpoint groups.
    pub endpoints: Option<Vec<String>>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Id of the key this one replaced.
    pub rotated_from: Option<String>,
    /// `admin`, `team_admin` or `viewer` for an admin key; absent for a client key.
    pub admin_role: Option<String>,
    /// The key's own limits, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::config::LimitSet>,
    /// The key's own budget, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<crate::limits::config::OwnBudget>,
}

/// The create/rotate answer: the only time the key is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The full key. Store it now: it is never shown again.
    pub key: String,
    /// Everything else about the key.
    #[serde(flatten)]
    pub view: KeyView,
}

/// `GET /admin/keys`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Keys ordered by id.
    pub data: Vec<KeyView>,
    /// True when more keys follow; pass the last id as `after`.
    pub has_more: bool,
}

/// `GET /admin/usage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageList {
    /// One row per group.
    pub data: Vec<UsageRow>,
}

fn view(k: &ApiKeyRecord, now_ms: i64) -> KeyView {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|t| now_ms >= t) {
        "expired"
    } else {
        "active"
    };
    KeyView {
        id: k.id.clone(),
        prefix: format!("{}{}_…", keys::KEY_PREFIX, k.id),
        status,
        name: k.name.clone(),
        user: k.user.clone(),
        team: k.team.clone(),
        models: k.models.clone(),
        endpoints: k.endpoints.clone(),
        expires_at: k.expires_at.map(rfc3339),
        revoked_at: k.revoked_at.map(rfc3339),
        created_at: rfc3339(k.created_at),
        metadata: k.metadata.clone(),
        rotated_from: k.rotated_from.clone(),
        admin_role: k.admin_role.clone(),
        limits: None,
        budget: None,
    }
}

/// A key as the admin API shows it (with its own limits), for the audit log.
fn view_json(state: &AppState, k: &ApiKeyRecord, now_ms: i64) -> serde_json::Value {
    serde_json::to_value(limits::key_view(state, view(k, now_ms))).unwrap_or_default()
}

/// True when `admin` may see key `k`: a team admin sees its own team's client keys only.
fn key_visible(admin: &Admin, k: &ApiKeyRecord) -> bool {
    admin.team_scope().is_none() || (admin.sees_team(k.team.as_deref()) && k.admin_role.is_none())
}

/// A key the admin may see, else 404 (whether or not it exists).
async fn visible_key(state: &AppState, admin: &Admin, id: &str) -> Result<ApiKeyRecord, ApiError> {
    state
        .store
        .get_key(id)
        .await
        .map_err(store_err)?
        .filter(|k| key_visible(admin, k))
        .ok_or(ApiError::NotFound)
}

/// Writes an admin change to the audit log. The change has already been made,
/// so a store failure here is logged as an error rather than answered.
pub(crate) async fn audit_change(
    state: &AppState,
    admin: &Admin,
    kind: &str,
    target: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) {
    let event = AuditEvent {
        id: None,
        ts: state.clock.now_ms(),
        kind: kind.to_owned(),
        reason: kind.replace('_', " "),
        client_ip: admin.client_ip().map(|ip| ip.to_string()),
        credential_kind: None,
        key_id: None,
        issuer: None,
        request_id: admin.request_id().map(str::to_owned),
        path: None,
        actor: Some(admin.actor().to_owned()),
        target: Some(target),
        before,
        after,
    };
    if let Err(e) = state.store.insert_audit(std::slice::from_ref(&event)).await {
        tracing::error!(kind, actor = admin.actor(), target = event.target.as_deref().unwrap_or(""), error = %e, "could not write an admin change to the audit log");
    }
}

/// What a team admin may not do with a key's team and role.
fn check_team_admin_write(
    admin: &Admin,
    team: Option<Option<&str>>,
    admin_role_set: bool,
) -> Result<(), ApiError> {
    if admin_role_set && admin.role() != AdminRole::Admin {
        return Err(ApiError::AdminRoleInsufficient(
            "only an admin may grant admin roles",
        ));
    }
    if let Some(own) = admin.team_scope()
        && let Some(t) = team
        && t != Some(own)
    {
        return Err(ApiError::AdminRoleInsufficient(
            "a team admin manages its own team only",
        ));
    }
    Ok(())
}

fn check_role_team(k: &ApiKeyRecord) -> Result<(), ApiError> {
    if k.admin_role.as_deref() == Some(AdminRole::TeamAdmin.as_str()) && k.team.is_none() {
        return Err(ApiError::BadRequest {
            message: "A `team_admin` key needs a `team`.".into(),
            param: Some("team"),
        });
    }
    Ok(())
}

/// Parses a JSON body into `T`, answering 400 in OpenAI's shape.
pub fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // Syntax first, then shape: a truncated body whose first value already has
    // the wrong type (`[1, 2`) is invalid JSON, not a wrong field.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    T::deserialize(value).map_err(|e| ApiError::BadRequest {
        message: format!("Invalid request body: {e}"),
        param: None,
    })
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

fn parse_expiry(s: &str) -> Result<i64, ApiError> {
    parse_time(s).ok_or_else(|| ApiError::BadRequest {
        message: format!("`expires_at` must be an RFC 3339 time or Unix seconds, not `{s}`."),
        param: Some("expires_at"),
    })
}

fn check_lists(
    models: Option<&Vec<String>>,
    endpoints: Option<&Vec<String>>,
) -> Result<(), ApiError> {
    if models.is_some_and(|m| {
        m.iter()
            .any(|g| g.is_empty() || g.contains(char::is_whitespace))
    }) {
        return Err(ApiError::BadRequest {
            message: "`models` entries must be non-empty globs without spaces.".into(),
            param: Some("models"),
        });
    }
    if endpoints.is_some_and(|e| {
        e.iter().any(|g| {
            g.is_empty()
                || !g
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-' || b.is_ascii_digit())
        })
    }) {
        return Err(ApiError::BadRequest {
            message: "`endpoints` entries must be endpoint group names such as `chat`.".into(),
            param: Some("endpoints"),
        });
    }
    Ok(())
}

fn check_metadata(m: Option<&serde_json::Value>) -> Result<(), ApiError> {
    if m.is_some_and(|m| !m.is_object()) {
        return Err(ApiError::BadRequest {
            message: "`metadata` must be a JSON object.".into(),
            param: Some("metadata"),
        });
    }
    Ok(())
}

/// The create/rotate answer: `201` with the only copy of the secret.
fn created(key: crate::secret::Secret, view: KeyView) -> Response {
    let body = CreatedKey {
        key: key.expose().to_owned(),
        view,
    };
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// Creates a key; the answer holds the only copy of the secret.
#[utoipa::path(post, path = "/admin/keys", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400), (status = 401)))]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut req: CreateKey = parse_body(&body)?;
    check_team_admin_write(
        &admin,
        req.team.as_deref().map(Some),
        req.admin_role.is_some(),
    )?;
    if let Some(own) = admin.team_scope() {
        req.team = Some(own.to_owned());
    }
    check_lists(req.models.as_ref(), req.endpoints.as_ref())?;
    check_metadata(req.metadata.as_ref())?;
    let own = limits::checked_own(&state, req.limits, req.budget)?;
    let now = state.clock.now_ms();
    let (id, key) = keys::generate();
    let record = ApiKeyRecord {
        digest: keys::digest(key.expose()).to_vec(),
        id,
        name: req.name,
        user: req.user,
        team: req.team,
        models: req.models,
        endpoints: req.endpoints,
        expires_at: req.expires_at.as_deref().map(parse_expiry).transpose()?,
        revoked_at: None,
        created_at: now,
        metadata: req.metadata.unwrap_or_else(|| serde_json::json!({})),
        rotated_from: None,
        admin_role: req.admin_role.map(|r| r.as_str().to_owned()),
    };
    check_role_team(&record)?;
    state.store.insert_key(&record).await.map_err(store_err)?;
    state.authn.invalidate(&record.id);
    if own != crate::limits::config::OwnLimits::default() {
        limits::set_own(&state, &format!("key:{}", record.id), own).await?;
    }
    tracing::info!(key_id = %record.id, actor = admin.actor(), "key created");
    let shown = limits::key_view(&state, view(&record, now));
    audit_change(
        &state,
        &admin,
        "key_created",
        format!("key:{}", record.id),
        None,
        serde_json::to_value(&shown).ok(),
    )
    .await;
    Ok(created(key, shown))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// A `since`/`until` query value: RFC 3339 or Unix seconds, as epoch ms.
fn time_bound(v: Option<String>, param: &'static str) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        parse_time(&s).ok_or(ApiError::BadRequest {
            message: format!("`{param}` must be an RFC 3339 time or Unix seconds."),
            param: Some(param),
        })
    })
    .transpose()
}

/// A listing's `limit`: 1–1000, default 100.
fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// Cuts a page fetched with `limit + 1` rows to `limit`; true when more follow.
fn page<T>(rows: &mut Vec<T>, limit: usize) -> bool {
    let more = rows.len() > limit;
    rows.truncate(limit);
    more
}

fn parse_query<T: serde::de::DeserializeOwned + Default>(q: Option<&str>) -> Result<T, ApiError> {
    match q {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| ApiError::BadRequest {
            message: format!("Invalid query: {e}"),
            param: None,
        }),
    }
}

/// Lists keys (never their secrets), ordered by id.
#[utoipa::path(get, path = "/admin/keys",
    params(("after" = Option<String>, Query, description = "id to start after"), ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = KeyList), (status = 401)))]
pub async fn list_keys(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q: ListQuery = parse_query(q.as_deref())?;
    let limit = page_limit(q.limit);
    let mut rows = state
        .store
        .list_keys(q.after.as_deref(), limit + 1, admin.team_scope())
        .await
        .map_err(store_err)?;
    let has_more = page(&mut rows, limit);
    let now = state.clock.now_ms();
    Ok(axum::Json(KeyList {
        data: rows.iter().map(|k| view(k, now)).collect(),
        has_more,
    })
    .into_response())
}

/// One key.
#[utoipa::path(get, path = "/admin/keys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404)))]
pub async fn get_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let k = visible_key(&state, &admin, &id).await?;
    Ok(axum::Json(limits::key_view(&state, view(&k, state.clock.now_ms()))).into_response())
}

/// Changes a key's attributes; takes effect on the next request.
#[utoipa::path(patch, path = "/admin/keys/{id}", params(("id" = String, Path)), request_body = PatchKey,
    responses((status = 200, body = KeyView), (status = 400), (status = 404)))]
pub async fn update_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PatchKey = parse_body(&body)?;
    let before = visible_key(&state, &admin, &id).await?;
    if before.revoked_at.is_some() {
        return Err(ApiError::BadRequest {
            message: "The key is revoked and can no longer be changed; create a new one.".into(),
            param: None,
        });
    }
    let before_json = view_json(&state, &before, state.clock.now_ms());
    check_team_admin_write(
        &admin,
        req.team.as_ref().map(Option::as_deref),
        req.admin_role.is_some(),
    )?;
    check_lists(
        req.models.as_ref().and_then(Option::as_ref),
        req.endpoints.as_ref().and_then(Option::as_ref),
    )?;
    check_metadata(req.metadata.as_ref().and_then(Option::as_ref))?;
    let own_patch = (req.limits, req.budget);
    limits::check_patch(&state, &own_patch)?;
    let patch = KeyPatch {
        name: req.name,
        user: req.user,
        team: req.team,
        models: req.models,
        endpoints: req.endpoints,
        expires_at: req
            .expires_at
            .map(|e| e.as_deref().map(parse_expiry).transpose())
            .transpose()?,
        metadata: req
            .metadata
            .map(|m| m.unwrap_or_else(|| serde_json::json!({}))),
        admin_role: req.admin_role.map(|r| r.map(|r| r.as_str().to_owned())),
    };
    let mut merged = before.clone();
    patch.apply(&mut merged);
    check_role_team(&merged)?;
    let k = state
        .store
        .update_key(&id, &patch)
        .await
        .map_err(store_err)?
        .ok_or(ApiError::NotFound)?;
    state.authn.invalidate(&id);
    limits::patch_own(&state, &format!("key:{id}"), own_patch).await?;
    tracing::info!(key_id = %id, actor = admin.actor(), "key updated");
    let now = state.clock.now_ms();
    let after = limits::key_view(&state, view(&k, now));
    audit_change(
        &state,
        &admin,
        "key_updated",
        format!("key:{id}"),
        Some(before_json),
        serde_json::to_value(&after).ok(),
    )
    .await;
    Ok(axum::Json(after).into_response())
}

/// Revokes a key; the very next request with it gets 401.
#[utoipa::path(delete, path = "/admin/keys/{id}", params(("id" = String, Path)),
    responses((status = 200, body = KeyView), (status = 404)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let before = visible_key(&state, &admin, &id).await?;
    let now = state.clock.now_ms();
    let revoked = state.store.revoke_key(&id, now).await.map_err(store_err)?;
    state.authn.invalidate(&id);
    let k = state
        .store
        .get_key(&id)
        .await
        .map_err(store_err)?
        .ok_or(ApiError::NotFound)?;
    if revoked {
        tracing::info!(key_id = %id, actor = admin.actor(), "key revoked");
        audit_change(
            &state,
            &admin,
            "key_revoked",
            format!("key:{id}"),
            Some(view_json(&state, &before, now)),
            Some(view_json(&state, &k, now)),
        )
        .await;
    }
    Ok(axum::Json(view(&k, now)).into_response())
}

/// Issues a new key with the same attributes; the old one stays valid for `grace_seconds`.
#[utoipa::path(post, path = "/admin/keys/{id}/rotate", params(("id" = String, Path)), request_body = RotateKey,
    responses((status = 201, body = CreatedKey), (status = 404)))]
pub async fn rotate_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: RotateKey = parse_body(&body)?;
    let old = visible_key(&state, &admin, &id).await?;
    if old.revoked_at.is_some() {
        return Err(ApiError::NotFound);
    }
    let now = state.clock.now_ms();
    let grace_ms = i64::try_from(req.grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let (new_id, key) = keys::generate();
    let record = ApiKeyRecord {
        id: new_id,
        digest: keys::digest(key.expose()).to_vec(),
        created_at: now,
        revoked_at: None,
        rotated_from: Some(old.id.clone()),
        ..old.clone()
    };
    if !state
        .store
        .rotate_key(&id, &record, now.saturating_add(grace_ms))
        .await
        .map_err(store_err)?
    {
        return Err(ApiError::NotFound);
    }
    state.authn.invalidate(&id);
    state.authn.invalidate(&record.id);
    tracing::info!(key_id = %id, new_key_id = %record.id, grace_seconds = req.grace_seconds, actor = admin.actor(), "key rotated");
    let after = state.store.get_key(&id).await.ok().flatten();
    audit_change(
        &state,
        &admin,
        "key_rotated",
        format!("key:{id}"),
        Some(view_json(&state, &old, now)),
        Some(serde_json::json!({
            "old": after.map(|k| view_json(&state, &k, now)),
            "new": view_json(&state, &record, now),
        })),
    )
    .await;
    Ok(created(key, limits::key_view(&state, view(&record, now))))
}

#[derive(Deserialize, Default)]
struct UsageQuery {
    group_by: Option<UsageGroup>,
    since: Option<String>,
    until: Option<String>,
}

/// Usage summed by key, user, team, model, provider or endpoint over `[since, until)`.
#[utoipa::path(get, path = "/admin/usage",
    params(("group_by" = Option<UsageGroup>, Query, description = "key (default), user, team, model, provider, endpoint or day (UTC)"),
           ("since" = Option<String>, Query, description = "RFC 3339 or Unix seconds, inclusive"),
           ("until" = Option<String>, Query, description = "RFC 3339 or Unix seconds, exclusive")),
    responses((status = 200, body = UsageList), (status = 400)))]
pub async fn usage(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q: UsageQuery = parse_query(q.as_deref())?;
    let since = time_bound(q.since, "since")?;
    let until = time_bound(q.until, "until")?;
    let rows = state
        .store
        .usage_summary(
            q.group_by.unwrap_or(UsageGroup::Key),
            since,
            until,
            admin.team_scope(),
        )
        .await
        .map_err(store_err)?;
    Ok(axum::Json(UsageList { data: rows }).into_response())
}

/// `GET /admin/users`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// Users ordered by id.
    pub data: Vec<UserRecord>,
    /// True when more users follow; pass the last id as `after`.
    pub has_more: bool,
}

/// Body of `PATCH /admin/users/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    /// A disabled user gets 403 even with a valid token.
    pub disabled: Option<bool>,
    /// The user's own limits (replacing the units of `limits.defaults.user` it sets; `null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<crate::limits::config::LimitSet>)]
    pub limits: Option<Option<crate::limits::config::LimitSet>>,
    /// The user's own budget (`null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<crate::limits::config::OwnBudget>)]
    pub budget: Option<Option<crate::limits::config::OwnBudget>>,
}

/// Users seen through identity-provider tokens.
#[utoipa::path(get, path = "/admin/users",
    params(("after" = Option<String>, Query, description = "id to start after"), ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = UserList), (status = 401)))]
pub async fn list_users(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q: ListQuery = parse_query(q.as_deref())?;
    let limit = page_limit(q.limit);
    let mut rows = state
        .store
        .list_users(q.after.as_deref(), limit + 1, admin.team_scope())
        .await
        .map_err(store_err)?;
    let has_more = page(&mut rows, limit);
    Ok(axum::Json(UserList {
        data: rows,
        has_more,
    })
    .into_response())
}

/// One user.
#[utoipa::path(get, path = "/admin/users/{id}", params(("id" = String, Path)),
    responses((status = 200, body = UserRecord), (status = 404)))]
pub async fn get_user(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let u = visible_user(&state, &admin, &id).await?;
    Ok(axum::Json(u).into_response())
}

/// Disables or re-enables a user; takes effect on the next request.
#[utoipa::path(patch, path = "/admin/users/{id}", params(("id" = String, Path)), request_body = PatchUser,
    responses((status = 200, body = UserRecord), (status = 400), (status = 404)))]
pub async fn update_user(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PatchUser = parse_body(&body)?;
    let sets_own_only = req.disabled.is_none() && (req.limits.is_some() || req.budget.is_some());
    let before = match visible_user(&state, &admin, &id).await {
        // A user the gateway has not seen yet (or one only named by keys' `user`) may still
        // get own limits, from a full admin (its team is unknown, so team admins may not).
        Err(ApiError::NotFound)
            if sets_own_only && admin.require_admin("own limits of an unseen user").is_ok() =>
        {
            let own_patch = (req.limits, req.budget);
            limits::check_patch(&state, &own_patch)?;
            let subject = format!("user:{id}");
            let before = serde_json::to_value(state.limits.own(&subject)).ok();
            let own = limits::patch_own(&state, &subject, own_patch).await?;
            let after = serde_json::to_value(&own).ok();
            if before != after {
                audit_change(&state, &admin, "user_updated", subject, before, after).await;
            }
            return Ok(axum::Json(
                serde_json::json!({"id": id, "limits": own.limits, "budget": own.budget}),
            )
            .into_response());
        }
        other => other?,
    };
    let before_json = serde_json::to_value(limits::UserView {
        own: state.limits.own(&format!("user:{id}")),
        user: before.clone(),
    })
    .ok();
    let own_patch = (req.limits, req.budget);
    limits::check_patch(&state, &own_patch)?;
    let found = match req.disabled {
        Some(d) => state
            .store
            .set_user_disabled(&id, d)
            .await
            .map_err(store_err)?,
        None => state.store.get_user(&id).await.map_err(store_err)?,
    };
    let Some(u) = found else {
        return Err(ApiError::NotFound);
    };
    state.authn.invalidate_user(&id);
    limits::patch_own(&state, &format!("user:{id}"), own_patch).await?;
    tracing::info!(user = %id, disabled = u.disabled, actor = admin.actor(), "user updated");
    let after = limits::UserView {
        own: state.limits.own(&format!("user:{id}")),
        user: u,
    };
    let after_json = serde_json::to_value(&after).ok();
    if after_json != before_json {
        audit_change(
            &state,
            &admin,
            "user_updated",
            format!("user:{id}"),
            before_json,
            after_json,
        )
        .await;
    }
    Ok(axum::Json(after).into_response())
}

/// A user the admin may see (a team admin: its own team's), else 404.
async fn visible_user(state: &AppState, admin: &Admin, id: &str) -> Result<UserRecord, ApiError> {
    state
        .store
        .get_user(id)
        .await
        .map_err(store_err)?
        .filter(|u| admin.sees_team(u.team.as_deref()))
        .ok_or(ApiError::NotFound)
}

/// `GET /admin/audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditList {
    /// Events, newest first.
    pub data: Vec<AuditEvent>,
    /// True when older events follow; pass the last id as `before`.
    pub has_more: bool,
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

/// Authentication failures, lockouts and admin changes, newest first (never a credential).
#[utoipa::path(get, path = "/admin/audit",
    params(("since" = Option<String>, Query, description = "RFC 3339 or Unix seconds, inclusive"),
           ("until" = Option<String>, Query, description = "RFC 3339 or Unix seconds, exclusive"),
           ("before" = Option<i64>, Query, description = "only events with a smaller id (paging)"),
           ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = AuditList), (status = 400)))]
pub async fn audit(
    State(state): State<AppState>,
    _: Extension<Admin>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q: AuditQuery = parse_query(q.as_deref())?;
    let since = time_bound(q.since, "since")?;
    let until = time_bound(q.until, "until")?;
    let limit = page_limit(q.limit);
    let mut rows = state
        .store
        .list_audit(since, until, q.before, limit + 1)
        .await
        .map_err(store_err)?;
    let has_more = page(&mut rows, limit);
    Ok(axum::Json(AuditList {
        data: rows,
        has_more,
    })
    .into_response())
}

/// Re-reads the configuration file and swaps in the new access rules; an
/// invalid file is refused (400, every error listed) and the running rules stay.
#[utoipa::path(post, path = "/admin/reload",
    responses((status = 200, body = crate::reload::ReloadReport), (status = 400, description = "invalid configuration; nothing changed")))]
pub async fn reload(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, ApiError> {
    match crate::reload::reload_audited(&state, &admin).await {
        Ok(report) => Ok(axum::Json(report).into_response()),
        Err(e) => {
            tracing::error!(errors = %e, "reload refused: the running configuration stays");
            let list: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            Err(ApiError::BadRequest {
                message: format!(
                    "The new configuration is invalid; nothing changed: {}",
                    list.join("; ")
                ),
                param: None,
            })
        }
    }
}

/// Body of `POST /admin/explain`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// Subject patterns describing the caller: `user:supabase:8f1c`, `team:mobile`, `role:pro`, `issuer:supabase`, `key:<id>`.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Or a real gateway key id, whose lists and identity are used.
    pub key_id: Option<String>,
    /// The model the request names, if any.
    pub model: Option<String>,
    /// Request line, e.g. `POST /v1/chat/completions`.
    pub request: String,
}

/// What the pipeline would decide for a subject, model and request, stage by stage.
#[utoipa::path(post, path = "/admin/explain", request_body = ExplainRequest,
    responses((status = 200, body = crate::authz::explain::Explanation), (status = 400), (status = 404)))]
pub async fn explain(
    State(state): State<AppState>,
    _: Extension<Admin>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ExplainRequest = parse_body(&body)?;
    let (method, path) = req
        .request
        .trim()
        .split_once(' ')
        .ok_or(ApiError::BadRequest {
            message: "`request` must look like `POST /v1/chat/completions`.".into(),
            param: Some("request"),
        })?;
    let principal = match &req.key_id {
        Some(id) => {
            let k = state
                .store
                .get_key(id)
                .await
                .map_err(store_err)?
                .ok_or(ApiError::NotFound)?;
            crate::authn::Principal::for_key(&k)
        }
        None => crate::authn::Principal::synthetic(&req.subjects, None, None),
    };
    let out = crate::authz::explain::explain(
        &state.config,
        &state.rules.load(),
        &principal,
        method,
        path.trim(),
        req.model.as_deref(),
    );
    Ok(axum::Json(out).into_response())
}

/// This document.
#[utoipa::path(get, path = "/admin/openapi.json", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi(_: Extension<Admin>) -> Response {
    axum::Json(AdminApi::openapi()).into_response()
}
