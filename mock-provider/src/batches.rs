//! `/v1/batches`: batches complete immediately. Every non-empty JSONL line
//! of the input file (`{"custom_id","method","url","body"}`) is answered
//! like the real endpoint would (chat, completions, embeddings, moderations,
//! responses) and written to a new output file as
//! `{"id":"batch_req_…","custom_id","response":{"status_code","request_id","body"},"error":null}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::Shared;
use crate::assistants::{body_map, metadata, req_str};
use crate::error::{ApiError, ApiResult};
use crate::files::store_file;
use crate::store::{ListParams, paginate};
use crate::util::{new_id, now, ok_json};
use crate::{chat, embeddings, responses};

const ENDPOINTS: &[&str] = &[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
];

fn no_batch(id: &str) -> ApiError {
    ApiError::not_found(format!("No batch found with id '{id}'."))
}

/// Answers one batch request body for `url`.
fn answer(s: &Shared, url: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    match url {
        "/v1/chat/completions" => chat::chat_for_batch(s, body),
        "/v1/completions" => chat::completion_for_batch(s, body),
        "/v1/embeddings" => embeddings::embeddings_for_batch(body),
        "/v1/moderations" => embeddings::moderations_for_batch(body),
        "/v1/responses" => responses::for_batch(s, body),
        other => Err(ApiError::not_found(format!("Invalid URL (POST {other})"))),
    }
}

/// Runs every line; returns the output JSONL and (completed, failed).
fn process(s: &Shared, endpoint: &str, input: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut out = Vec::with_capacity(input.len() * 2);
    let (mut ok, mut failed) = (0, 0);
    for line in input.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = match serde_json::from_slice::<Value>(line) {
            Ok(req) => {
                let url = req.get("url").and_then(Value::as_str).unwrap_or(endpoint);
                let body = req
                    .get("body")
                    .map(|b| serde_json::to_vec(b).unwrap_or_default())
                    .unwrap_or_default();
                let (status, body) = match answer(s, url, &body) {
                    Ok(b) => (200, serde_json::from_slice(&b).unwrap_or(Value::Null)),
                    Err(e) => (e.status.as_u16(), json!({"error": e.to_value()})),
                };
                if status == 200 {
                    ok += 1;
                } else {
                    failed += 1;
                }
                json!({
                    "id": new_id("batch_req_"),
                    "custom_id": req.get("custom_id").cloned().unwrap_or(Value::Null),
                    "response": {"status_code": status, "request_id": new_id("req_"), "body": body},
                    "error": null,
                })
            }
            Err(e) => {
                failed += 1;
                json!({
                    "id": new_id("batch_req_"),
                    "custom_id": null,
                    "response": null,
                    "error": {"code": "invalid_json_line", "message": format!("This line is not parseable as valid JSON: {e}")},
                })
            }
        };
        if serde_json::to_writer(&mut out, &result).is_ok() {
            out.push(b'\n');
        }
    }
    (out, ok, failed)
}

/// `POST /v1/batches`.
pub(crate) async fn create(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let b = body_map(&body)?;
    let input_file_id = req_str(&b, "input_file_id")?;
    let endpoint = req_str(&b, "endpoint")?;
    if !ENDPOINTS.contains(&endpoint) {
        return Err(ApiError::bad_request(format!(
            "Invalid value: '{endpoint}'. Supported values are: {}.",
            ENDPOINTS
                .iter()
                .map(|e| format!("'{e}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .param("endpoint")
        .code("invalid_value"));
    }
    let window = req_str(&b, "completion_window")?;
    if window != "24h" {
        return Err(ApiError::bad_request(format!(
            "Invalid value: '{window}'. Supported values are: '24h'."
        ))
        .param("completion_window")
        .code("invalid_value"));
    }
    let input = s
        .store()
        .file_content
        .get(input_file_id)
        .cloned()
        .ok_or_else(|| ApiError::no_file(input_file_id))?;
    let (output, completed, failed) = process(&s, endpoint, &input);
    let id = new_id("batch_");
    let t = now();
    let mut store = s.store();
    let out_file = store_file(
        &mut store,
        &format!("{id}_output.jsonl"),
        "batch_output",
        Bytes::from(output),
    );
    let obj = json!({
        "id": id,
        "object": "batch",
        "endpoint": endpoint,
        "errors": null,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "completed",
        "output_file_id": out_file.get("id").cloned().unwrap_or(Value::Null),
        "error_file_id": null,
        "created_at": t,
        "in_progress_at": t,
        "expires_at": t + 24 * 3600,
        "finalizing_at": t,
        "completed_at": t,
        "failed_at": null,
        "expired_at": null,
        "cancelling_at": null,
        "cancelled_at": null,
        "request_counts": {"total": completed + failed, "completed": completed, "failed": failed},
        "metadata": metadata(&b),
    });
    store.batches.insert(id, None, obj.clone());
    Ok(ok_json(&obj))
}

/// `GET /v1/batches`.
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let items = s.store().batches.sorted_values(|_| true);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/batches/{id}`.
pub(crate) async fn retrieve(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        store.batches.get(&id).ok_or_else(|| no_batch(&id))?,
    ))
}

/// `POST /v1/batches/{id}/cancel` — marks the batch `cancelled`.
pub(crate) async fn cancel(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let mut store = s.store();
    let obj = store.batches.get_mut(&id).ok_or_else(|| no_batch(&id))?;
    if let Value::Object(o) = obj {
        let t = json!(now());
        o.insert("status".to_owned(), json!("cancelled"));
        o.insert("cancelling_at".to_owned(), t.clone());
        o.insert("cancelled_at".to_owned(), t);
    }
    Ok(ok_json(obj))
}
