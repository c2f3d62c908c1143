//! Assistants API: assistants, threads, messages, runs and run steps.
//!
//! Runs complete immediately: creating one appends an assistant message to
//! the thread (the usual `mock mock …` text), records one `message_creation`
//! step and returns a `completed` run with `usage`. With `stream: true` the
//! Assistants SSE events are emitted (`thread.run.created` …
//! `thread.message.delta` … `thread.run.completed`, then `done`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::chat::non_streamed;
use crate::error::{ApiError, ApiResult};
use crate::fault::Fault;
use crate::sse::{self, SSE, Tail, named_event};
use crate::store::{ListParams, Store, merge_fields, paginate};
use crate::tokens::value_messages_tokens;
use crate::util::{completion_len, new_id, now, ok_json, parse_json, word_delta, words};

const ASSISTANT_FIELDS: &[&str] = &[
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
    "reasoning_effort",
];

/// Parses a JSON object body (an empty body is `{}`).
pub(crate) fn body_map(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    parse_json(body, true)
}

/// A required non-empty string field.
pub(crate) fn req_str<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match b.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::Null) | None => Err(ApiError::missing(key)),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid type for '{key}': expected a string."
        ))
        .param(key)
        .code("invalid_type")),
    }
}

/// An optional non-empty string field.
pub(crate) fn opt_str<'a>(b: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    b.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `metadata` or `{}`.
pub(crate) fn metadata(b: &Map<String, Value>) -> Value {
    match b.get("metadata") {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// A JSON object response, broken for the mid-stream faults.
pub(crate) fn object_response(obj: &Value, fault: Fault) -> Response {
    non_streamed(serde_json::to_vec(obj).unwrap_or_default(), fault)
}

fn deleted(id: &str, object: &str) -> Response {
    ok_json(&json!({"id": id, "object": object, "deleted": true}))
}

fn no_assistant(id: &str) -> ApiError {
    ApiError::not_found(format!("No assistant found with id '{id}'."))
}

fn no_thread(id: &str) -> ApiError {
    ApiError::not_found(format!("No thread found with id '{id}'."))
}

fn no_message(id: &str) -> ApiError {
    ApiError::not_found(format!("No message found with id '{id}'."))
}

fn no_run(id: &str) -> ApiError {
    ApiError::not_found(format!("No run found with id '{id}'."))
}

fn no_step(id: &str) -> ApiError {
    ApiError::not_found(format!("No run step found with id '{id}'."))
}

// ---------------------------------------------------------------- assistants

/// `POST /v1/assistants`.
pub(crate) async fn create_assistant(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let model = req_str(&b, "model")?.to_owned();
    let fault = Fault::of(&model);
    fault.before_headers(&model, &headers).await?;
    let id = new_id("asst_");
    let mut obj = json!({
        "id": id,
        "object": "assistant",
        "created_at": now(),
        "name": null,
        "description": null,
        "model": model,
        "instructions": null,
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
    });
    merge_fields(&mut obj, &b, ASSISTANT_FIELDS);
    s.store().assistants.insert(id, None, obj.clone());
    Ok(object_response(&obj, fault))
}

/// `GET /v1/assistants`.
pub(crate) async fn list_assistants(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let items = s.store().assistants.sorted_values(|_| true);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/assistants/{id}`.
pub(crate) async fn get_assistant(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        store.assistants.get(&id).ok_or_else(|| no_assistant(&id))?,
    ))
}

/// `POST /v1/assistants/{id}`.
pub(crate) async fn modify_assistant(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let fault = opt_str(&b, "model").map_or(Fault::None, Fault::of);
    if s.store().assistants.get(&id).is_none() {
        return Err(no_assistant(&id));
    }
    if let Some(model) = opt_str(&b, "model") {
        fault.before_headers(model, &headers).await?;
    }
    let mut store = s.store();
    let obj = store
        .assistants
        .get_mut(&id)
        .ok_or_else(|| no_assistant(&id))?;
    merge_fields(obj, &b, ASSISTANT_FIELDS);
    Ok(object_response(obj, fault))
}

/// `DELETE /v1/assistants/{id}`.
pub(crate) async fn delete_assistant(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    s.store()
        .assistants
        .remove(&id)
        .ok_or_else(|| no_assistant(&id))?;
    Ok(deleted(&id, "assistant.deleted"))
}

// ------------------------------------------------------------------- threads

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": {"value": text, "annotations": []}})
}

/// Converts a message `content` (string or parts) to stored parts.
fn convert_content(c: Option<&Value>) -> Result<Value, ApiError> {
    match c {
        Some(Value::String(s)) => Ok(json!([text_part(s)])),
        Some(Value::Array(parts)) => Ok(Value::Array(
            parts
                .iter()
                .map(
                    |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text_part(t),
                        _ => p.clone(),
                    },
                )
                .collect(),
        )),
        _ => Err(ApiError::missing("content")),
    }
}

/// Builds (does not store) a user/assistant message of `thread_id`.
fn build_message(thread_id: &str, m: &Value) -> Result<Value, ApiError> {
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid value: '{other}'. Supported values are: 'user' and 'assistant'."
            ))
            .param("role")
            .code("invalid_value"));
        }
        None => return Err(ApiError::missing("role")),
    };
    let content = convert_content(m.get("content"))?;
    let t = now();
    Ok(json!({
        "id": new_id("msg_"),
        "object": "thread.message",
        "created_at": t,
        "assistant_id": null,
        "thread_id": thread_id,
        "run_id": null,
        "role": role,
        "content": content,
        "attachments": m.get("attachments").filter(|a| a.is_array()).cloned().unwrap_or(json!([])),
        "metadata": m.get("metadata").filter(|a| a.is_object()).cloned().unwrap_or(json!({})),
        "status": "completed",
        "incomplete_details": null,
        "completed_at": t,
        "incomplete_at": null,
    }))
}

fn insert_message(store: &mut Store, thread_id: &str, msg: Value) {
    let id = msg
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    store.messages.insert(id, Some(thread_id.to_owned()), msg);
}

/// Validates then stores a new thread (and its initial messages).
fn new_thread(store: &mut Store, b: &Map<String, Value>) -> Result<Value, ApiError> {
    let id = new_id("thread_");
    let msgs = match b.get("messages") {
        Some(Value::Array(ms)) => ms
            .iter()
            .map(|m| build_message(&id, m))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            return Err(
                ApiError::bad_request("Invalid type for 'messages': expected an array.")
                    .param("messages")
                    .code("invalid_type"),
            );
        }
    };
    let thread = json!({
        "id": id,
        "object": "thread",
        "created_at": now(),
        "metadata": metadata(b),
        "tool_resources": b.get("tool_resources").filter(|v| v.is_object()).cloned().unwrap_or(json!({})),
    });
    store.threads.insert(id.clone(), None, thread.clone());
    for m in msgs {
        insert_message(store, &id, m);
    }
    Ok(thread)
}

/// `POST /v1/threads`.
pub(crate) async fn create_thread(State(s): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let b = body_map(&body)?;
    let thread = new_thread(&mut s.store(), &b)?;
    Ok(ok_json(&thread))
}

/// `GET /v1/threads/{id}`.
pub(crate) async fn get_thread(State(s): State<Arc<Shared>>, Path(tid): Path<String>) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        store.threads.get(&tid).ok_or_else(|| no_thread(&tid))?,
    ))
}

/// `POST /v1/threads/{id}`.
pub(crate) async fn modify_thread(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut store = s.store();
    let obj = store.threads.get_mut(&tid).ok_or_else(|| no_thread(&tid))?;
    merge_fields(obj, &b, &["metadata", "tool_resources"]);
    Ok(ok_json(obj))
}

/// `DELETE /v1/threads/{id}` (also drops its messages, runs and steps).
pub(crate) async fn delete_thread(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
) -> ApiResult {
    let mut store = s.store();
    store.threads.remove(&tid).ok_or_else(|| no_thread(&tid))?;
    store.messages.remove_children(&tid);
    let runs: Vec<String> = store
        .runs
        .sorted(|e| e.parent.as_deref() == Some(tid.as_str()))
        .iter()
        .filter_map(|e| e.obj.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    for r in runs {
        store.steps.remove_children(&r);
    }
    store.runs.remove_children(&tid);
    Ok(deleted(&tid, "thread.deleted"))
}

// ------------------------------------------------------------------ messages

/// `POST /v1/threads/{id}/messages`.
pub(crate) async fn create_message(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: Value = Value::Object(body_map(&body)?);
    let mut store = s.store();
    if store.threads.get(&tid).is_none() {
        return Err(no_thread(&tid));
    }
    let msg = build_message(&tid, &b)?;
    insert_message(&mut store, &tid, msg.clone());
    Ok(ok_json(&msg))
}

/// `GET /v1/threads/{id}/messages` (`run_id` filter).
pub(crate) async fn list_messages(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let run_id = q.get("run_id").filter(|r| !r.is_empty());
    let store = s.store();
    if store.threads.get(&tid).is_none() {
        return Err(no_thread(&tid));
    }
    let items = store.messages.sorted_values(|e| {
        e.parent.as_deref() == Some(tid.as_str())
            && run_id.is_none_or(|r| e.obj.get("run_id").and_then(Value::as_str) == Some(r))
    });
    drop(store);
    Ok(ok_json(&paginate(items, &p)?))
}

fn child<'a>(table: &'a crate::store::Table, parent: &str, id: &str) -> Option<&'a Value> {
    table
        .entry(id)
        .filter(|e| e.parent.as_deref() == Some(parent))
        .map(|e| &e.obj)
}

/// `GET /v1/threads/{id}/messages/{mid}`.
pub(crate) async fn get_message(
    State(s): State<Arc<Shared>>,
    Path((tid, mid)): Path<(String, String)>,
) -> ApiResult {
    let store = s.store();
    if store.threads.get(&tid).is_none() {
        return Err(no_thread(&tid));
    }
    Ok(ok_json(
        child(&store.messages, &tid, &mid).ok_or_else(|| no_message(&mid))?,
    ))
}

/// `POST /v1/threads/{id}/messages/{mid}` (metadata).
pub(crate) async fn modify_message(
    State(s): State<Arc<Shared>>,
    Path((tid, mid)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut store = s.store();
    if child(&store.messages, &tid, &mid).is_none() {
        return Err(no_message(&mid));
    }
    let obj = store
        .messages
        .get_mut(&mid)
        .ok_or_else(|| no_message(&mid))?;
    merge_fields(obj, &b, &["metadata"]);
    Ok(ok_json(obj))
}

/// `DELETE /v1/threads/{id}/messages/{mid}`.
pub(crate) async fn delete_message(
    State(s): State<Arc<Shared>>,
    Path((tid, mid)): Path<(String, String)>,
) -> ApiResult {
    let mut store = s.store();
    if child(&store.messages, &tid, &mid).is_none() {
        return Err(no_message(&mid));
    }
    store.messages.remove(&mid);
    Ok(deleted(&mid, "thread.message.deleted"))
}

// ---------------------------------------------------------------------- runs

/// Where a run's thread comes from.
enum ThreadSource {
    Existing(String),
    New(Map<String, Value>),
}

/// Everything a finished run produced.
struct RunOutput {
    thread: Option<Value>,
    run: Value,
    message: Value,
    step: Value,
    n: usize,
}

fn set(obj: &mut Value, key: &str, v: Value) {
    if let Value::Object(o) = obj {
        o.insert(key.to_owned(), v);
    }
}

async fn run_common(
    s: &Shared,
    headers: &HeaderMap,
    source: ThreadSource,
    b: Map<String, Value>,
) -> ApiResult {
    let assistant_id = req_str(&b, "assistant_id")?.to_owned();
    let assistant = s
        .store()
        .assistants
        .get(&assistant_id)
        .cloned()
        .ok_or_else(|| no_assistant(&assistant_id))?;
    let unknown_thread = match &source {
        ThreadSource::Existing(tid) => s.store().threads.get(tid).is_none().then(|| tid.clone()),
        ThreadSource::New(_) => None,
    };
    if let Some(tid) = unknown_thread {
        return Err(no_thread(&tid));
    }
    let model = opt_str(&b, "model")
        .or_else(|| assistant.get("model").and_then(Value::as_str))
        .unwrap_or("mock-model")
        .to_owned();
    let fault = Fault::of(&model);
    fault.before_headers(&model, headers).await?;

    let additional = match b.get("additional_messages") {
        Some(Value::Array(ms)) => ms.clone(),
        _ => Vec::new(),
    };
    let limit = b.get("max_completion_tokens").and_then(Value::as_u64);
    let n = completion_len(s.opts.chunks, limit);
    let stream = b.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let out = {
        let mut store = s.store();
        let (tid, thread) = match source {
            ThreadSource::Existing(tid) => {
                if store.threads.get(&tid).is_none() {
                    return Err(no_thread(&tid));
                }
                (tid, None)
            }
            ThreadSource::New(tb) => {
                let t = new_thread(&mut store, &tb)?;
                let tid = t
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                (tid, Some(t))
            }
        };
        let extra = additional
            .iter()
            .map(|m| build_message(&tid, m))
            .collect::<Result<Vec<_>, _>>()?;
        for m in extra {
            insert_message(&mut store, &tid, m);
        }
        let history = store
            .messages
            .sorted(|e| e.parent.as_deref() == Some(tid.as_str()));
        let prompt_tokens = value_messages_tokens(history.iter().map(|e| &e.obj));
        let usage = if fault.no_usage() {
            Value::Null
        } else {
            json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n as u64,
            })
        };
        let t = now();
        let run_id = new_id("run_");
        let text = words(&s.words, n);
        let mut message = build_message(&tid, &json!({"role": "assistant", "content": text}))?;
        set(&mut message, "assistant_id", json!(assistant_id));
        set(&mut message, "run_id", json!(run_id));
        let msg_id = message.get("id").cloned().unwrap_or(Value::Null);
        let step_id = new_id("step_");
        let step = json!({
            "id": step_id,
            "object": "thread.run.step",
            "created_at": t,
            "run_id": run_id,
            "assistant_id": assistant_id,
            "thread_id": tid,
            "type": "message_creation",
            "status": "completed",
            "cancelled_at": null,
            "completed_at": t,
            "expires_at": null,
            "expired_at": null,
            "failed_at": null,
            "last_error": null,
            "step_details": {"type": "message_creation", "message_creation": {"message_id": msg_id}},
            "usage": usage,
            "metadata": {},
        });
        let pick = |k: &str, default: Value| {
            b.get(k)
                .filter(|v| !v.is_null())
                .or_else(|| assistant.get(k).filter(|v| !v.is_null()))
                .cloned()
                .unwrap_or(default)
        };
        let mut instructions = pick("instructions", Value::Null);
        if let Some(extra) = opt_str(&b, "additional_instructions") {
            instructions = match instructions {
                Value::String(i) => Value::String(format!("{i}\n{extra}")),
                _ => Value::String(extra.to_owned()),
            };
        }
        let run = json!({
            "id": run_id,
            "object": "thread.run",
            "created_at": t,
            "thread_id": tid,
            "assistant_id": assistant_id,
            "status": "completed",
            "required_action": null,
            "last_error": null,
            "expires_at": null,
            "started_at": t,
            "cancelled_at": null,
            "failed_at": null,
            "completed_at": t,
            "incomplete_details": null,
            "model": model,
            "instructions": instructions,
            "tools": pick("tools", json!([])),
            "tool_resources": pick("tool_resources", json!({})),
            "metadata": metadata(&b),
            "usage": usage,
            "temperature": pick("temperature", json!(1.0)),
            "top_p": pick("top_p", json!(1.0)),
            "max_prompt_tokens": b.get("max_prompt_tokens").cloned().unwrap_or(Value::Null),
            "max_completion_tokens": b.get("max_completion_tokens").cloned().unwrap_or(Value::Null),
            "truncation_strategy": b.get("truncation_strategy").filter(|v| v.is_object()).cloned()
                .unwrap_or(json!({"type": "auto", "last_messages": null})),
            "response_format": pick("response_format", json!("auto")),
            "tool_choice": b.get("tool_choice").filter(|v| !v.is_null()).cloned().unwrap_or(json!("auto")),
            "parallel_tool_calls": b.get("parallel_tool_calls").filter(|v| v.is_boolean()).cloned().unwrap_or(json!(true)),
        });
        insert_message(&mut store, &tid, message.clone());
        store
            .runs
            .insert(run_id.clone(), Some(tid.clone()), run.clone());
        store.steps.insert(step_id, Some(run_id), step.clone());
        RunOutput {
            thread,
            run,
            message,
            step,
            n,
        }
    };
    if stream {
        let (events, tail) = run_events(&out, fault);
        return Ok(sse::stream_response(events, s.opts.chunk_delay, tail, SSE));
    }
    Ok(object_response(&out.run, fault))
}

/// The Assistants streaming events of a finished run.
fn run_events(out: &RunOutput, fault: Fault) -> (Vec<bytes::Bytes>, Tail) {
    let ev = |name: &str, v: &Value| named_event(name, &serde_json::to_vec(v).unwrap_or_default());
    let mut events = Vec::new();
    if let Some(t) = &out.thread {
        events.push(ev("thread.created", t));
    }
    let mut run = out.run.clone();
    set(&mut run, "status", json!("queued"));
    set(&mut run, "started_at", Value::Null);
    set(&mut run, "completed_at", Value::Null);
    set(&mut run, "usage", Value::Null);
    events.push(ev("thread.run.created", &run));
    events.push(ev("thread.run.queued", &run));
    set(&mut run, "status", json!("in_progress"));
    set(
        &mut run,
        "started_at",
        out.run.get("started_at").cloned().unwrap_or(Value::Null),
    );
    events.push(ev("thread.run.in_progress", &run));
    let mut step = out.step.clone();
    set(&mut step, "status", json!("in_progress"));
    set(&mut step, "completed_at", Value::Null);
    set(&mut step, "usage", Value::Null);
    events.push(ev("thread.run.step.created", &step));
    events.push(ev("thread.run.step.in_progress", &step));
    let mut msg = out.message.clone();
    set(&mut msg, "status", json!("in_progress"));
    set(&mut msg, "completed_at", Value::Null);
    set(&mut msg, "content", json!([]));
    events.push(ev("thread.message.created", &msg));
    events.push(ev("thread.message.in_progress", &msg));
    let msg_id = out.message.get("id").cloned().unwrap_or(Value::Null);
    let (tail, max_content) = Tail::of(fault);
    let n = max_content.map_or(out.n, |m| out.n.min(m));
    for i in 0..n {
        events.push(ev(
            "thread.message.delta",
            &json!({
                "id": msg_id,
                "object": "thread.message.delta",
                "delta": {"content": [{"index": 0, "type": "text", "text": {"value": word_delta(i), "annotations": []}}]},
            }),
        ));
    }
    if tail == Tail::Done {
        events.push(ev("thread.message.completed", &out.message));
        events.push(ev("thread.run.step.completed", &out.step));
        events.push(ev("thread.run.completed", &out.run));
        events.push(Bytes::from_static(b"event: done\ndata: [DONE]\n\n"));
    }
    (events, tail)
}

/// `POST /v1/threads/{id}/runs`.
pub(crate) async fn create_run(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    run_common(&s, &headers, ThreadSource::Existing(tid), b).await
}

/// `POST /v1/threads/runs`.
pub(crate) async fn create_thread_and_run(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let thread = match b.get("thread") {
        Some(Value::Object(t)) => t.clone(),
        _ => Map::new(),
    };
    run_common(&s, &headers, ThreadSource::New(thread), b).await
}

/// `GET /v1/threads/{id}/runs`.
pub(crate) async fn list_runs(
    State(s): State<Arc<Shared>>,
    Path(tid): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let store = s.store();
    if store.threads.get(&tid).is_none() {
        return Err(no_thread(&tid));
    }
    let items = store
        .runs
        .sorted_values(|e| e.parent.as_deref() == Some(tid.as_str()));
    drop(store);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/threads/{id}/runs/{rid}`.
pub(crate) async fn get_run(
    State(s): State<Arc<Shared>>,
    Path((tid, rid)): Path<(String, String)>,
) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        child(&store.runs, &tid, &rid).ok_or_else(|| no_run(&rid))?,
    ))
}

