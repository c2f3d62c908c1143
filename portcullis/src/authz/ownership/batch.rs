//! Batch inputs: a batch runs the requests in its input file at the provider,
//! so an ID inside one of those request bodies reaches a resource exactly like
//! an ID in a request sent through the gateway. When a batch is created, its
//! input file is read from the provider line by line and every request body is
//! checked like a body sent directly (the same fields, the same 404).

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

use super::Permit;
use super::body;
use super::families::Family;
use crate::AppState;
use crate::error::ApiError;

/// Longest input line read; a longer one cannot be checked and the batch is refused.
const MAX_LINE: usize = 32 * 1024 * 1024;
/// Largest input file read (OpenAI's own limit is 200 MB).
const MAX_INPUT: usize = 256 * 1024 * 1024;

fn refuse(message: String) -> ApiError {
    ApiError::BadRequest {
        message,
        param: Some("input_file_id"),
    }
}

/// The resource IDs named by the request bodies of a batch input file.
/// A file the provider does not have yields nothing (the provider refuses the batch).
pub async fn input_ids(
    state: &AppState,
    permit: &Permit,
    file_id: &str,
) -> Result<Vec<(Family, String)>, ApiError> {
    let path = format!("/files/{}/content", super::list::encode_segment(file_id));
    let resp = super::list::get_upstream(state, permit, None, None, &path).await?;
    match resp.status() {
        StatusCode::NOT_FOUND => return Ok(Vec::new()),
        StatusCode::UNAUTHORIZED => return Err(ApiError::UpstreamAuth),
        s if !s.is_success() => {
            return Err(ApiError::UpstreamUnavailable(format!(
                "reading a batch input file: status {s}"
            )));
        }
        _ => {}
    }
    let idle = permit.provider().timeouts.idle;
    let mut body = resp.into_body();
    let mut ids = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ApiError::UpstreamTimeout("idle")),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::UpstreamUnavailable(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > MAX_INPUT {
            return Err(refuse(
                "The batch input file is too large for the gateway to check.".into(),
            ));
        }
        let mut rest: &[u8] = &data;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            partial.extend_from_slice(&rest[..nl]);
            line_ids(&std::mem::take(&mut partial), &mut ids)?;
            rest = &rest[nl + 1..];
        }
        partial.extend_from_slice(rest);
        if partial.len() > MAX_LINE {
            return Err(refuse(
                "A line of the batch input file is too long for the gateway to check.".into(),
            ));
        }
    }
    line_ids(&partial, &mut ids)?;
    Ok(ids)
}

/// The IDs in one input line `{"custom_id", "method", "url", "body"}`.
fn line_ids(line: &[u8], ids: &mut Vec<(Family, String)>) -> Result<(), ApiError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    // A line the provider cannot parse fails at the provider; a line it can
    // parse must be parsed the same way here, duplicates refused.
    let v = match body::parse_strict(line) {
        Ok(v) => v,
        Err(e @ ApiError::BadRequest { .. }) => return Err(e),
        Err(_) => return Ok(()),
    };
    let Some(req) = v.get("body").and_then(Value::as_object) else {
        return Ok(());
    };
    let group = v
        .get("url")
        .and_then(Value::as_str)
        .and_then(|u| u.strip_prefix("/v1/"))
        .and_then(|u| u.split('/').next())
        .unwrap_or("");
    body::ids_in(req, group, ids)
}

/// `input_file_id` of a batch creation body.
pub fn input_file(body: &Bytes) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("input_file_id")?
        .as_str()
        .map(str::to_owned)
}
