//! Cached reads (`cached:` routes): `GET` answers from the view of a
//! compacted topic (see `view`) instead of calling Kafka.
//!
//! - One key: 200 with the latest value as stored (its `content-type`
//!   header as `Content-Type`, else `application/octet-stream`) and an
//!   `ETag` naming the record (`"partition-offset"`); 404 `not_found` when
//!   the key has no value (never written, or deleted by a tombstone).
//! - All keys (a route without `key`): 200 with a JSON array of every
//!   key's latest value in key order; a value that is JSON is included as
//!   it is, any other as a JSON string (UTF-8 text, else base64). The
//!   `ETag` is the view's position on every partition.
//! - `If-None-Match` equal to the current ETag: 304. With `Prefer:
//!   wait=N` (at most `RR_MAX_WAIT_SEC`) such a request, or one for a key
//!   with no value yet, waits up to N seconds for a change and is answered
//!   as soon as one arrives (`Preference-Applied: wait=N`).
//! - A view still reading its topic's existing records holds requests up
//!   to `READY_WAIT`, then 503 `view_not_ready`; a view over
//!   `CACHED_MAX_BYTES` is 503 `view_too_large`.

pub mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use tokio::time::Instant;

use super::error::ApiError;
use super::{middleware, request_reply, Sidecar};
use crate::rr::cached_routes::{CachedRoute, CachedTarget};
use view::{Reading, TopicView};

/// How long a request waits for a view that is still reading.
const READY_WAIT: Duration = Duration::from_secs(10);

/// The cached routes and a view per topic they name.
pub struct CachedReads {
    pub routes: Vec<CachedRoute>,
    pub views: HashMap<String, Arc<TopicView>>,
    pub max_wait: Duration,
}

/// One answer, before `If-None-Match` is applied.
struct Answer {
    etag: Option<String>,
    body: Bytes,
    content_type: String,
}

impl CachedReads {
    pub async fn handle(
        &self,
        sidecar: &Sidecar,
        target: CachedTarget,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        middleware::authenticate(sidecar, headers)?;
        if *method != Method::GET && *method != Method::HEAD {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a cached read takes GET",
            ));
        }
        let Some(view) = self.views.get(&target.topic) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such view",
            ));
        };
        let mut changes = view.subscribe();
        let if_none_match = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let wait = request_reply::preferences(headers)
            .wait
            .map(|w| w.min(self.max_wait));
        let ready_by = Instant::now() + READY_WAIT;
        let answer_by = Instant::now() + wait.unwrap_or_default();
        loop {
            let answer = match answer(view, &target)? {
                Some(a) => a,
                None if Instant::now() < ready_by => {
                    let _ = tokio::time::timeout_at(ready_by, changes.changed()).await;
                    continue;
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "view_not_ready",
                        format!("topic {} is still being read; retry", target.topic),
                    ))
                }
            };
            let unchanged = match (&if_none_match, &answer) {
                (Some(tag), Ok(a)) => a.etag.as_deref().is_some_and(|e| etag_matches(tag, e)),
                (_, Err(_)) => true,
                (None, Ok(_)) => false,
            };
            if !unchanged || wait.is_none() || Instant::now() >= answer_by {
                return Ok(respond(answer, if_none_match.as_deref(), wait, method));
            }
            let _ = tokio::time::timeout_at(answer_by, changes.changed()).await;
        }
    }
}

/// The answer now: `None` while the view is not ready; `Err` inside for
/// a key with no value (404).
fn answer(
    view: &TopicView,
    target: &CachedTarget,
) -> Result<Option<Result<Answer, ApiError>>, ApiError> {
    let too_large =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "view_too_large", message);
    match &target.key {
        Some(key) => match view.get(key) {
            Reading::NotReady => Ok(None),
            Reading::Failed(e) => Err(too_large(e)),
            Reading::Ready(None) => Ok(Some(Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "the key has no value",
            )))),
            Reading::Ready(Some(entry)) => Ok(Some(Ok(Answer {
                etag: Some(entry.etag()),
                content_type: entry
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
                body: entry.value,
            }))),
        },
        None => match view.all() {
            Reading::NotReady => Ok(None),
            Reading::Failed(e) => Err(too_large(e)),
            Reading::Ready((entries, etag)) => {
                let values: Vec<serde_json::Value> =
                    entries.iter().map(|e| as_json(&e.value)).collect();
                Ok(Some(Ok(Answer {
                    etag: Some(etag),
                    content_type: "application/json".to_owned(),
                    body: Bytes::from(serde_json::to_vec(&values).unwrap_or_default()),
                })))
            }
        },
    }
}

/// A value in the merged array: itself when it is JSON, else a string.
fn as_json(value: &[u8]) -> serde_json::Value {
    if let Ok(v) = serde_json::from_slice(value) {
        return v;
    }
    match std::str::from_utf8(value) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => {
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(value))
        }
    }
}

/// `If-None-Match`: `*`, or a list of (possibly weak) tags.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/") == etag
    })
}

fn respond(
    answer: Result<Answer, ApiError>,
    if_none_match: Option<&str>,
    wait: Option<Duration>,
    method: &Method,
) -> Response {
    let mut response = match answer {
        Err(e) => e.into_response(),
        Ok(a) => {
            let tag = a.etag.clone();
            let not_modified =
                matches!((if_none_match, &tag), (Some(h), Some(e)) if etag_matches(h, e));
            let mut r = if not_modified {
                StatusCode::NOT_MODIFIED.into_response()
            } else if *method == Method::HEAD {
                (StatusCode::OK, [(header::CONTENT_TYPE, a.content_type)]).into_response()
            } else {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, a.content_type)],
                    a.body,
                )
                    .into_response()
            };
            if let Some(tag) = tag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                r.headers_mut().insert(header::ETAG, tag);
            }
            r
        }
    };
    if let Some(w) = wait {
        if let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs())) {
            response.headers_mut().insert("preference-applied", v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_as_rfc_9110_says() {
        assert!(etag_matches("\"0-5\"", "\"0-5\""));
        assert!(etag_matches("W/\"0-5\", \"1-2\"", "\"0-5\""));
        assert!(etag_matches("*", "\"0-5\""));
        assert!(!etag_matches("\"0-6\"", "\"0-5\""));
    }

    #[test]
    fn merged_values_are_json_or_strings() {
        assert_eq!(as_json(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(as_json(b"plain"), serde_json::json!("plain"));
        assert_eq!(as_json(&[0xff]), serde_json::json!("/w=="));
    }
}
