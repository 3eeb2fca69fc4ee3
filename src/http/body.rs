//! Request bodies read piece by piece with an idle timeout: a 5 GiB upload
//! that keeps arriving is never cut off, a stalled one is.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::error::ApiError;

/// Largest JSON request accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

pub struct BodyReader {
    body: Body,
    idle: Duration,
}

impl BodyReader {
    pub fn new(body: Body, idle: Duration) -> Self {
        BodyReader { body, idle }
    }

    /// The next piece of data; `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.body.frame())
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("no request body data for {} s", self.idle.as_secs()),
                    )
                })?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        "the request body could not be read",
                    )
                    .with_detail(e))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// A JSON request body of at most `MAX_JSON_BYTES`.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        let raw = self
            .collect(
                MAX_JSON_BYTES,
                ApiError::bad_request("invalid_request", "JSON request over 64 KiB"),
            )
            .await?;
        serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request("invalid_request", format!("request is not valid JSON: {e}"))
        })
    }

    /// The whole body, refused with `too_large` past `limit` bytes.
    pub async fn collect(mut self, limit: usize, too_large: ApiError) -> Result<Bytes, ApiError> {
        let mut out = BytesMut::new();
        while let Some(data) = self.next().await? {
            if out.len() + data.len() > limit {
                return Err(too_large);
            }
            out.extend_from_slice(&data);
        }
        Ok(out.freeze())
    }
}
