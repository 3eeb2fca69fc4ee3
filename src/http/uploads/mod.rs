//! Upload sessions (the handlers; the session table is in `sessions`): a
//! large object sent as numbered parts, then published
//! as one envelope (`POST /lfs/uploads`, `PUT /lfs/uploads/{id}/parts/{n}`,
//! `POST /lfs/uploads/{id}/complete`, `DELETE /lfs/uploads/{id}`).
//!
//! Rules, as KafScale's API has them, and where it was wrong, fixed:
//! - Parts arrive strictly in order from 1 (409 `out_of_order`), each at
//!   most `part_size` bytes; every part but the last at least
//!   min(5 MiB, part_size). Re-sending a stored part with the same bytes
//!   returns its etag again; other bytes are a conflict.
//! - The checksum is checked before the object is completed, so a wrong
//!   upload never becomes a visible object.
//! - A session belongs to the API key that opened it; another key gets 404.
//! - An expired or deleted session aborts its multipart upload (KafScale
//!   leaked the parts). An object stored whose envelope could not be
//!   produced stays until expiry, so `complete` can be retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::body::BodyReader;
use super::error::ApiError;
use super::middleware::Caller;
use super::policy;
use super::produce::{envelope_response, storage_failed};
use super::target::{self, ProduceTarget};
use super::Sidecar;
use crate::lfs::checksum::StreamingDigest;
use crate::lfs::envelope;
use crate::lfs::offload::{delete_orphans, seal};
use crate::lfs::store::MIN_S3_PART_SIZE;
use crate::metrics as m;

mod sessions;

pub use sessions::UploadSessions;
use sessions::{count_closed, not_found, Closed, Session, SessionState};

#[derive(Debug, Deserialize)]
struct InitRequest {
    topic: Option<String>,
    key: Option<String>,
    partition: Option<i64>,
    content_type: Option<String>,
    size_bytes: Option<i64>,
    checksum: Option<String>,
    checksum_alg: Option<String>,
    /// Record headers for the envelope (an addition to KafScale's API).
    #[serde(default)]
    headers: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct CompleteRequest {
    #[serde(default)]
    parts: Vec<CompletedPart>,
}

#[derive(Debug, Deserialize)]
struct CompletedPart {
    part_number: i64,
    etag: String,
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `POST /lfs/uploads`
pub async fn init(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: InitRequest = BodyReader::new(body, sidecar.config.read_idle)
        .json()
        .await?;
    let topic = target::topic(request.topic.as_deref(), sidecar.config.topic_max_length)?;
    sidecar.check_topic_enabled(&topic)?;
    let content_type = request
        .content_type
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_content_type", "content_type is required"))?
        .to_owned();
    let size = match request.size_bytes {
        Some(s) if s > 0 => s as u64,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_size",
                "size_bytes must be greater than 0",
            ))
        }
    };
    let key = target::key(request.key.as_deref())?;
    let partition = match request.partition {
        None => None,
        Some(p) if (0..=i32::MAX as i64).contains(&p) => Some(p as i32),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_partition",
                "partition must be an integer from 0 to 2147483647",
            ))
        }
    };
    let expected = target::checksum(
        request.checksum.as_deref(),
        request.checksum_alg.as_deref(),
        sidecar.lfs.default_alg,
    )?;
    // Limits come after every field is known to be well formed, so a
    // malformed request gets its precise 400 whatever size it declares.
    if size > sidecar.lfs.max_blob_size {
        return Err(sidecar.too_large());
    }
    let mut headers: Vec<(String, bytes::Bytes)> = request
        .headers
        .into_iter()
        .map(|(k, v)| (k, bytes::Bytes::from(v)))
        .collect();
    headers.sort();
    let value_check = policy::ValueCheck::begin(
        policy::for_topic(&sidecar.policies, &topic),
        key.as_deref(),
        &headers,
        Some(size),
    )?;
    let target = ProduceTarget {
        topic,
        key,
        partition,
        headers,
        content_type,
    };
    let created = Utc::now();
    let object_key = envelope::object_key(
        &sidecar.lfs.namespace,
        &target.topic,
        created,
        uuid::Uuid::new_v4(),
    );
    sidecar.sessions.reserve(sidecar.config.max_sessions)?;
    let upload = match sidecar.lfs.store.parts(&object_key).await {
        Ok(upload) => upload,
        Err(e) => {
            sidecar.sessions.release();
            return Err(storage_failed(e));
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let ttl = sidecar.config.session_ttl;
    let session = Session {
        id: id.clone(),
        owner: caller,
        expected: expected.clone(),
        size,
        part_size: sidecar.config.part_size,
        key: object_key.clone(),
        created,
        expires: Instant::now() + ttl,
        expires_at: created + chrono::Duration::seconds(ttl.as_secs() as i64),
        state: SessionState::Receiving {
            upload,
            digest: Box::new(StreamingDigest::new(expected.alg)),
            received: 0,
            parts: Vec::new(),
        },
        target,
        value_check,
    };
    let expires_at = envelope::rfc3339(session.expires_at);
    sidecar
        .sessions
        .sessions
        .lock()
        .await
        .insert(id.clone(), Arc::new(Mutex::new(session)));
    metrics::gauge!(m::HTTP_UPLOAD_SESSIONS_OPEN).increment(1.0);
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "upload_id": id,
            "s3_key": object_key,
            "part_size": sidecar.config.part_size,
            "expires_at": expires_at,
        }),
    ))
}

