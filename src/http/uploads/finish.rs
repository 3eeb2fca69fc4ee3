//! The ends of a session: `complete` (verify, make the object visible,
//! produce its envelope), `DELETE` (abort), and expiry. Each takes the
//! session's lock, so two replicas never complete or abort one session at
//! once, and creates the session's tombstone exclusively, so whatever
//! ends it (and is counted) ends it once.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;

use super::super::body::BodyReader;
use super::super::error::ApiError;
use super::super::idempotency;
use super::super::middleware::Caller;
use super::super::policy;
use super::super::produce::{envelope_response, storage_failed};
use super::super::Sidecar;
use super::{busy, load, ms_to_time, not_found, target_of};
use crate::kafka::client::producer::Produced;
use crate::lfs::checksum::{ChecksumAlg, StreamingDigest};
use crate::lfs::envelope::Envelope;
use crate::lfs::offload::{seal, to_content_key};
use crate::lfs::sessions::{
    EndRecord, Ended, LockOutcome, PartRecord, SessionDir, SessionRecord, StoredRecord,
};
use crate::metrics as m;

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

/// `POST /lfs/uploads/{id}/complete`; with an `Idempotency-Key`, a retry
/// gets the first answer even after the session is gone.
pub async fn complete(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CompleteRequest = BodyReader::new(body, sidecar.config.read_idle)
        .json()
        .await?;
    match idempotency::key_from_headers(&headers)? {
        None => {
            let (envelope, produced) = complete_session(&sidecar, &id, caller, &request).await?;
            Ok(envelope_response(&envelope, produced))
        }
        Some(key) => {
            idempotency::complete_once(&sidecar, caller.0, &key, &id, || {
                complete_session(&sidecar, &id, caller, &request)
            })
            .await
        }
    }
}

async fn complete_session(
    sidecar: &Sidecar,
    id: &str,
    caller: Caller,
    request: &CompleteRequest,
) -> Result<(Envelope, Produced), ApiError> {
    let (dir, session, _) = load(sidecar, id, caller).await?;
    if dir.lock().await.map_err(storage_failed)? == LockOutcome::Busy {
        return Err(busy());
    }
    let result = complete_locked(sidecar, &dir, &session, request).await;
    dir.unlock().await;
    result
}

async fn complete_locked(
    sidecar: &Sidecar,
    dir: &SessionDir,
    session: &SessionRecord,
    request: &CompleteRequest,
) -> Result<(Envelope, Produced), ApiError> {
    // Ended while the lock was being taken?
    super::ended(dir, &session.owner).await?;
    let envelope = match dir.stored().await.map_err(storage_failed)? {
        // A complete before this one stored the object, then failed to
        // produce its envelope: produce it now.
        Some(stored) => serde_json::from_str(&stored.envelope).map_err(storage_failed)?,
        None => store_object(sidecar, dir, session, request).await?,
    };
    let produced = sidecar.publish(&target_of(session), &envelope).await?;
    end(sidecar, dir, session, Ended::Completed).await;
    Ok((envelope, produced))
}

/// Checks the parts, verifies the checksum, completes the object, judges
/// it against the topic's policy, and records it as stored.
async fn store_object(
    sidecar: &Sidecar,
    dir: &SessionDir,
    session: &SessionRecord,
    request: &CompleteRequest,
) -> Result<Envelope, ApiError> {
    let listing = dir.list().await.map_err(storage_failed)?;
    let count = listing.next_part() - 1;
    let parts: Vec<PartRecord> = futures_util::stream::iter(1..=count)
        .map(|n| dir.part(n))
        .buffered(8)
        .try_filter_map(|p| async move { Ok(p) })
        .try_collect()
        .await
        .map_err(storage_failed)?;
    let received = parts
        .iter()
        .filter(|p| p.stored)
        .map(|p| p.size)
        .sum::<u64>();
    if received != session.size || parts.len() != count as usize {
        return Err(ApiError::bad_request(
            "incomplete_upload",
            format!("{received} of {} bytes received", session.size),
        ));
    }
    let listed_ok = request.parts.len() == parts.len()
        && request
            .parts
            .iter()
            .zip(&parts)
            .enumerate()
            .all(|(i, (listed, stored))| {
                listed.part_number == i as i64 + 1 && listed.etag.trim_matches('"') == stored.etag
            });
    if !listed_ok {
        return Err(ApiError::bad_request(
            "invalid_part",
            "parts must list every stored part in order, with the etags returned",
        ));
    }
    let alg = ChecksumAlg::parse(&session.checksum_alg).unwrap_or(ChecksumAlg::Sha256);
    let digest = parts
        .last()
        .and_then(|p| StreamingDigest::resume(alg, &p.digest))
        .ok_or_else(|| storage_failed("the last part has an unreadable record"))?;
    let sealed = seal(
        &sidecar.lfs,
        &session.upload.key,
        session.size,
        digest,
        session.checksum.as_deref(),
        session.content_type.clone(),
        ms_to_time(session.created_ms),
    );
    let envelope = match sealed {
        Ok(envelope) => envelope,
        Err(e) => {
            end(sidecar, dir, session, Ended::Failed).await;
            return Err(sidecar.offload_failed(e));
        }
    };
    let etags = parts
        .into_iter()
        .map(|p| p.s3_etag.unwrap_or_default())
        .collect();
    // A completion storage refuses keeps the session: `complete` again.
    sidecar
        .lfs
        .store
        .complete_resumable(&session.upload, etags, session.size)
        .await
        .map_err(storage_failed)?;
    if let Err(refused) = judge_value(sidecar, session).await {
        sidecar.lfs.store.delete_orphan(&session.upload.key).await;
        end(sidecar, dir, session, Ended::Failed).await;
        return Err(refused);
    }
    let mut envelope = envelope;
    if let Err(e) = to_content_key(&sidecar.lfs, &session.topic, &mut envelope).await {
        // The completed object is gone with it: nothing left to retry.
        end(sidecar, dir, session, Ended::Failed).await;
        return Err(sidecar.offload_failed(e));
    }
    dir.put_stored(&StoredRecord {
        envelope: String::from_utf8_lossy(&envelope.to_json()).into_owned(),
    })
    .await
    .map_err(storage_failed)?;
    Ok(envelope)
}

