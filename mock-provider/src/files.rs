//! `/v1/files`: multipart upload, list, retrieve, content, delete — all in
//! memory.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::Shared;
use crate::error::{ApiError, ApiResult};
use crate::store::{ListParams, Store, paginate};
use crate::util::{new_id, now, ok_json};

/// Stores a file and returns its object.
pub(crate) fn store_file(
    store: &mut Store,
    filename: &str,
    purpose: &str,
    content: Bytes,
) -> Value {
    let id = new_id("file-");
    let obj = json!({
        "id": id,
        "object": "file",
        "bytes": content.len(),
        "created_at": now(),
        "expires_at": null,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": null,
    });
    store.files.insert(id.clone(), None, obj.clone());
    store.file_content.insert(id, content);
    obj
}

/// `POST /v1/files` (multipart: `file`, `purpose`).
pub(crate) async fn upload(
    State(s): State<Arc<Shared>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid request: expected a multipart/form-data body ({e})."
        ))
    })?;
    let mut file: Option<(String, Bytes)> = None;
    let mut purpose: Option<String> = None;
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {e}")))?;
        let Some(field) = field else { break };
        match field.name() {
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload").to_owned();
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {e}")))?;
                file = Some((filename, data));
            }
            Some("purpose") => {
                purpose =
                    Some(field.text().await.map_err(|e| {
                        ApiError::bad_request(format!("Invalid multipart body: {e}"))
                    })?);
            }
            _ => {}
        }
    }
    let (filename, data) = file.ok_or_else(|| ApiError::missing("file"))?;
    let purpose = purpose
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::missing("purpose"))?;
    let obj = store_file(&mut s.store(), &filename, &purpose, data);
    Ok(ok_json(&obj))
}

/// `GET /v1/files` (`purpose` filter).
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let purpose = q.get("purpose").filter(|p| !p.is_empty());
    let items = s.store().files.sorted_values(|e| {
        purpose.is_none_or(|p| e.obj.get("purpose").and_then(Value::as_str) == Some(p.as_str()))
    });
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/files/{id}`.
pub(crate) async fn retrieve(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let store = s.store();
    let obj = store.files.get(&id).ok_or_else(|| ApiError::no_file(&id))?;
    Ok(ok_json(obj))
}

/// `GET /v1/files/{id}/content` (raw bytes).
pub(crate) async fn content(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let data = s
        .store()
        .file_content
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::no_file(&id))?;
    let mut resp = Response::new(data.into());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `DELETE /v1/files/{id}`.
pub(crate) async fn delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let mut store = s.store();
    store
        .files
        .remove(&id)
        .ok_or_else(|| ApiError::no_file(&id))?;
    store.file_content.remove(&id);
    Ok(ok_json(
        &json!({"id": id, "object": "file", "deleted": true}),
    ))
}
