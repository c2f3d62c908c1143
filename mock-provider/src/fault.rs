//! Fault injection through the `model` name.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// How long "forever" is.
pub(crate) const FOREVER: Duration = Duration::from_secs(3600);

/// What a model name asks the mock to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Hang,
    HangMidStream,
    DieMidStream,
    Error(StatusCode),
    NoUsage,
}

impl Fault {
    /// Classifies a model name (a `provider/` prefix is ignored).
    pub fn of(model: &str) -> Fault {
        let name = model.rsplit('/').next().unwrap_or(model);
        if !name.starts_with("mock-") {
            return Fault::None;
        }
        match name {
            "mock-hang" => Fault::Hang,
            "mock-hang-mid-stream" => Fault::HangMidStream,
            "mock-die-mid-stream" => Fault::DieMidStream,
            "mock-no-usage" => Fault::NoUsage,
            _ => name
                .strip_prefix("mock-error-")
                .and_then(|n| n.parse::<u16>().ok())
                .and_then(|n| StatusCode::from_u16(n).ok())
                .map_or(Fault::None, Fault::Error),
        }
    }

    /// Whether usage must be left out entirely.
    pub fn no_usage(self) -> bool {
        self == Fault::NoUsage
    }

    /// Applies the faults that happen before the response headers: hangs
    /// forever for `mock-hang`, returns the error for `mock-error-NNN`.
    pub async fn before_headers(self, model: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        match self {
            Fault::Hang => {
                tokio::time::sleep(FOREVER).await;
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "server_error",
                    "mock-hang gave up after an hour",
                ))
            }
            Fault::Error(status) => Err(error_for(status, model, headers)),
            _ => Ok(()),
        }
    }
}

/// The error answered for `mock-error-NNN`.
pub(crate) fn error_for(status: StatusCode, model: &str, headers: &HeaderMap) -> ApiError {
    let n = status.as_u16();
    match n {
        401 => {
            let message = match crate::util::bearer(headers) {
                Some(key) => format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    mask_key(key)
                ),
                None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username. You can obtain an API key from https://platform.openai.com/account/api-keys.".to_owned(),
            };
            let e = ApiError::new(status, "invalid_request_error", message);
            if crate::util::bearer(headers).is_some() {
                e.code("invalid_api_key")
            } else {
                e
            }
        }
        403 => ApiError::new(
            status,
            "invalid_request_error",
            "You are not allowed to sample from this model",
        )
        .code("permission_denied"),
        404 => ApiError::new(
            status,
            "invalid_request_error",
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .code("model_not_found"),
        429 => ApiError::new(
            status,
            "requests",
            format!(
                "Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."
            ),
        )
        .code("rate_limit_exceeded"),
        500 => ApiError::new(
            status,
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
        ),
        502 => ApiError::new(status, "server_error", "Bad gateway."),
        503 => ApiError::new(
            status,
            "server_error",
            "The engine is currently overloaded, please try again later.",
        ),
        504 => ApiError::new(status, "server_error", "Gateway timeout."),
        _ if status.is_server_error() => ApiError::new(status, "server_error", format!("Mock server error {n}.")),
        _ => ApiError::new(
            status,
            "invalid_request_error",
            format!("Mock error {n} requested by model {model}."),
        ),
    }
}

/// OpenAI's key echo: first 5 chars, `len - 12` stars, last 4 chars.
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let len = chars.len();
    if len < 9 {
        return key.to_owned();
    }
    let mut out = String::with_capacity(len);
    out.extend(&chars[..5]);
    out.extend(std::iter::repeat_n('*', len.saturating_sub(12)));
    out.extend(&chars[len - 4..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_models() {
        assert_eq!(Fault::of("gpt-4o"), Fault::None);
        assert_eq!(Fault::of("mock-hang"), Fault::Hang);
        assert_eq!(Fault::of("openai/mock-hang"), Fault::Hang);
        assert_eq!(Fault::of("mock-hang-mid-stream"), Fault::HangMidStream);
        assert_eq!(Fault::of("mock-die-mid-stream"), Fault::DieMidStream);
        assert_eq!(Fault::of("mock-no-usage"), Fault::NoUsage);
        assert_eq!(
            Fault::of("mock-error-429"),
            Fault::Error(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(Fault::of("mock-error-abc"), Fault::None);
    }

    #[test]
    fn masks_keys_like_openai() {
        assert_eq!(mask_key("sk-test-0123456-wxyz"), "sk-te********wxyz");
        let k = format!("sk-{}", "a".repeat(44) + "CMuq");
        assert_eq!(k.len(), 51);
        assert_eq!(mask_key(&k), format!("sk-aa{}CMuq", "*".repeat(39)));
        assert_eq!(mask_key("sk-short"), "sk-short");
    }
}
