//! The Responses API: `POST /v1/responses` (plain or streamed), retrieve,
//! delete and `input_items`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::assistants::{body_map, metadata, object_response, req_str};
use crate::error::{ApiError, ApiResult};
use crate::fault::{Fault, error_for};
use crate::sse::{self, SSE, Tail, named_event};
use crate::store::{ListParams, paginate};
use crate::tokens::{message_tokens, value_chars};
use crate::util::{completion_len, new_id, now, ok_json, word_delta, words};

fn no_response(id: &str) -> ApiError {
    ApiError::not_found(format!("Response with id '{id}' not found."))
}

/// A validated `POST /v1/responses`.
struct Plan {
    model: String,
    fault: Fault,
    items: Vec<Value>,
    input_tokens: u64,
    n: usize,
    stream: bool,
    store: bool,
    body: Map<String, Value>,
}

/// Normalises `input` into stored input items (with ids).
fn normalise_input(input: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let text_part = |role: &str, t: &str| {
        if role == "assistant" {
            json!({"type": "output_text", "text": t, "annotations": []})
        } else {
            json!({"type": "input_text", "text": t})
        }
    };
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({
            "id": new_id("msg_"),
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [text_part("user", s)],
        })]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let Value::Object(o) = item else {
                    return Err(ApiError::bad_request(
                        "Invalid 'input': expected an array of input items.",
                    )
                    .param("input"));
                };
                let mut o = o.clone();
                let is_message = match o.get("type").and_then(Value::as_str) {
                    Some(t) => t == "message",
                    None => o.contains_key("role"),
                };
                if is_message {
                    o.insert("type".to_owned(), json!("message"));
                    let role = o
                        .get("role")
                        .and_then(Value::as_str)
                        .unwrap_or("user")
                        .to_owned();
                    if let Some(Value::String(t)) = o.get("content") {
                        let part = text_part(&role, t);
                        o.insert("content".to_owned(), json!([part]));
                    }
                    o.entry("status").or_insert(json!("completed"));
                }
                if !o.get("id").is_some_and(Value::is_string) {
                    let prefix = if is_message { "msg_" } else { "item_" };
                    o.insert("id".to_owned(), json!(new_id(prefix)));
                }
                Ok(Value::Object(o))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "Invalid type for 'input': expected a string or an array of input items.",
        )
        .param("input")
        .code("invalid_type")),
    }
}

fn plan(s: &Shared, body: &[u8]) -> Result<Plan, ApiError> {
    let b = body_map(body)?;
    let model = req_str(&b, "model")?.to_owned();
    let items = normalise_input(b.get("input"))?;
    let instructions = b.get("instructions").and_then(Value::as_str);
    let input_tokens = instructions.map_or(0, |i| message_tokens(i.chars().count()))
        + items
            .iter()
            .map(|i| message_tokens(value_chars(i.get("content"))))
            .sum::<u64>();
    let limit = b.get("max_output_tokens").and_then(Value::as_u64);
    Ok(Plan {
        fault: Fault::of(&model),
        model,
        items,
        input_tokens,
        n: completion_len(s.opts.chunks, limit),
        stream: b.get("stream").and_then(Value::as_bool).unwrap_or(false),
        store: b.get("store").and_then(Value::as_bool).unwrap_or(true),
        body: b,
    })
}

/// A `response` object; `output`/`usage` given by the caller.
fn response_object(
    p: &Plan,
    id: &str,
    created: u64,
    status: &str,
    output: Value,
    usage: Option<Value>,
) -> Value {
    let b = &p.body;
    let get = |k: &str, default: Value| {
        b.get(k)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default)
    };
    let mut obj = json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": get("instructions", Value::Null),
        "max_output_tokens": get("max_output_tokens", Value::Null),
        "model": p.model,
        "output": output,
        "parallel_tool_calls": get("parallel_tool_calls", json!(true)),
        "previous_response_id": get("previous_response_id", Value::Null),
        "reasoning": get("reasoning", json!({"effort": null, "summary": null})),
        "service_tier": "default",
        "store": p.store,
        "temperature": get("temperature", json!(1.0)),
        "text": get("text", json!({"format": {"type": "text"}})),
        "tool_choice": get("tool_choice", json!("auto")),
        "tools": get("tools", json!([])),
        "top_p": get("top_p", json!(1.0)),
        "truncation": get("truncation", json!("disabled")),
        "user": get("user", Value::Null),
        "metadata": metadata(b),
    });
    if let (Value::Object(o), Some(u)) = (&mut obj, usage) {
        o.insert("usage".to_owned(), u);
    }
    obj
}

fn usage(p: &Plan) -> Option<Value> {
    (!p.fault.no_usage()).then(|| {
        json!({
            "input_tokens": p.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": p.n,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": p.input_tokens + p.n as u64,
        })
    })
}