/// Etag of a part: the first 128 bits of its SHA-256, in hex.
fn etag(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

/// `PUT /lfs/uploads/{id}/parts/{n}`
pub async fn put_part(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path((id, number)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_part", why);
    let number: u64 = number
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| invalid("part number must be 1 to 10000".into()))?;
    let session = sidecar.sessions.get(&sidecar, &id, caller).await?;
    let mut s = session.lock().await;
    let (size, part_size) = (s.size, s.part_size);
    let Session {
        state, value_check, ..
    } = &mut *s;
    let SessionState::Receiving {
        upload,
        digest,
        received,
        parts,
    } = state
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "out_of_order",
            "the upload is already complete",
        ));
    };
    let next = parts.len() as u64 + 1;
    if number > next {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "out_of_order",
            format!("part {next} is expected next"),
        ));
    }
    let data = BodyReader::new(body, sidecar.config.read_idle)
        .collect(
            part_size as usize,
            invalid(format!("a part is at most {part_size} bytes")),
        )
        .await?;
    if data.is_empty() {
        return Err(invalid("a part must not be empty".into()));
    }
    let tag = etag(&data);
    if number < next {
        let (stored, _) = &parts[number as usize - 1];
        if *stored != tag {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "out_of_order",
                format!("part {number} is already stored with other content"),
            ));
        }
        return Ok(part_response(&id, number, &tag));
    }
    let after = *received + data.len() as u64;
    if after > size {
        return Err(invalid(format!(
            "parts would exceed the declared size_bytes ({size})"
        )));
    }
    let min_part = (MIN_S3_PART_SIZE as u64).min(part_size);
    if after < size && (data.len() as u64) < min_part {
        return Err(invalid(format!(
            "every part but the last must be at least {min_part} bytes"
        )));
    }
    digest.update(&data);
    if let Some(check) = value_check.as_mut() {
        check.feed(&data);
    }
    let len = data.len() as u64;
    metrics::counter!(m::HTTP_BYTES_TOTAL, "direction" => "up").increment(len);
    if let Err(e) = upload.put_part(data).await {
        return Err(storage_failed(e));
    }
    *received = after;
    parts.push((tag.clone(), len));
    Ok(part_response(&id, number, &tag))
}

fn part_response(id: &str, number: u64, etag: &str) -> Response {
    json(
        StatusCode::OK,
        serde_json::json!({"upload_id": id, "part_number": number, "etag": etag}),
    )
}

/// `POST /lfs/uploads/{id}/complete`
pub async fn complete(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CompleteRequest = BodyReader::new(body, sidecar.config.read_idle)
        .json()
        .await?;
    let session = sidecar.sessions.get(&sidecar, &id, caller).await?;
    let mut s = session.lock().await;
    if let SessionState::Receiving {
        received, parts, ..
    } = &s.state
    {
        if *received != s.size {
            return Err(ApiError::bad_request(
                "incomplete_upload",
                format!("{received} of {} bytes received", s.size),
            ));
        }
        let listed_ok = request.parts.len() == parts.len()
            && request.parts.iter().zip(parts.iter()).enumerate().all(
                |(i, (listed, (stored, _)))| {
                    listed.part_number == i as i64 + 1 && listed.etag.trim_matches('"') == stored
                },
            );
        if !listed_ok {
            return Err(ApiError::bad_request(
                "invalid_part",
                "parts must list every stored part in order, with the etags returned",
            ));
        }
        let SessionState::Receiving { upload, digest, .. } = std::mem::replace(
            &mut s.state,
            SessionState::Closed {
                why: Closed::Finished,
            },
        ) else {
            unreachable!("matched above")
        };
        let judged = s.value_check.as_ref().map_or(Ok(()), |c| c.judge());
        let checked = judged.and_then(|()| {
            seal(
                &sidecar.lfs,
                &s.key,
                s.size,
                *digest,
                s.expected.value.as_deref(),
                s.target.content_type.clone(),
                s.created,
            )
            .map_err(|e| sidecar.offload_failed(e))
        });
        let envelope = match checked {
            Ok(e) => e,
            Err(error) => {
                upload.abort().await;
                count_closed(&sidecar.sessions, false);
                drop(s);
                sidecar.sessions.remove(&id).await;
                return Err(error);
            }
        };
        // A failed completion aborts the upload itself.
        if let Err(e) = upload.complete().await {
            count_closed(&sidecar.sessions, false);
            drop(s);
            sidecar.sessions.remove(&id).await;
            return Err(storage_failed(e));
        }
        s.state = SessionState::Stored { envelope };
    }
    let SessionState::Stored { envelope } = &s.state else {
        return Err(not_found());
    };
    let envelope = envelope.clone();
    let produced = sidecar.publish(&s.target, &envelope).await?;
    s.state = SessionState::Closed {
        why: Closed::Finished,
    };
    count_closed(&sidecar.sessions, false);
    drop(s);
    sidecar.sessions.remove(&id).await;
    Ok(envelope_response(&envelope, produced))
}

/// `DELETE /lfs/uploads/{id}`
pub async fn abort(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = sidecar.sessions.get(&sidecar, &id, caller).await?;
    let mut s = session.lock().await;
    match std::mem::replace(
        &mut s.state,
        SessionState::Closed {
            why: Closed::Finished,
        },
    ) {
        SessionState::Receiving { upload, .. } => upload.abort().await,
        SessionState::Stored { .. } => {
            delete_orphans(&sidecar.lfs, std::slice::from_ref(&s.key)).await
        }
        SessionState::Closed { .. } => return Err(not_found()),
    }
    count_closed(&sidecar.sessions, false);
    drop(s);
    sidecar.sessions.remove(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
