//! `Idempotency-Key` on `POST /lfs/produce`: a retry of a request whose
//! answer was lost gets the first answer (the same envelope, partition
//! and offset) without a second object or record; the same key with
//! another request is 409. Records live in the object store
//! (`lfs::idempotency`), so any replica answers the retry.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::body::BodyReader;
use super::error::ApiError;
use crate::lfs::idempotency::Answer;

/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if any: 1 to 255 visible ASCII
/// characters.
pub fn key_from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The SHA-256 (hex) of a body read to its end, never held; at most
/// `max` bytes.
pub async fn body_sha256(
    mut reader: BodyReader,
    max: u64,
    too_large: ApiError,
) -> Result<String, ApiError> {
    let mut h = Sha256::new();
    let mut size = 0u64;
    while let Some(data) = reader.next().await? {
        size += data.len() as u64;
        if size > max {
            return Err(too_large);
        }
        h.update(&data);
    }
    Ok(hex::encode(h.finalize()))
}

/// The first answer again, marked as a replay.
pub fn replayed(answer: &Answer) -> Response {
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from(answer.envelope.clone()),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-kafka-partition", HeaderValue::from(answer.partition));
    headers.insert("x-kafka-offset", HeaderValue::from(answer.offset));
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

pub fn key_reused() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was used with a different request",
    )
}

pub fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this Idempotency-Key is still in progress; retry later",
    )
}
