//! Vector stores, their files and file batches (everything is `completed` at
//! once; nothing is actually indexed).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::assistants::{body_map, metadata, req_str};
use crate::error::{ApiError, ApiResult};
use crate::store::{ListParams, Store, merge_fields, paginate};
use crate::util::{new_id, now, ok_json};

fn no_store(id: &str) -> ApiError {
    ApiError::not_found(format!("No vector store found with id '{id}'."))
}

fn no_vs_file(vid: &str, fid: &str) -> ApiError {
    ApiError::not_found(format!(
        "No file found with id '{fid}' in vector store '{vid}'."
    ))
}

fn no_batch(id: &str) -> ApiError {
    ApiError::not_found(format!("No file batch found with id '{id}'."))
}

fn key(vid: &str, fid: &str) -> String {
    format!("{vid}/{fid}")
}

fn counts(completed: usize) -> Value {
    json!({"in_progress": 0, "completed": completed, "failed": 0, "cancelled": 0, "total": completed})
}

/// Recomputes `file_counts` and `usage_bytes` of a vector store.
fn refresh(store: &mut Store, vid: &str) {
    let files = store.vs_files.sorted(|e| e.parent.as_deref() == Some(vid));
    let n = files.len();
    let bytes: u64 = files
        .iter()
        .filter_map(|e| e.obj.get("usage_bytes").and_then(Value::as_u64))
        .sum();
    if let Some(Value::Object(o)) = store.vector_stores.get_mut(vid) {
        o.insert("file_counts".to_owned(), counts(n));
        o.insert("usage_bytes".to_owned(), json!(bytes));
        o.insert("last_active_at".to_owned(), json!(now()));
    }
}

fn default_chunking() -> Value {
    json!({"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}})
}

/// Checks that every file exists.
fn check_files<'a>(store: &Store, ids: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    for id in ids {
        if store.files.get(id).is_none() {
            return Err(ApiError::no_file(id));
        }
    }
    Ok(())
}

/// Attaches an existing file to a vector store.
fn attach(store: &mut Store, vid: &str, fid: &str, b: &Map<String, Value>) -> Value {
    let bytes = store
        .files
        .get(fid)
        .and_then(|f| f.get("bytes"))
        .cloned()
        .unwrap_or(json!(0));
    let obj = json!({
        "id": fid,
        "object": "vector_store.file",
        "usage_bytes": bytes,
        "created_at": now(),
        "vector_store_id": vid,
        "status": "completed",
        "last_error": null,
        "chunking_strategy": b.get("chunking_strategy").filter(|v| v.is_object()).cloned().unwrap_or_else(default_chunking),
        "attributes": b.get("attributes").filter(|v| v.is_object()).cloned().unwrap_or(json!({})),
    });
    store
        .vs_files
        .insert(key(vid, fid), Some(vid.to_owned()), obj.clone());
    obj
}

