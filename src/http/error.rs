//! The HTTP API's errors: `{code, message, request_id}` JSON with the
//! status and code names of KafScale's API, so its SDKs keep working.
//!
//! A handler returns an [`ApiError`]; the request-id middleware renders it,
//! because only it knows the request id. `message` is written for the
//! caller; `detail` (raw storage or broker text) is logged, never returned.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds text for the log only.
    pub fn with_detail(mut self, detail: impl std::fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

/// The part of an error the middleware turns into the JSON body.
#[derive(Debug, Clone)]
pub struct PendingError(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = self.status;
        response.extensions_mut().insert(PendingError(self));
        response
    }
}

/// The body of an error response.
pub fn error_body(error: &ApiError, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "code": error.code,
        "message": error.message,
        "request_id": request_id,
    }))
    .expect("strings always serialise")
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
