//! `POST /v1/embeddings` (deterministic hash-based vectors) and
//! `POST /v1/moderations` (never flagged).

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::borrow::Cow;

use crate::chat::non_streamed;
use crate::error::{ApiError, ApiResult};
use crate::fault::{Fault, error_for};
use crate::tokens::text_tokens;
use crate::util::{new_id, parse_json, parse_json_borrowed};

/// Default `dimensions`.
const DEFAULT_DIMENSIONS: usize = 8;
/// Largest accepted `dimensions`.
const MAX_DIMENSIONS: usize = 8192;

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<EmbeddingUsage>,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A unit vector of `dims` floats derived from `hash`.
pub(crate) fn vector(hash: u64, dims: usize) -> Vec<f32> {
    let mut state = hash ^ (dims as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            let x = splitmix64(&mut state) >> 40; // 24 bits
            (x as f32 / (1u32 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Parses the request and renders the body (`Err` for validation errors).
fn plan(body: &[u8]) -> Result<(String, Fault, Vec<u8>), ApiError> {
    let req: EmbeddingsRequest<'_> = parse_json_borrowed(body)?;
    let model = match req.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(ApiError::bad_request("you must provide a model parameter")),
    };
    let fault = Fault::of(&model);
    let input = req.input.ok_or_else(|| ApiError::missing("input"))?;
    let dims = match req.dimensions {
        None => DEFAULT_DIMENSIONS,
        Some(d) if d >= 1 && d <= MAX_DIMENSIONS as u64 => d as usize,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "Invalid 'dimensions': {d}. Expected a value between 1 and {MAX_DIMENSIONS}."
            ))
            .param("dimensions"));
        }
    };
    let b64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid value: '{other}'. Supported values are: 'float' and 'base64'."
            ))
            .param("encoding_format"));
        }
    };
    // (hash, tokens) per input.
    let items: Vec<(u64, u64)> = match &input {
        Input::One(s) => vec![(
            fnv1a(FNV_OFFSET, s.as_bytes()),
            text_tokens(s.chars().count()),
        )],
        Input::Many(v) => v
            .iter()
            .map(|s| {
                (
                    fnv1a(FNV_OFFSET, s.as_bytes()),
                    text_tokens(s.chars().count()),
                )
            })
            .collect(),
        Input::Tokens(t) => vec![(hash_tokens(t), t.len() as u64)],
        Input::TokenLists(v) => v.iter().map(|t| (hash_tokens(t), t.len() as u64)).collect(),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        )
        .param("input"));
    }
    let prompt_tokens = items.iter().map(|(_, t)| t).sum();
    let data = items
        .iter()
        .enumerate()
        .map(|(index, (hash, _))| {
            let v = vector(*hash, dims);
            let embedding = if b64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Vector::Base64(base64(&bytes))
            } else {
                Vector::Float(v)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let body = EmbeddingList {
        object: "list",
        data,
        model: &model,
        usage: (!fault.no_usage()).then_some(EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        }),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    Ok((model, fault, body))
}

fn hash_tokens(tokens: &[i64]) -> u64 {
    tokens
        .iter()
        .fold(FNV_OFFSET, |h, t| fnv1a(h, &t.to_le_bytes()))
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(headers: HeaderMap, body: Bytes) -> ApiResult {
    let (model, fault, body) = plan(&body)?;
    fault.before_headers(&model, &headers).await?;
    Ok(non_streamed(body, fault))
}

/// Embeddings body for a batch line.
pub(crate) fn embeddings_for_batch(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let (model, fault, body) = plan(body)?;
    if let Fault::Error(st) = fault {
        return Err(error_for(st, &model, &HeaderMap::new()));
    }
    Ok(body)
}

const MODERATION_CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

fn moderation_result() -> Value {
    let mut categories = Map::new();
    let mut scores = Map::new();
    let mut applied = Map::new();
    for c in MODERATION_CATEGORIES {
        categories.insert((*c).to_owned(), Value::Bool(false));
        scores.insert((*c).to_owned(), json!(1e-6));
        applied.insert((*c).to_owned(), json!(["text"]));
    }
    json!({
        "flagged": false,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

fn moderations_plan(body: &[u8]) -> Result<(String, Fault, Vec<u8>), ApiError> {
    let req: Map<String, Value> = parse_json(body, false)?;
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => "omni-moderation-latest".to_owned(),
    };
    let results = match req.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.len(),
        Some(Value::Array(a)) if !a.is_empty() => 1, // multi-modal parts
        _ => return Err(ApiError::missing("input")),
    };
    let result = moderation_result();
    let body = json!({
        "id": new_id("modr-"),
        "model": model,
        "results": vec![result; results],
    });
    Ok((
        model.clone(),
        Fault::of(&model),
        serde_json::to_vec(&body).unwrap_or_default(),
    ))
}

/// `POST /v1/moderations`.
pub(crate) async fn moderations(headers: HeaderMap, body: Bytes) -> ApiResult {
    let (model, fault, body) = moderations_plan(&body)?;
    fault.before_headers(&model, &headers).await?;
    Ok(non_streamed(body, fault))
}

/// Moderations body for a batch line.
pub(crate) fn moderations_for_batch(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let (model, fault, body) = moderations_plan(body)?;
    if let Fault::Error(st) = fault {
        return Err(error_for(st, &model, &HeaderMap::new()));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn vectors_are_unit_and_deterministic() {
        let a = vector(fnv1a(FNV_OFFSET, b"hello"), 8);
        let b = vector(fnv1a(FNV_OFFSET, b"hello"), 8);
        let c = vector(fnv1a(FNV_OFFSET, b"world"), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}
