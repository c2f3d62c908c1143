//! Top-level lists (`GET /files`, `/assistants`, `/vector_stores`, `/batches`,
//! `/chat/completions`, `/fine_tuning/jobs`, `/containers`, `/evals`,
//! `/videos`, `/skills`, `/audio/voice_consents`, `/chatkit/threads`) answered
//! from the store.
//!
//! The provider's own list spans the whole account, so filtering its pages
//! would cost as much as the account is large, and a page of someone else's
//! objects would leave no cursor of the caller's own to continue from. Instead
//! the store lists the caller's IDs of the family in creation order, and each
//! one on the page is fetched fresh from the provider (`GET {collection}/{id}`,
//! eight at a time), so object fields are current. An object the provider no
//! longer has (404) is dropped and its record forgotten, and the page is
//! filled from the next IDs.
//!
//! - `limit` (1–100, default 20), `order` (`asc` | `desc`, default `desc`),
//!   `after` and `before` work as in OpenAI's lists; `has_more` says whether
//!   the caller has further IDs in that direction.
//! - A cursor must be one of the caller's own IDs of the family: any other
//!   (someone else's, unknown, deleted) answers `404 not_found`, like a path ID.
//! - Filters (`purpose` on files, `model` on chat completions, `name` on
//!   containers, `user` on ChatKit threads, `metadata[key]=value` everywhere)
//!   compare the fetched object's field. With a filter a page may come back
//!   short; at most 1,000 IDs are examined per request.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::StatusCode;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};

use super::families::Family;
use super::{Permit, extract, store_down};
use crate::AppState;
use crate::RequestId;
use crate::error::ApiError;
use crate::store::{ResourceQuery, ResourceRecord};

/// Objects fetched from the provider at once.
const CONCURRENCY: usize = 8;
/// IDs examined per list request at most.
const MAX_SCAN: usize = 1000;

/// A list the gateway answers from the store.
#[derive(Debug)]
pub struct ListPlan {
    family: Family,
    collection: &'static str,
    identities: Vec<String>,
    limit: usize,
    descending: bool,
    after: Option<i64>,
    before: Option<i64>,
    filters: Vec<(String, String)>,
}

fn bad(message: String, param: &'static str) -> ApiError {
    ApiError::BadRequest {
        message,
        param: Some(param),
    }
}