/// `POST /v1/threads/{id}/runs/{rid}` (metadata).
pub(crate) async fn modify_run(
    State(s): State<Arc<Shared>>,
    Path((tid, rid)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let b = body_map(&body)?;
    let mut store = s.store();
    if child(&store.runs, &tid, &rid).is_none() {
        return Err(no_run(&rid));
    }
    let obj = store.runs.get_mut(&rid).ok_or_else(|| no_run(&rid))?;
    merge_fields(obj, &b, &["metadata"]);
    Ok(ok_json(obj))
}

/// `POST /v1/threads/{id}/runs/{rid}/cancel` — marks the run `cancelled`.
pub(crate) async fn cancel_run(
    State(s): State<Arc<Shared>>,
    Path((tid, rid)): Path<(String, String)>,
) -> ApiResult {
    let mut store = s.store();
    if child(&store.runs, &tid, &rid).is_none() {
        return Err(no_run(&rid));
    }
    let obj = store.runs.get_mut(&rid).ok_or_else(|| no_run(&rid))?;
    set(obj, "status", json!("cancelled"));
    set(obj, "cancelled_at", json!(now()));
    Ok(ok_json(obj))
}

/// `GET /v1/threads/{id}/runs/{rid}/steps`.
pub(crate) async fn list_steps(
    State(s): State<Arc<Shared>>,
    Path((tid, rid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let store = s.store();
    if child(&store.runs, &tid, &rid).is_none() {
        return Err(no_run(&rid));
    }
    let items = store
        .steps
        .sorted_values(|e| e.parent.as_deref() == Some(rid.as_str()));
    drop(store);
    Ok(ok_json(&paginate(items, &p)?))
}

/// `GET /v1/threads/{id}/runs/{rid}/steps/{sid}`.
pub(crate) async fn get_step(
    State(s): State<Arc<Shared>>,
    Path((tid, rid, sid)): Path<(String, String, String)>,
) -> ApiResult {
    let store = s.store();
    if child(&store.runs, &tid, &rid).is_none() {
        return Err(no_run(&rid));
    }
    Ok(ok_json(
        child(&store.steps, &rid, &sid).ok_or_else(|| no_step(&sid))?,
    ))
}
