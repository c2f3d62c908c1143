//! OpenAI-shaped errors: `{"error":{"message","type","param","code"}}`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;

/// An error answered in OpenAI's shape.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub typ: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    typ: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

const BAD_JSON: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

impl ApiError {
    pub fn new(status: StatusCode, typ: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            typ,
            param: None,
            code: None,
        }
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 for a missing required field.
    pub fn missing(param: &str) -> Self {
        Self::bad_request(format!("Missing required parameter: '{param}'."))
            .param(param)
            .code("missing_required_parameter")
    }

    /// 404 `invalid_request_error` with `code: null`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    /// 404 for an unknown file, exactly like OpenAI.
    pub fn no_file(id: &str) -> Self {
        Self::not_found(format!("No such File object: {id}")).param("id")
    }

    /// 500 `server_error`.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Maps a body parse failure.
    pub fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Self::bad_request(format!("Invalid request body: {e}")),
            Category::Io | Category::Syntax | Category::Eof => Self::bad_request(BAD_JSON),
        }
    }

    /// The rendered JSON body.
    pub fn body(&self) -> Vec<u8> {
        let env = Envelope {
            error: Inner {
                message: &self.message,
                typ: self.typ,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        serde_json::to_vec(&env).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
    }

    /// The `error` object as a JSON value (for batch output lines).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "message": self.message,
            "type": self.typ,
            "param": self.param,
            "code": self.code,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::util::json_bytes(self.status, self.body())
    }
}

/// Handlers return `Result<Response, ApiError>`.
pub(crate) type ApiResult = Result<Response, ApiError>;
