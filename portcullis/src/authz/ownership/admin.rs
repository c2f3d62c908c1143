//! `GET /admin/resources`: every recorded resource, for administrators.

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::families::Family;
use crate::AppState;
use crate::authn::Admin;
use crate::error::ApiError;
use crate::store::{ResourceQuery, ResourceRecord};

/// Body of `GET /admin/resources`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResourceList {
    /// Records, oldest first.
    pub data: Vec<ResourceRecord>,
    /// True when more follow; pass the last `seq` as `after`.
    pub has_more: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceParams {
    owner: Option<String>,
    family: Option<String>,
    provider: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

/// Recorded provider resources and their owners, oldest first.
#[utoipa::path(get, path = "/admin/resources",
    params(("owner" = Option<String>, Query, description = "`key:<id>`, `user:<id>`, `team:<id>` or `anonymous`"),
           ("family" = Option<String>, Query, description = "`file`, `batch`, `assistant`, `thread`, `thread_message`, `run`, `run_step`, `vector_store`, `response`, `item`, `conversation`, `chat_completion`, ..."),
           ("provider" = Option<String>, Query, description = "provider name"),
           ("after" = Option<i64>, Query, description = "only records with a larger `seq` (paging)"),
           ("limit" = Option<usize>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = ResourceList), (status = 400)))]
pub async fn list_resources(
    State(state): State<AppState>,
    _: Extension<Admin>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p: ResourceParams = match q.as_deref() {
        None | Some("") => ResourceParams::default(),
        Some(q) => serde_urlencoded::from_str(q).map_err(|e| ApiError::BadRequest {
            message: format!("Invalid query: {e}."),
            param: None,
        })?,
    };
    if let Some(f) = &p.family
        && Family::parse(f).is_none()
    {
        return Err(ApiError::BadRequest {
            message: format!("`{f}` is not a resource family."),
            param: Some("family"),
        });
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let mut data = state
        .store
        .list_resources(&ResourceQuery {
            provider: p.provider,
            family: p.family,
            owners: p.owner.map(|o| vec![o]),
            seq_above: p.after,
            seq_below: None,
            descending: false,
            limit: limit + 1,
        })
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(axum::Json(ResourceList { data, has_more }).into_response())
}
