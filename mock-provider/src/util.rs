//! Small helpers: ids, clocks, JSON bodies.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `prefix` followed by 24 random alphanumerics.
pub(crate) fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(24)
            .map(char::from),
    );
    id
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serialises bytes as a lossy UTF-8 string.
pub(crate) fn serialize_lossy<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// A `200 application/json` response from already rendered bytes.
pub(crate) fn json_bytes(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serialises `value` into a JSON response.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(v) => json_bytes(status, v),
        Err(e) => ApiError::server(format!("cannot serialise response: {e}")).into_response(),
    }
}

/// `200` JSON response.
pub(crate) fn ok_json<T: Serialize + ?Sized>(value: &T) -> Response {
    json_response(StatusCode::OK, value)
}

/// Parses a JSON request body, mapping failures to OpenAI-style errors. An
/// empty body parses as `{}` when `empty_is_object`.
pub(crate) fn parse_json<T: DeserializeOwned>(
    body: &[u8],
    empty_is_object: bool,
) -> Result<T, ApiError> {
    let body: &[u8] = if empty_is_object && body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(ApiError::from_json)
}

/// Like [`parse_json`] but borrowing from `body`.
pub(crate) fn parse_json_borrowed<'a, T: serde::Deserialize<'a>>(
    body: &'a [u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::from_json)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `"mock mock … mock"` with `n` words, sliced from a pre-rendered string.
pub(crate) fn words(pre: &str, n: usize) -> std::borrow::Cow<'_, str> {
    if n == 0 {
        return std::borrow::Cow::Borrowed("");
    }
    let len = n * 5 - 1;
    match pre.get(..len) {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            let mut s = String::with_capacity(len);
            s.push_str("mock");
            for _ in 1..n {
                s.push_str(" mock");
            }
            std::borrow::Cow::Owned(s)
        }
    }
}

/// The delta of content chunk `i` (0-based).
pub(crate) fn word_delta(i: usize) -> &'static str {
    if i == 0 { "mock" } else { " mock" }
}

/// `N = min(chunks, limit)`.
pub(crate) fn completion_len(chunks: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(l) => chunks.min(usize::try_from(l).unwrap_or(usize::MAX)),
        None => chunks,
    }
}