/// A topic policy's JSON value rule, judged from the stored object (the
/// parts may have reached different replicas, so no one process saw the
/// whole value stream by).
async fn judge_value(sidecar: &Sidecar, session: &SessionRecord) -> Result<(), ApiError> {
    let target = target_of(session);
    let check = policy::ValueCheck::begin(
        policy::for_topic(&sidecar.policies, &target.topic),
        target.key.as_deref(),
        &target.headers,
        Some(session.size),
    )?;
    let Some(mut check) = check else {
        return Ok(());
    };
    let mut stream = sidecar
        .lfs
        .store
        .stream(&session.upload.key)
        .await
        .map_err(storage_failed)?;
    while let Some(chunk) = stream.next().await {
        check.feed(&chunk.map_err(storage_failed)?);
    }
    check.judge()
}

/// `DELETE /lfs/uploads/{id}`
pub async fn abort(
    State(sidecar): State<Arc<Sidecar>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (dir, session, _) = load(&sidecar, &id, caller).await?;
    if dir.lock().await.map_err(storage_failed)? == LockOutcome::Busy {
        return Err(busy());
    }
    let ended = end(&sidecar, &dir, &session, Ended::Aborted).await;
    dir.unlock().await;
    if !ended {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ends an expired session, unless another request is ending it now.
pub(super) async fn expire(sidecar: &Sidecar, dir: &SessionDir, session: &SessionRecord) {
    match dir.lock().await {
        Ok(LockOutcome::Taken) => {
            end(sidecar, dir, session, Ended::Expired).await;
            dir.unlock().await;
        }
        Ok(LockOutcome::Busy) => {}
        Err(error) => tracing::warn!(%error, "cannot lock an expired upload session"),
    }
}

/// Ends the session (the caller holds its lock): writes the tombstone,
/// then lets go of what the session holds in storage (the multipart
/// upload; the object too unless it was published) and of its records.
/// Returns false when it had ended already.
async fn end(sidecar: &Sidecar, dir: &SessionDir, session: &SessionRecord, why: Ended) -> bool {
    let tombstone = EndRecord {
        why,
        at_ms: Utc::now().timestamp_millis(),
        owner: session.owner.clone(),
        object_key: Some(session.upload.key.clone()),
    };
    match dir.create_end(&tombstone).await {
        Ok(true) => {}
        Ok(false) => return false,
        Err(error) => {
            // Left for the reaper, which ends it when it expires.
            tracing::warn!(%error, upload = %session.upload.key, "cannot end an upload session now");
            return false;
        }
    }
    let store = &sidecar.lfs.store;
    if why != Ended::Completed {
        if let Err(error) = store.abort_resumable(&session.upload).await {
            tracing::warn!(%error, key = %session.upload.key, "cannot abort a session's upload; the cleanup retries it");
            store
                .cleanup()
                .retry_later(leftover_of(session), &error.to_string());
        }
        if matches!(dir.stored().await, Ok(Some(_)) | Err(_)) {
            // Stored, never published (or unknown): no envelope points to it.
            store.delete_orphan(&session.upload.key).await;
        }
    }
    if let Err(error) = dir.clear().await {
        tracing::warn!(%error, "cannot remove an ended session's records; the reaper does");
    }
    sidecar.sessions.release();
    metrics::gauge!(m::HTTP_UPLOAD_SESSIONS_OPEN).decrement(1.0);
    if why == Ended::Expired {
        metrics::counter!(m::HTTP_UPLOAD_SESSIONS_EXPIRED).increment(1);
        tracing::info!(key = %session.upload.key, "upload session expired; its upload was aborted");
    }
    true
}

fn leftover_of(session: &SessionRecord) -> crate::lfs::cleanup::Leftover {
    use crate::lfs::cleanup::Leftover;
    match &session.upload.upload_id {
        Some(upload_id) => Leftover::Multipart {
            key: session.upload.key.clone(),
            upload_id: upload_id.clone(),
        },
        None => Leftover::object(&session.upload.staging),
    }
}
