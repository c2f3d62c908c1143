//! Images and audio: `POST /v1/images/generations`, `POST /v1/audio/speech`
//! and `POST /v1/audio/transcriptions`, answered with OpenAI's shapes and real
//! token counts (`usage.input_tokens` / `output_tokens`, as `gpt-image-1` and
//! the `gpt-4o-*-transcribe` models report them). Speech has no usage: its
//! answer is audio bytes.

use axum::body::Body;
use axum::extract::Multipart;
use axum::extract::multipart::MultipartRejection;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ApiResult};
use crate::fault::Fault;
use crate::tokens::text_tokens;
use crate::util::{now, ok_json, parse_json};

/// Output tokens an image costs (one 1024×1024 image at medium quality).
const IMAGE_TOKENS: u64 = 1056;

#[derive(Deserialize)]
struct ImageRequest {
    model: Option<String>,
    prompt: Option<String>,
    n: Option<u64>,
}

/// `POST /v1/images/generations`.
pub(crate) async fn images(headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: ImageRequest = parse_json(&body, false)?;
    let model = req.model.unwrap_or_else(|| "gpt-image-1".into());
    Fault::of(&model).before_headers(&model, &headers).await?;
    let prompt = req.prompt.ok_or_else(|| ApiError::missing("prompt"))?;
    let n = req.n.unwrap_or(1).clamp(1, 10);
    let input = text_tokens(prompt.chars().count());
    let data: Vec<_> = (0..n)
        .map(|_| json!({"b64_json": "iVBORw0KGgo="}))
        .collect();
    Ok(ok_json(&json!({
        "created": now(),
        "data": data,
        "usage": {
            "input_tokens": input,
            "output_tokens": IMAGE_TOKENS * n,
            "total_tokens": input + IMAGE_TOKENS * n,
            "input_tokens_details": {"text_tokens": input, "image_tokens": 0},
        },
    })))
}

#[derive(Deserialize)]
struct SpeechRequest {
    model: Option<String>,
    input: Option<String>,
}

/// `POST /v1/audio/speech`: a few bytes of "audio".
pub(crate) async fn speech(headers: HeaderMap, body: Bytes) -> ApiResult {
    let req: SpeechRequest = parse_json(&body, false)?;
    let model = req.model.ok_or_else(|| ApiError::missing("model"))?;
    Fault::of(&model).before_headers(&model, &headers).await?;
    let input = req.input.ok_or_else(|| ApiError::missing("input"))?;
    let mut resp = Response::new(Body::from(format!("ID3mock-audio:{}", input.len())));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    Ok(resp)
}

/// `POST /v1/audio/transcriptions` (multipart `file`, `model`).
pub(crate) async fn transcriptions(
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let mut form = form.map_err(|_| ApiError::bad_request("Expected a multipart form."))?;
    let (mut model, mut bytes) = (None, 0usize);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|_| ApiError::bad_request("Malformed multipart form."))?
    {
        match field.name() {
            Some("model") => model = field.text().await.ok(),
            Some("file") => bytes = field.bytes().await.map(|b| b.len()).unwrap_or(0),
            _ => {}
        }
    }
    let model = model.ok_or_else(|| ApiError::missing("model"))?;
    Fault::of(&model).before_headers(&model, &headers).await?;
    if bytes == 0 {
        return Err(ApiError::missing("file"));
    }
    let text = "mock transcription";
    let input = u64::try_from(bytes).unwrap_or(u64::MAX).div_ceil(16).max(1);
    let output = text_tokens(text.len());
    Ok(ok_json(&json!({
        "text": text,
        "usage": {"type": "tokens", "input_tokens": input, "output_tokens": output, "total_tokens": input + output},
    })))
}
