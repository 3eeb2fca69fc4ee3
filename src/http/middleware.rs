//! What every HTTP request goes through: a request id, API-key checks on
//! the /lfs/ routes, and per-route metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{error_body, ApiError, PendingError};
use super::Sidecar;
use crate::metrics as m;

pub const REQUEST_ID: &str = "x-request-id";
pub const API_KEY: &str = "x-api-key";

/// The request's id: the caller's `X-Request-ID` when it is a sane token,
/// else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Who called: the SHA-256 of the API key presented (`None` when the API
/// has no keys). Upload sessions belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub Option<[u8; 32]>);

fn usable_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?.trim();
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| s.to_owned())
}

/// Tags the request and its response with an id, and renders errors as
/// `{code, message, request_id}`.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(usable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if let Some(PendingError(error)) = response.extensions_mut().remove::<PendingError>() {
        let status = error.status;
        if status.is_server_error() {
            tracing::warn!(request_id = %id, %method, %path, status = status.as_u16(), code = error.code, message = %error.message, detail = error.detail.as_deref().unwrap_or(""), "HTTP request failed");
        } else {
            tracing::info!(request_id = %id, %method, %path, status = status.as_u16(), code = error.code, message = %error.message, detail = error.detail.as_deref().unwrap_or(""), "HTTP request refused");
        }
        let body = error_body(&error, &id);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        *response.body_mut() = Body::from(body);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Requires one of the configured API keys as `X-API-Key` or
/// `Authorization: Bearer`. Every configured key is compared in constant
/// time, so timing shows neither which key nor how much of it matched.
pub async fn require_api_key(
    State(sidecar): State<Arc<Sidecar>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&sidecar, request.headers()) {
        Ok(who) => {
            request.extensions_mut().insert(who.caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// A caller who passed [`authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    /// The JWT's subject, when the caller showed a JWT.
    pub subject: Option<String>,
    /// When the JWT shown expires (seconds since the Unix epoch); `None`
    /// for API keys and anonymous callers. Long-lived SSE streams end then
    /// unless renewed.
    pub expires_at: Option<u64>,
}

/// Checks the request's credential: an API key (`X-API-Key`, or
/// `Authorization: Bearer` with a key) or a bearer JWT. Everyone is an
/// anonymous caller when neither keys nor a JWT key are configured.
pub fn authenticate(sidecar: &Sidecar, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let anonymous = Authenticated {
        caller: Caller(None),
        subject: None,
        expires_at: None,
    };
    if sidecar.api_keys.is_empty() && sidecar.jwt.is_none() {
        return Ok(anonymous);
    }
    let bearer = headers.get(AUTHORIZATION).and_then(|v| {
        let auth = v.as_bytes();
        auth.get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| auth[7..].trim_ascii())
    });
    if let (Some(jwt), Some(token)) = (&sidecar.jwt, bearer) {
        if super::jwt::looks_like_jwt(token) {
            let token = std::str::from_utf8(token).unwrap_or_default();
            return match jwt.verify(token) {
                Ok(identity) => {
                    let mut h = Sha256::new();
                    h.update(b"jwt\0");
                    h.update(identity.issuer.as_deref().unwrap_or_default());
                    h.update([0]);
                    h.update(identity.subject.as_deref().unwrap_or_default());
                    Ok(Authenticated {
                        caller: Caller(Some(h.finalize().into())),
                        subject: identity.subject,
                        expires_at: Some(identity.expires_at),
                    })
                }
                Err(error) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "invalid or expired bearer token",
                )
                .with_detail(error)),
            };
        }
    }
    if sidecar.api_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer JWT is required (Authorization: Bearer)",
        ));
    }
    let presented = headers
        .get(API_KEY)
        .map(|v| v.as_bytes().to_vec())
        .or_else(|| bearer.map(<[u8]>::to_vec));
    let Some(presented) = presented else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required (X-API-Key or Authorization: Bearer)",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(&presented).into();
    let mut matched = subtle::Choice::from(0u8);
    for key in &sidecar.api_keys {
        matched |= key.ct_eq(&digest);
    }
    if !bool::from(matched) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid API key",
        ));
    }
    Ok(Authenticated {
        caller: Caller(Some(digest)),
        subject: None,
        expires_at: None,
    })
}

/// Digest under which an API key is kept in memory and compared.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Counts requests by route template (bounded), method and status, and
/// times them.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