impl ListPlan {
    /// Reads the list's query. Cursors must be among `found` (the caller's checked IDs).
    pub(super) fn new(
        family: Family,
        filter_names: &[&str],
        collection: &'static str,
        params: &[(String, String)],
        found: &HashMap<(Family, String), ResourceRecord>,
        identities: Vec<String>,
    ) -> Result<ListPlan, ApiError> {
        let get = |k: &str| {
            params
                .iter()
                .rev()
                .find(|(n, v)| n == k && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let limit = match get("limit") {
            None => 20,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| {
                    bad(
                        format!("Invalid 'limit': expected an integer, got '{s}'."),
                        "limit",
                    )
                })?
                .clamp(1, 100),
        };
        let descending = match get("order") {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(o) => {
                return Err(bad(
                    format!("Invalid 'order': '{o}'; supported values are 'asc' and 'desc'."),
                    "order",
                ));
            }
        };
        let cursor = |k: &str| -> Result<Option<i64>, ApiError> {
            match get(k) {
                None => Ok(None),
                Some(id) => found
                    .get(&(family, id.to_owned()))
                    .map(|r| Some(r.seq))
                    .ok_or(ApiError::NotFound),
            }
        };
        let filters = params
            .iter()
            .filter(|(k, v)| {
                !v.is_empty() && (filter_names.contains(&k.as_str()) || k.starts_with("metadata["))
            })
            .cloned()
            .collect();
        Ok(ListPlan {
            family,
            collection,
            identities,
            limit: usize::try_from(limit).unwrap_or(20),
            descending,
            after: cursor("after")?,
            before: cursor("before")?,
            filters,
        })
    }

    fn passes(&self, obj: &Value) -> bool {
        self.filters.iter().all(|(k, want)| {
            let got = match k
                .strip_prefix("metadata[")
                .and_then(|r| r.strip_suffix(']'))
            {
                Some(mk) => obj.get("metadata").and_then(|m| m.get(mk)),
                None => obj.get(k),
            };
            got.and_then(Value::as_str) == Some(want.as_str())
        })
    }
}

/// Answers a top-level list for the caller.
pub async fn answer(
    state: &AppState,
    permit: &Permit,
    parts: &Parts,
    plan: &ListPlan,
) -> Result<Response, ApiError> {
    let provider = permit.provider();
    // In list order, `after` continues past a cursor and `before` stops short
    // of one; walking towards `before` alone runs against the list order, and
    // the page is reversed at the end so it reads in list order.
    let (mut above, mut below) = (None, None);
    if let Some(a) = plan.after {
        if plan.descending {
            below = Some(a);
        } else {
            above = Some(a);
        }
    }
    if let Some(b) = plan.before {
        if plan.descending {
            above = Some(b);
        } else {
            below = Some(b);
        }
    }
    let backwards = plan.before.is_some() && plan.after.is_none();
    let descending = plan.descending != backwards;

    let mut data: Vec<Value> = Vec::new();
    let mut scanned = 0usize;
    let mut has_more;
    let mut records = Vec::new();
    loop {
        let need = plan.limit - data.len();
        let q = ResourceQuery {
            provider: Some(provider.name.clone()),
            family: Some(plan.family.as_str().to_owned()),
            owners: Some(plan.identities.clone()),
            seq_above: above,
            seq_below: below,
            descending,
            limit: need + 1,
        };
        let mut page = state.store.list_resources(&q).await.map_err(store_down)?;
        let more_in_store = page.len() > need;
        page.truncate(need);
        if let Some(last) = page.last() {
            if descending {
                below = Some(last.seq);
            } else {
                above = Some(last.seq);
            }
        }
        scanned += page.len();
        let fetched: Vec<_> = futures_util::stream::iter(page.into_iter().map(|r| {
            let fut = fetch(state, permit, parts, plan.collection, r.id.clone());
            async move { (r, fut.await) }
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        for (r, got) in fetched {
            match got? {
                Some(obj) => {
                    let mut found = Vec::new();
                    let reading = extract::Reading {
                        creates: None,
                        children: None,
                        parent: None,
                        stored: false,
                    };
                    extract::extract(&obj, &reading, &mut None, &mut found);
                    records.extend(extract::records(
                        found,
                        &provider.name,
                        &r.owner,
                        state.clock.now_ms(),
                        &mut Default::default(),
                    ));
                    if plan.passes(&obj) {
                        data.push(obj);
                    }
                }
                None => {
                    tracing::info!(family = plan.family.as_str(), id = %r.id, "ownership: the provider no longer has this resource; record removed");
                    state
                        .store
                        .delete_resource(&provider.name, plan.family.as_str(), &r.id)
                        .await
                        .map_err(store_down)?;
                }
            }
        }
        has_more = more_in_store;
        if data.len() >= plan.limit || !more_in_store {
            break;
        }
        if scanned >= MAX_SCAN {
            has_more = true;
            break;
        }
    }
    state
        .store
        .insert_resources(&records)
        .await
        .map_err(store_down)?;
    if backwards {
        data.reverse();
    }
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    let body = json!({
        "object": "list",
        "data": data,
        "first_id": id(data.first()),
        "last_id": id(data.last()),
        "has_more": has_more,
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// Keeps the characters of an ID that need no escaping in a path segment.
pub(super) fn encode_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET {base_url}{path}` at the permit's provider with the provider's key
/// (and the client's forwardable headers, when given).
pub(super) async fn get_upstream(
    state: &AppState,
    permit: &Permit,
    client_headers: Option<&http::HeaderMap>,
    request_id: Option<&RequestId>,
    path: &str,
) -> Result<crate::proxy::pool::UpstreamResponse, ApiError> {
    let provider = permit.provider();
    state
        .upstreams
        .get(&provider.name)?
        .send(
            provider,
            http::Method::GET,
            path,
            None,
            client_headers,
            request_id.map(|r| &*r.0),
        )
        .await
}

/// `GET {collection}/{id}` at the provider: the object, or `None` for a 404.
async fn fetch(
    state: &AppState,
    permit: &Permit,
    parts: &Parts,
    collection: &str,
    id: String,
) -> Result<Option<Value>, ApiError> {
    let provider = permit.provider();
    let path = format!("{collection}/{}", encode_segment(&id));
    let resp = get_upstream(
        state,
        permit,
        Some(&parts.headers),
        parts.extensions.get::<RequestId>(),
        &path,
    )
    .await?;
    let status = resp.status();
    let body = tokio::time::timeout(
        provider.timeouts.idle,
        Limited::new(resp.into_body(), super::MAX_READ).collect(),
    )
    .await
    .map_err(|_| ApiError::UpstreamTimeout("idle"))?
    .map_err(|e| ApiError::UpstreamUnavailable(e.to_string()))?
    .to_bytes();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status == StatusCode::UNAUTHORIZED {
        tracing::error!(provider = %provider.name, "the provider refused the gateway's API key");
        return Err(ApiError::UpstreamAuth);
    }
    if !status.is_success() {
        return Err(ApiError::UpstreamUnavailable(format!(
            "listing: the provider answered {status} for one object"
        )));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::UpstreamUnavailable(format!("listing: not JSON: {e}")))
}
