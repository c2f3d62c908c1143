//! The one public error type. Every refusal the gateway makes is an [`ApiError`];
//! each variant knows its HTTP status, OpenAI error `type` and `code`, whose
//! fault it was, and the message the client sees. The precise cause (which the
//! client never sees) is kept in [`ApiError::detail`] for the log.
//!
//! Turning an error into a response has no side effects.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Whose fault an error was (pingora's classification). Drives the status
/// family, log level and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller sent something we refuse.
    Client,
    /// The provider failed or was unreachable.
    Upstream,
    /// Our own failure (store down, bug).
    Gateway,
}

/// Every refusal the gateway can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no credential, a malformed, unknown, revoked or expired one.
    #[error("invalid api key: {0}")]
    InvalidApiKey(&'static str),
    /// 401: more than one distinct credential in the request.
    #[error("more than one credential in the request")]
    MultipleCredentials,
    /// 401: a credential in the query string.
    #[error("credential in the query string")]
    CredentialInQuery,
    /// 401: the admin API needs the master key.
    #[error("admin credential required: {0}")]
    AdminUnauthorized(&'static str),
    /// 403: an admin credential whose role does not cover this route.
    #[error("admin role insufficient: {0}")]
    AdminRoleInsufficient(&'static str),
    /// 403: the admin API is not reachable from the client's address (`admin.allow_ips`).
    #[error("admin api not allowed from this address")]
    AdminAddressNotAllowed,
    /// 429: this address failed authentication too often.
    #[error("locked out for {0:?}")]
    LockedOut(std::time::Duration),
    /// 429: a request-rate, token or concurrency limit is reached.
    #[error("rate limited by {}", .0.limit)]
    RateLimited(Box<crate::limits::Refusal>),
    /// 429: the request alone is larger than a token limit.
    #[error("request larger than {}", .0.limit)]
    RequestTooLarge(Box<crate::limits::Refusal>),
    /// 429: a budget is spent.
    #[error("budget exhausted: {}", .0.limit)]
    QuotaExceeded(Box<crate::limits::Refusal>),
    /// 403: the user is disabled.
    #[error("user disabled")]
    UserDisabled,
    /// 503: the identity provider's key set cannot be fetched and none is cached.
    #[error("identity provider unavailable: {0}")]
    IdentityProviderUnavailable(String),
    /// 403: the endpoint group is not on the provider's or the key's allowlist.
    #[error("endpoint group `{0}` not allowed")]
    EndpointNotAllowed(String),
    /// 403: the key may not use this model.
    #[error("model `{0}` not allowed for this key")]
    ModelNotAllowed(String),
    /// 404: no such route or resource.
    #[error("not found")]
    NotFound,
    /// 404: no provider lists this model.
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    /// 400: a path that normalisation refuses (encoded slashes, dot segments, ...).
    #[error("invalid path: {0}")]
    InvalidPath(&'static str),
    /// 413: the request body is larger than `limits.max_body_bytes`.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// 400: a JSON body was required and this is not JSON.
    #[error("invalid json: {0}")]
    InvalidJson(String),
    /// 400: anything else wrong with the request.
    #[error("bad request: {message}")]
    BadRequest {
        /// Shown to the client.
        message: String,
        /// The offending parameter, if any.
        param: Option<&'static str>,
    },
    /// 502: the provider could not be reached or broke the connection.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// 502: the provider refused the gateway's own credential.
    #[error("upstream rejected the gateway credential")]
    UpstreamAuth,
    /// 504: the provider did not answer in time.
    #[error("upstream timeout: {0}")]
    UpstreamTimeout(&'static str),
    /// 503: the store is unreachable.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// 500: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidApiKey(_) | MultipleCredentials | CredentialInQuery | AdminUnauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            EndpointNotAllowed(_)
            | ModelNotAllowed(_)
            | UserDisabled
            | AdminRoleInsufficient(_)
            | AdminAddressNotAllowed => StatusCode::FORBIDDEN,
            LockedOut(_) | RateLimited(_) | RequestTooLarge(_) | QuotaExceeded(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            IdentityProviderUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NotFound | ModelNotFound(_) => StatusCode::NOT_FOUND,
            InvalidPath(_) | InvalidJson(_) | BadRequest { .. } => StatusCode::BAD_REQUEST,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamUnavailable(_) | UpstreamAuth => StatusCode::BAD_GATEWAY,
            UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `code` field.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidApiKey(_) | MultipleCredentials | CredentialInQuery | AdminUnauthorized(_) => {
                "invalid_api_key"
            }
            EndpointNotAllowed(_) => "endpoint_not_allowed",
            AdminRoleInsufficient(_) => "admin_role_insufficient",
            AdminAddressNotAllowed => "admin_address_not_allowed",
            LockedOut(_) => "too_many_failed_attempts",
            RateLimited(_) | RequestTooLarge(_) => "rate_limit_exceeded",
            QuotaExceeded(_) => "insufficient_quota",
            UserDisabled => "user_disabled",
            IdentityProviderUnavailable(_) => "identity_provider_unavailable",
            ModelNotAllowed(_) => "model_not_allowed",
            NotFound => "not_found",
            ModelNotFound(_) => "model_not_found",
            InvalidPath(_) => "invalid_path",
            BodyTooLarge(_) => "request_too_large",
            InvalidJson(_) => "invalid_json",
            BadRequest { .. } => "invalid_request",
            UpstreamUnavailable(_) => "upstream_unavailable",
            UpstreamAuth => "upstream_auth_failed",
            UpstreamTimeout(_) => "upstream_timeout",
            StoreUnavailable(_) => "store_unavailable",
            Internal(_) => "internal_error",
        }
    }

    /// OpenAI's `type` field.
    pub fn error_type(&self) -> &'static str {
        if let ApiError::QuotaExceeded(_) = self {
            return "insufficient_quota";
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        use ApiError::*;
        match self {
            UpstreamUnavailable(_) | UpstreamAuth | UpstreamTimeout(_) => Fault::Upstream,
            StoreUnavailable(_) | Internal(_) => Fault::Gateway,
            IdentityProviderUnavailable(_) => Fault::Upstream,
            _ => Fault::Client,
        }
    }

    /// The message the client sees: precise about what to fix, silent about
    /// internals (which key id was unknown, what the store said).
    pub fn public_message(&self) -> String {
        use ApiError::*;
        match self {
            InvalidApiKey(_) => {
                "Invalid or missing API key. Send a valid gateway key as `Authorization: Bearer <key>`."
                    .into()
            }
            MultipleCredentials => {
                "More than one credential was sent; send exactly one (Authorization, x-api-key, api-key or x-goog-api-key).".into()
            }
            CredentialInQuery => {
                "Credentials are not accepted in the query string; send them in a header.".into()
            }
            AdminUnauthorized(_) => {
                "The admin API needs an admin credential: the master key, a gateway key created with an `admin_role`, or an identity token whose roles map to an admin role.".into()
            }
            AdminRoleInsufficient(_) => "Your admin role does not allow this.".into(),
            AdminAddressNotAllowed => "The admin API is not reachable from your address.".into(),
            LockedOut(d) => format!(
                "Too many failed authentication attempts from your address; try again in {} seconds.",
                d.as_secs().max(1)
            ),
            RateLimited(r) => format!(
                "Rate limit reached for {}: {} ({}). Try again in {} seconds.",
                r.subject,
                r.what,
                r.limit,
                retry_secs(r.retry_after)
            ),
            RequestTooLarge(r) => format!(
                "Request too large for {}: it needs more than {} ({}) on its own; send a smaller prompt or a lower max_tokens.",
                r.subject, r.what, r.limit
            ),
            QuotaExceeded(r) => format!(
                "Budget exhausted for {}: {} ({}) is spent. It resets in {} seconds.",
                r.subject,
                r.what,
                r.limit,
                retry_secs(r.retry_after)
            ),
            UserDisabled => "This user has been disabled by the gateway's administrator.".into(),
            IdentityProviderUnavailable(_) => {
                "The identity provider's signing keys cannot be fetched right now; try again shortly.".into()
            }
            EndpointNotAllowed(g) => format!("The endpoint `{g}` is not allowed through this gateway for this key."),
            ModelNotAllowed(m) => format!("This key may not use the model `{m}`."),
            NotFound => "Not found.".into(),
            ModelNotFound(m) => format!("The model `{m}` does not exist or you do not have access to it."),
            InvalidPath(why) => format!("Invalid request path: {why}."),
            BodyTooLarge(n) => format!("Request body is larger than the gateway's limit of {n} bytes."),
            InvalidJson(why) => format!("The request body is not valid JSON: {why}"),
            BadRequest { message, .. } => message.clone(),
            UpstreamUnavailable(_) => "The upstream provider could not be reached.".into(),
            UpstreamAuth => "The upstream provider rejected the gateway's credentials; the operator has been told.".into(),
            UpstreamTimeout(phase) => format!("The upstream provider did not answer in time ({phase})."),
            StoreUnavailable(_) => "The gateway's store is unavailable; try again shortly.".into(),
            Internal(_) => "Internal gateway error.".into(),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { param, .. } => *param,
            ApiError::ModelNotFound(_) | ApiError::ModelNotAllowed(_) => Some("model"),
            _ => None,
        }
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.public_message(),
                "type": self.error_type(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let wait = match &self {
            ApiError::LockedOut(d) => Some(*d),
            ApiError::RateLimited(r)
            | ApiError::RequestTooLarge(r)
            | ApiError::QuotaExceeded(r) => Some(r.retry_after),
            _ => None,
        };
        if let Some(d) = wait
            && let Ok(v) = HeaderValue::from_str(&retry_secs(d).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let ApiError::RateLimited(r) = &self
            && let Some((kind, limit)) = r.rate
        {
            let ms = i64::try_from(r.retry_after.as_millis()).unwrap_or(i64::MAX);
            crate::limits::insert_rate_headers(resp.headers_mut(), kind, limit, 0, ms);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// Whole seconds to wait, rounded up, at least 1 (`Retry-After`).
pub fn retry_secs(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// An OpenAI-shaped error body for an arbitrary status, used where no variant fits
/// (e.g. a sanitised upstream error).
pub fn error_body(message: &str, error_type: &str, code: Option<&str>) -> serde_json::Value {
    json!({"error": {"message": message, "type": error_type, "param": null, "code": code}})
}