fn string_list(b: &Map<String, Value>, k: &str) -> Vec<String> {
    b.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------- vector stores

/// `POST /v1/vector_stores`.
pub(crate) async fn create_store(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let b = body_map(&body)?;
    let file_ids = string_list(&b, "file_ids");
    let mut store = s.store();
    check_files(&store, file_ids.iter().map(String::as_str))?;
    let id = new_id("vs_");
    let t = now();
    let obj = json!({
        "id": id,
        "object": "vector_store",
        "created_at": t,
        "name": b.get("name").cloned().unwrap_or(Value::Null),
        "usage_bytes": 0,
        "file_counts": counts(0),
        "status": "completed",
        "expires_after": b.get("expires_after").cloned().unwrap_or(Value::Null),
        "expires_at": null,
        "last_active_at": t,
        "metadata": metadata(&b),
    });
    store.vector_stores.insert(id.clone(), None, obj);
    for f in &file_ids {
        attach(&mut store, &id, f, &b);
    }
    refresh(&mut store, &id);
    Ok(ok_json(
        store.vector_stores.get(&id).unwrap_or(&Value::Null),
    ))
}

/// `GET /v1/vector_stores`.
pub(crate) async fn list_stores(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let items = s.store().vector_stores.sorted_values(|_| true);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/vector_stores/{id}`.
pub(crate) async fn get_store(State(s): State<Arc<Shared>>, Path(vid): Path<String>) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        store
            .vector_stores
            .get(&vid)
            .ok_or_else(|| no_store(&vid))?,
    ))
}

/// `POST /v1/vector_stores/{id}`.
pub(crate) async fn modify_store(
    State(s): State<Arc<Shared>>,
    Path(vid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut store = s.store();
    let obj = store
        .vector_stores
        .get_mut(&vid)
        .ok_or_else(|| no_store(&vid))?;
    merge_fields(obj, &b, &["name", "expires_after", "metadata"]);
    Ok(ok_json(obj))
}

/// `DELETE /v1/vector_stores/{id}`.
pub(crate) async fn delete_store(
    State(s): State<Arc<Shared>>,
    Path(vid): Path<String>,
) -> ApiResult {
    let mut store = s.store();
    store
        .vector_stores
        .remove(&vid)
        .ok_or_else(|| no_store(&vid))?;
    store.vs_files.remove_children(&vid);
    let batches: Vec<String> = store
        .file_batches
        .sorted(|e| e.parent.as_deref() == Some(vid.as_str()))
        .iter()
        .filter_map(|e| e.obj.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for b in batches {
        store.batch_files.remove(&b);
    }
    store.file_batches.remove_children(&vid);
    Ok(ok_json(
        &json!({"id": vid, "object": "vector_store.deleted", "deleted": true}),
    ))
}

// ---------------------------------------------------------- vector store files

/// `POST /v1/vector_stores/{id}/files`.
pub(crate) async fn create_file(
    State(s): State<Arc<Shared>>,
    Path(vid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let fid = req_str(&b, "file_id")?;
    let mut store = s.store();
    if store.vector_stores.get(&vid).is_none() {
        return Err(no_store(&vid));
    }
    check_files(&store, [fid])?;
    let obj = attach(&mut store, &vid, fid, &b);
    refresh(&mut store, &vid);
    Ok(ok_json(&obj))
}

/// Whether a vector store file passes the `filter` query parameter.
fn passes(q: &HashMap<String, String>, obj: &Value) -> bool {
    match q.get("filter").filter(|f| !f.is_empty()) {
        None => true,
        Some(f) => obj.get("status").and_then(Value::as_str) == Some(f.as_str()),
    }
}

/// `GET /v1/vector_stores/{id}/files` (`filter` by status).
pub(crate) async fn list_files(
    State(s): State<Arc<Shared>>,
    Path(vid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let store = s.store();
    if store.vector_stores.get(&vid).is_none() {
        return Err(no_store(&vid));
    }
    let items = store
        .vs_files
        .sorted_values(|e| e.parent.as_deref() == Some(vid.as_str()) && passes(&q, &e.obj));
    drop(store);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/vector_stores/{id}/files/{file_id}`.
pub(crate) async fn get_file(
    State(s): State<Arc<Shared>>,
    Path((vid, fid)): Path<(String, String)>,
) -> ApiResult {
    let store = s.store();
    if store.vector_stores.get(&vid).is_none() {
        return Err(no_store(&vid));
    }
    Ok(ok_json(
        store
            .vs_files
            .get(&key(&vid, &fid))
            .ok_or_else(|| no_vs_file(&vid, &fid))?,
    ))
}

/// `POST /v1/vector_stores/{id}/files/{file_id}` (attributes).
pub(crate) async fn modify_file(
    State(s): State<Arc<Shared>>,
    Path((vid, fid)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut store = s.store();
    let obj = store
        .vs_files
        .get_mut(&key(&vid, &fid))
        .ok_or_else(|| no_vs_file(&vid, &fid))?;
    merge_fields(obj, &b, &["attributes"]);
    Ok(ok_json(obj))
}

/// `DELETE /v1/vector_stores/{id}/files/{file_id}` (the file itself stays).
pub(crate) async fn delete_file(
    State(s): State<Arc<Shared>>,
    Path((vid, fid)): Path<(String, String)>,
) -> ApiResult {
    let mut store = s.store();
    store
        .vs_files
        .remove(&key(&vid, &fid))
        .ok_or_else(|| no_vs_file(&vid, &fid))?;
    refresh(&mut store, &vid);
    Ok(ok_json(
        &json!({"id": fid, "object": "vector_store.file.deleted", "deleted": true}),
    ))
}

// -------------------------------------------------------------- file batches

/// `POST /v1/vector_stores/{id}/file_batches` (`file_ids`, or `files` with
/// `file_id`s).
pub(crate) async fn create_batch(
    State(s): State<Arc<Shared>>,
    Path(vid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut ids = string_list(&b, "file_ids");
    if let Some(files) = b.get("files").and_then(Value::as_array) {
        ids.extend(
            files
                .iter()
                .filter_map(|f| f.get("file_id").and_then(Value::as_str))
                .map(str::to_owned),
        );
    }
    if ids.is_empty() {
        return Err(ApiError::missing("file_ids"));
    }
    let mut store = s.store();
    if store.vector_stores.get(&vid).is_none() {
        return Err(no_store(&vid));
    }
    check_files(&store, ids.iter().map(String::as_str))?;
    for f in &ids {
        attach(&mut store, &vid, f, &b);
    }
    refresh(&mut store, &vid);
    let id = new_id("vsfb_");
    let obj = json!({
        "id": id,
        "object": "vector_store.file_batch",
        "created_at": now(),
        "vector_store_id": vid,
        "status": "completed",
        "file_counts": counts(ids.len()),
    });
    store
        .file_batches
        .insert(id.clone(), Some(vid.clone()), obj.clone());
    store.batch_files.insert(id, ids);
    Ok(ok_json(&obj))
}

fn batch_of<'a>(store: &'a Store, vid: &str, bid: &str) -> Result<&'a Value, ApiError> {
    store
        .file_batches
        .entry(bid)
        .filter(|e| e.parent.as_deref() == Some(vid))
        .map(|e| &e.obj)
        .ok_or_else(|| no_batch(bid))
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}`.
pub(crate) async fn get_batch(
    State(s): State<Arc<Shared>>,
    Path((vid, bid)): Path<(String, String)>,
) -> ApiResult {
    let store = s.store();
    Ok(ok_json(batch_of(&store, &vid, &bid)?))
}

/// `POST /v1/vector_stores/{id}/file_batches/{batch_id}/cancel`.
pub(crate) async fn cancel_batch(
    State(s): State<Arc<Shared>>,
    Path((vid, bid)): Path<(String, String)>,
) -> ApiResult {
    let mut store = s.store();
    batch_of(&store, &vid, &bid)?;
    let obj = store
        .file_batches
        .get_mut(&bid)
        .ok_or_else(|| no_batch(&bid))?;
    if let Value::Object(o) = obj {
        o.insert("status".to_owned(), json!("cancelled"));
    }
    Ok(ok_json(obj))
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}/files`.
pub(crate) async fn list_batch_files(
    State(s): State<Arc<Shared>>,
    Path((vid, bid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let store = s.store();
    batch_of(&store, &vid, &bid)?;
    let members = store.batch_files.get(&bid).cloned().unwrap_or_default();
    let items = store.vs_files.sorted_values(|e| {
        e.parent.as_deref() == Some(vid.as_str())
            && e.obj
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| members.iter().any(|m| m == id))
            && passes(&q, &e.obj)
    });
    drop(store);
    Ok(ok_json(&paginate(items, &p)?))
}
