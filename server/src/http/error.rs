//! One error type for the HTTP API, rendered in OpenAI's shape:
//! `{"error": {"message", "type", "code", "param"}}`. Internal details are logged, never
//! sent: a client learns what it did wrong, not how the server is built.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use agent::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or asks for something this server does not do.
    #[error("{message}")]
    BadRequest { message: String, code: &'static str, param: Option<&'static str> },
    #[error("{0}")]
    NotFound(String, &'static str),
    /// No token, a malformed header, or a token that matches no user.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A sign-in with a wrong name, password or token.
    #[error("the name, password or token is wrong")]
    InvalidCredentials,
    /// A write signed in by the browser cookie without the session's CSRF token (or from
    /// another origin): what a cross-site request looks like.
    #[error("this request needs the `X-CSRF-Token` header of the signed-in page")]
    CsrfRefused,
    /// The request clashes with the current state (a turn already running, none to cancel).
    #[error("{0}")]
    Conflict(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than this server accepts")]
    PayloadTooLarge,
    #[error("the inference backend is unavailable")]
    Unavailable(String),
    /// A per-user limit is reached; the client may try again after the given seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_secs: u64 },
    #[error("internal server error")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::services::quota::OverLimit> for ApiError {
    fn from(over: crate::services::quota::OverLimit) -> Self {
        ApiError::TooManyRequests { message: over.message, retry_after_secs: over.retry_after_secs }
    }
}

impl From<crate::services::accounts::SignInError> for ApiError {
    fn from(error: crate::services::accounts::SignInError) -> Self {
        use crate::services::accounts::SignInError;
        match error {
            SignInError::InvalidCredentials => ApiError::InvalidCredentials,
            error @ SignInError::TooManyAttempts { retry_after_secs } => {
                ApiError::TooManyRequests { message: error.to_string(), retry_after_secs }
            }
            SignInError::Internal(error) => ApiError::Internal(error),
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, code: &'static str, param: Option<&'static str>) -> Self {
        ApiError::BadRequest { message: message.into(), code, param }
    }

    /// Logs what the client is not told: an internal error's cause, a backend's detail.
    pub fn log(&self) {
        match self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "request failed"),
            ApiError::Unavailable(detail) => tracing::error!(%detail, "backend unavailable"),
            _ => {}
        }
    }

    fn status_and_kind(&self) -> (StatusCode, &'static str, &'static str, Option<&'static str>) {
        match self {
            ApiError::BadRequest { code, param, .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", code, *param),
            ApiError::NotFound(_, code) => (StatusCode::NOT_FOUND, "invalid_request_error", code, None),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_api_key", None),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_credentials", None),
            ApiError::CsrfRefused => (StatusCode::FORBIDDEN, "invalid_request_error", "csrf_failed", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "invalid_request_error", "permission_denied", None),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "request_too_large", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_error", "backend_unavailable", None),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limit_exceeded", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", None),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::InvalidRequest(message) => ApiError::bad_request(message, "invalid_request", None),
            error @ EngineError::ContextLength { .. } => {
                ApiError::bad_request(error.to_string(), "context_length_exceeded", Some("messages"))
            }
            EngineError::Unavailable(detail) => ApiError::Unavailable(detail),
            EngineError::Backend(detail) => ApiError::Internal(anyhow::anyhow!(detail)),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::bad_request(rejection.body_text(), "invalid_body", None),
        }
    }
}

/// The JSON body of an OpenAI-shaped error.
pub fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> serde_json::Value {
    json!({ "error": { "message": message, "type": kind, "code": code, "param": param } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, code, param) = self.status_and_kind();
        self.log();
        let mut response = (status, axum::Json(error_body(&self.to_string(), kind, code, param))).into_response();
        if let ApiError::TooManyRequests { retry_after_secs, .. } = &self {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after_secs));
        }
        response
    }
}

/// Rewrites error responses that carry no JSON (those made by tower layers and axum's
/// extractors) into the OpenAI error shape, so every error a client sees parses the same way.
pub async fn shape_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (message, kind, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("the request body is larger than this server accepts", "invalid_request_error", "request_too_large")
        }
        StatusCode::REQUEST_TIMEOUT => ("the request took longer than this server allows", "server_error", "timeout"),
        StatusCode::METHOD_NOT_ALLOWED => ("method not allowed on this endpoint", "invalid_request_error", "method_not_allowed"),
        s if s.is_client_error() => ("the request was rejected", "invalid_request_error", "invalid_request"),
        _ => ("internal server error", "server_error", "internal_error"),
    };
    let mut shaped = Response::new(Body::from(error_body(message, kind, code, None).to_string()));
    *shaped.status_mut() = status;
    shaped.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    shaped
}
