//! `POST /v1/chat/completions` and `POST /v1/completions` — the hot path:
//! no lock, borrowed parsing, `serde` or template rendering.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::error::{ApiError, ApiResult};
use crate::fault::{Fault, error_for};
use crate::sse::{self, DONE, SSE, Tail};
use crate::tokens::{ContentChars, message_tokens, text_tokens};
use crate::util::{
    completion_len, json_bytes, new_id, now, parse_json_borrowed, word_delta, words,
};

const FINGERPRINT: &str = "fp_mock";

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: ContentChars,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

/// What a completion request asks for.
pub(crate) struct Plan {
    pub model: String,
    pub prompt_tokens: u64,
    /// Content chunks = completion tokens.
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub fault: Fault,
}

impl Plan {
    fn usage(&self) -> Option<Usage> {
        (!self.fault.no_usage()).then(|| Usage::new(self.prompt_tokens, self.n as u64))
    }
}

/// Chat-style usage.
#[derive(Serialize)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

fn require_model(model: Option<std::borrow::Cow<'_, str>>) -> Result<String, ApiError> {
    match model {
        Some(m) if !m.is_empty() => Ok(m.into_owned()),
        _ => Err(ApiError::bad_request("you must provide a model parameter")),
    }
}

/// Parses and validates a chat request.
pub(crate) fn plan_chat(body: &[u8], chunks: usize) -> Result<Plan, ApiError> {
    let req: ChatRequest<'_> = parse_json_borrowed(body)?;
    let model = require_model(req.model)?;
    let messages = req.messages.ok_or_else(|| ApiError::missing("messages"))?;
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        )
        .param("messages")
        .code("empty_array"));
    }
    let prompt_tokens = messages.iter().map(|m| message_tokens(m.content.0)).sum();
    let limit = req.max_completion_tokens.or(req.max_tokens);
    Ok(Plan {
        fault: Fault::of(&model),
        model,
        prompt_tokens,
        n: completion_len(chunks, limit),
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// Legacy prompt tokens: `(chars + 3) / 4` per string, one per token.
fn prompt_tokens(prompt: Option<&serde_json::Value>) -> u64 {
    use serde_json::Value;
    match prompt {
        Some(Value::String(s)) => text_tokens(s.chars().count()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => text_tokens(s.chars().count()),
                Value::Number(_) => 1,
                Value::Array(toks) => toks.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Parses and validates a legacy completion request.
pub(crate) fn plan_completion(body: &[u8], chunks: usize) -> Result<Plan, ApiError> {
    let req: CompletionRequest<'_> = parse_json_borrowed(body)?;
    let model = require_model(req.model)?;
    Ok(Plan {
        fault: Fault::of(&model),
        prompt_tokens: prompt_tokens(req.prompt.as_ref()),
        model,
        n: completion_len(chunks, req.max_tokens),
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [TextChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// The non-streamed `chat.completion` body.
pub(crate) fn chat_json(s: &Shared, plan: &Plan) -> Vec<u8> {
    let id = new_id("chatcmpl-");
    let text = words(&s.words, plan.n);
    let body = ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: now(),
        model: &plan.model,
        choices: [ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: &text,
                refusal: None,
                annotations: [],
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: plan.usage(),
        service_tier: "default",
        system_fingerprint: FINGERPRINT,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The non-streamed `text_completion` body.
pub(crate) fn completion_json(s: &Shared, plan: &Plan) -> Vec<u8> {
    let id = new_id("cmpl-");
    let text = words(&s.words, plan.n);
    let body = TextCompletion {
        id: &id,
        object: "text_completion",
        created: now(),
        model: &plan.model,
        system_fingerprint: FINGERPRINT,
        choices: [TextChoice {
            text: &text,
            index: 0,
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: plan.usage(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Renders `data: {…"choices":[CHOICE]…}\n\n` events from a common prefix.
struct ChunkTemplate {
    prefix: Vec<u8>,
    suffix: &'static [u8],
}

impl ChunkTemplate {
    fn new(id: &str, object: &str, model: &str, chat: bool, usage_null: bool) -> Self {
        let model = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned());
        let extra = if chat {
            ",\"service_tier\":\"default\""
        } else {
            ""
        };
        let prefix = format!(
            "data: {{\"id\":\"{id}\",\"object\":\"{object}\",\"created\":{},\"model\":{model}{extra},\"system_fingerprint\":\"{FINGERPRINT}\",\"choices\":[",
            now()
        );
        Self {
            prefix: prefix.into_bytes(),
            suffix: if usage_null {
                b"],\"usage\":null}\n\n"
            } else {
                b"]}\n\n"
            },
        }
    }

    fn event(&self, choice: &str) -> Bytes {
        let mut v = Vec::with_capacity(self.prefix.len() + choice.len() + self.suffix.len());
        v.extend_from_slice(&self.prefix);
        v.extend_from_slice(choice.as_bytes());
        v.extend_from_slice(self.suffix);
        Bytes::from(v)
    }

    fn usage_event(&self, usage: &Usage) -> Bytes {
        let usage = serde_json::to_vec(usage).unwrap_or_default();
        let mut v = Vec::with_capacity(self.prefix.len() + usage.len() + 16);
        v.extend_from_slice(&self.prefix);
        v.extend_from_slice(b"],\"usage\":");
        v.extend_from_slice(&usage);
        v.extend_from_slice(b"}\n\n");
        Bytes::from(v)
    }
}

/// Events of a streamed completion (chat when `chat`, else legacy).
fn stream_events(plan: &Plan, chat: bool) -> (Vec<Bytes>, Tail) {
    let with_usage = plan.include_usage && !plan.fault.no_usage();
    let (id, object) = if chat {
        (new_id("chatcmpl-"), "chat.completion.chunk")
    } else {
        (new_id("cmpl-"), "text_completion")
    };
    let t = ChunkTemplate::new(&id, object, &plan.model, chat, with_usage);
    let (tail, max_content) = Tail::of(plan.fault);
    let n = max_content.map_or(plan.n, |m| plan.n.min(m));
    let mut events = Vec::with_capacity(n + 4);
    let content = |delta: &str| {
        if chat {
            format!(
                "{{\"index\":0,\"delta\":{{\"content\":\"{delta}\"}},\"logprobs\":null,\"finish_reason\":null}}"
            )
        } else {
            format!("{{\"text\":\"{delta}\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}")
        }
    };
    if chat {
        events.push(t.event(
            "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}",
        ));
    }
    if n > 0 {
        events.push(t.event(&content(word_delta(0))));
    }
    if n > 1 {
        let rest = t.event(&content(word_delta(1)));
        events.extend(std::iter::repeat_n(rest, n - 1));
    }
    if tail == Tail::Done {
        events.push(t.event(if chat {
            "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}"
        } else {
            "{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}"
        }));
        if with_usage {
            events.push(t.usage_event(&Usage::new(plan.prompt_tokens, plan.n as u64)));
        }
        events.push(DONE);
    }
    (events, tail)
}

async fn respond(s: &Shared, plan: Plan, headers: &HeaderMap, chat: bool) -> ApiResult {
    plan.fault.before_headers(&plan.model, headers).await?;
    if plan.stream {
        let (events, tail) = stream_events(&plan, chat);
        return Ok(sse::stream_response(events, s.opts.chunk_delay, tail, SSE));
    }
    let body = if chat {
        chat_json(s, &plan)
    } else {
        completion_json(s, &plan)
    };
    Ok(non_streamed(body, plan.fault))
}

/// A JSON body, broken for the mid-stream faults.
pub(crate) fn non_streamed(body: Vec<u8>, fault: Fault) -> Response {
    match Tail::of(fault).0 {
        Tail::Done => json_bytes(StatusCode::OK, body),
        tail => sse::broken_json(body, tail),
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let plan = plan_chat(&body, s.opts.chunks)?;
    respond(&s, plan, &headers, true).await
}

/// `POST /v1/completions`.
pub(crate) async fn completions(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let plan = plan_completion(&body, s.opts.chunks)?;
    respond(&s, plan, &headers, false).await
}

/// Non-streamed chat body for a batch line (errors for `mock-error-NNN`).
pub(crate) fn chat_for_batch(s: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let plan = plan_chat(body, s.opts.chunks)?;
    if let Fault::Error(st) = plan.fault {
        return Err(error_for(st, &plan.model, &HeaderMap::new()));
    }
    Ok(chat_json(s, &plan))
}

/// Non-streamed legacy completion body for a batch line.
pub(crate) fn completion_for_batch(s: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let plan = plan_completion(body, s.opts.chunks)?;
    if let Fault::Error(st) = plan.fault {
        return Err(error_for(st, &plan.model, &HeaderMap::new()));
    }
    Ok(completion_json(s, &plan))
}
