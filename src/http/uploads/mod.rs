//! Upload sessions: a large object sent as numbered parts, then published
//! as one envelope (`POST /lfs/uploads`, `PUT /lfs/uploads/{id}/parts/{n}`,
//! `POST /lfs/uploads/{id}/complete`, `DELETE /lfs/uploads/{id}`).
//!
//! Session state lives in the object store next to the multipart upload
//! (`lfs::sessions`), never only in a process: parts of one upload may go
//! to different replicas behind a load balancer, `complete` to a third,
//! and a restarted proxy goes on where it was.
//!
//! Rules, as KafScale's API has them, and where it was wrong, fixed:
//! - Parts arrive strictly in order from 1 (409 `out_of_order`), each at
//!   most `part_size` bytes; every part but the last at least
//!   min(5 MiB, part_size). Re-sending a stored part with the same bytes
//!   returns its etag again, on any replica; other bytes are a conflict.
//! - The checksum is checked before the object is completed, so a wrong
//!   upload never becomes a visible object.
//! - A session belongs to the caller that opened it (API key, or JWT
//!   issuer and subject); another caller gets 404.
//! - An expired or deleted session aborts its multipart upload (KafScale
//!   leaked the parts). An object stored whose envelope could not be
//!   produced stays until expiry, so `complete` can be retried.

mod finish;
mod parts;
mod sessions;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};

pub use finish::{abort, complete};
pub use parts::put_part;
pub use sessions::UploadSessions;

use super::body::BodyReader;
use super::error::ApiError;
use super::middleware::Caller;
use super::policy;
use super::produce::storage_failed;
use super::target::{self, ProduceTarget};
use super::Sidecar;
use crate::lfs::envelope;
use crate::lfs::sessions::{SessionDir, SessionListing, SessionRecord};
use crate::metrics as m;

#[derive(Debug, serde::Deserialize)]
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

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The owner as the session record names it.
fn owner_of(caller: Caller) -> Option<String> {
    caller.0.map(hex::encode)
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
    // What can be judged before the body is judged now; a JSON value rule
    // is judged at `complete`, from the stored object.
    policy::ValueCheck::begin(
        policy::for_topic(&sidecar.policies, &topic),
        key.as_deref(),
        &headers,
        Some(size),
    )?;
    let created = Utc::now();
    let object_key = envelope::object_key(
        &sidecar.lfs.namespace,
        &topic,
        created,
        uuid::Uuid::new_v4(),
    );
    let id = uuid::Uuid::new_v4().to_string();
    let dir = SessionDir::new(sidecar.lfs.store.clone(), &sidecar.lfs.namespace, &id);
    sidecar.sessions.reserve(sidecar.config.max_sessions)?;
    let upload = match sidecar
        .lfs
        .store
        .start_resumable(&object_key, &dir.staging_key())
        .await
    {
        Ok(upload) => upload,
        Err(e) => {
            sidecar.sessions.release();
            return Err(storage_failed(e));
        }
    };
    let ttl = chrono::Duration::seconds(sidecar.config.session_ttl.as_secs() as i64);
    let record = SessionRecord {
        owner: owner_of(caller),
        topic,
        key: key.map(|k| B64.encode(k)),
        partition,
        headers: headers
            .iter()
            .map(|(k, v)| (k.clone(), B64.encode(v)))
            .collect(),
        content_type,
        size,
        part_size: sidecar.config.part_size,
        checksum_alg: expected.alg.name().to_owned(),
        checksum: expected.value,
        created_ms: created.timestamp_millis(),
        expires_ms: (created + ttl).timestamp_millis(),
        upload,
    };
    if let Err(e) = dir.create_session(&record).await {
        let _ = sidecar.lfs.store.abort_resumable(&record.upload).await;
        sidecar.sessions.release();
        return Err(storage_failed(e));
    }
    metrics::gauge!(m::HTTP_UPLOAD_SESSIONS_OPEN).increment(1.0);
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "upload_id": id,
            "s3_key": object_key,
            "part_size": record.part_size,
            "expires_at": envelope::rfc3339(ms_to_time(record.expires_ms)),
        }),
    ))
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Where the session's record goes in Kafka.
fn target_of(record: &SessionRecord) -> ProduceTarget {
    let decode = |v: &str| bytes::Bytes::from(B64.decode(v).unwrap_or_default());
    ProduceTarget {
        topic: record.topic.clone(),
        key: record.key.as_deref().map(decode),
        partition: record.partition,
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), decode(v)))
            .collect(),
        content_type: record.content_type.clone(),
    }
}

pub(super) fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "upload_not_found",
        "no such upload session",
    )
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "upload_expired",
        "the upload session expired",
    )
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "upload_in_progress",
        "another request is completing or aborting this upload; retry later",
    )
}

/// The caller's open session `id`, with one listing of its records: 404
/// when there is none (or it is another caller's, or it ended), 410 when
/// it expired (and it is expired now if its time is up).
async fn load(
    sidecar: &Sidecar,
    id: &str,
    caller: Caller,
) -> Result<(SessionDir, SessionRecord, SessionListing), ApiError> {
    // Ids are ours (UUIDs): anything else names no session, and never
    // reaches a store key.
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let dir = SessionDir::new(
        sidecar.lfs.store.clone(),
        &sidecar.lfs.namespace,
        &id.to_string(),
    );
    let owner = owner_of(caller);
    let listing = dir.list().await.map_err(storage_failed)?;
    if listing.end {
        ended(&dir, &owner).await?;
    }
    if !listing.session {
        return Err(not_found());
    }
    let record = dir
        .session()
        .await
        .map_err(storage_failed)?
        .ok_or_else(not_found)?;
    if record.owner != owner {
        return Err(not_found());
    }
    if record.expires_ms <= Utc::now().timestamp_millis() {
        finish::expire(sidecar, &dir, &record).await;
        return Err(expired());
    }
    Ok((dir, record, listing))
}

/// `Ok` while the session has not ended; its error when it has.
async fn ended(dir: &SessionDir, owner: &Option<String>) -> Result<(), ApiError> {
    match dir.end().await.map_err(storage_failed)? {
        None => Ok(()),
        Some(end) if end.owner == *owner && end.why == crate::lfs::sessions::Ended::Expired => {
            Err(expired())
        }
        Some(_) => Err(not_found()),
    }
}