fn output_message(msg_id: &str, status: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(t) => json!([{"type": "output_text", "text": t, "annotations": [], "logprobs": []}]),
        None => json!([]),
    };
    json!({"id": msg_id, "type": "message", "status": status, "role": "assistant", "content": content})
}

/// The finished response plus what streaming needs.
struct Rendered {
    id: String,
    created: u64,
    msg_id: String,
    text: String,
    object: Value,
}

fn render(s: &Shared, p: &Plan) -> Rendered {
    let id = new_id("resp_");
    let created = now();
    let msg_id = new_id("msg_");
    let text = words(&s.words, p.n).into_owned();
    let object = response_object(
        p,
        &id,
        created,
        "completed",
        json!([output_message(&msg_id, "completed", Some(&text))]),
        usage(p),
    );
    Rendered {
        id,
        created,
        msg_id,
        text,
        object,
    }
}

fn stream_events(p: &Plan, r: &Rendered) -> (Vec<Bytes>, Tail) {
    let mut seq = 0u64;
    let mut events = Vec::with_capacity(p.n + 10);
    let mut push = |name: &str, mut v: Value| {
        if let Value::Object(o) = &mut v {
            o.insert("type".to_owned(), json!(name));
            o.insert("sequence_number".to_owned(), json!(seq));
        }
        seq += 1;
        events.push(named_event(
            name,
            &serde_json::to_vec(&v).unwrap_or_default(),
        ));
    };
    let pending_usage = (!p.fault.no_usage()).then_some(Value::Null);
    let in_progress = response_object(p, &r.id, r.created, "in_progress", json!([]), pending_usage);
    push("response.created", json!({"response": in_progress}));
    push("response.in_progress", json!({"response": in_progress}));
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": output_message(&r.msg_id, "in_progress", None)}),
    );
    let loc = |extra: Value| {
        let mut v = json!({"item_id": r.msg_id, "output_index": 0, "content_index": 0});
        if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
            o.extend(e);
        }
        v
    };
    push(
        "response.content_part.added",
        loc(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
    );
    let (tail, max_content) = Tail::of(p.fault);
    let n = max_content.map_or(p.n, |m| p.n.min(m));
    for i in 0..n {
        push(
            "response.output_text.delta",
            loc(json!({"delta": word_delta(i), "logprobs": []})),
        );
    }
    if tail == Tail::Done {
        push(
            "response.output_text.done",
            loc(json!({"text": r.text, "logprobs": []})),
        );
        push(
            "response.content_part.done",
            loc(json!({"part": {"type": "output_text", "text": r.text, "annotations": []}})),
        );
        push(
            "response.output_item.done",
            json!({"output_index": 0, "item": output_message(&r.msg_id, "completed", Some(&r.text))}),
        );
        push("response.completed", json!({"response": r.object}));
    }
    (events, tail)
}

/// `POST /v1/responses`.
pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let p = plan(&s, &body)?;
    let unknown_prev = p
        .body
        .get("previous_response_id")
        .and_then(Value::as_str)
        .filter(|prev| s.store().responses.get(prev).is_none());
    if let Some(prev) = unknown_prev {
        return Err(
            ApiError::not_found(format!("Previous response with id '{prev}' not found."))
                .param("previous_response_id"),
        );
    }
    p.fault.before_headers(&p.model, &headers).await?;
    let r = render(&s, &p);
    if p.store {
        let mut store = s.store();
        store.responses.insert(r.id.clone(), None, r.object.clone());
        store.response_inputs.insert(r.id.clone(), p.items.clone());
    }
    if p.stream {
        let (events, tail) = stream_events(&p, &r);
        return Ok(sse::stream_response(events, s.opts.chunk_delay, tail, SSE));
    }
    Ok(object_response(&r.object, p.fault))
}

/// A response body for a batch line (not stored).
pub(crate) fn for_batch(s: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let p = plan(s, body)?;
    if let Fault::Error(st) = p.fault {
        return Err(error_for(st, &p.model, &HeaderMap::new()));
    }
    Ok(serde_json::to_vec(&render(s, &p).object).unwrap_or_default())
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn retrieve(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let store = s.store();
    Ok(ok_json(
        store.responses.get(&id).ok_or_else(|| no_response(&id))?,
    ))
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    let mut store = s.store();
    store
        .responses
        .remove(&id)
        .ok_or_else(|| no_response(&id))?;
    store.response_inputs.remove(&id);
    Ok(ok_json(
        &json!({"id": id, "object": "response", "deleted": true}),
    ))
}

/// `GET /v1/responses/{id}/input_items`.
pub(crate) async fn input_items(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let p = ListParams::parse(&q)?;
    let items = s
        .store()
        .response_inputs
        .get(&id)
        .cloned()
        .ok_or_else(|| no_response(&id))?;
    Ok(ok_json(&paginate(items, &p)?))
}
