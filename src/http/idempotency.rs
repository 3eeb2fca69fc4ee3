//! `Idempotency-Key` on `POST /lfs/produce` and on upload sessions'
//! `complete`: a retry of a request whose answer was lost gets the first
//! answer (the same envelope, partition and offset) without a second
//! object or record; the same key with another request is 409. Records
//! live in the object store (`lfs::idempotency`), so any replica answers
//! the retry.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::body::BodyReader;
use super::error::ApiError;
use super::produce::{
    envelope_json_response, envelope_response, offload_and_publish, storage_failed, ProduceRequest,
};
use super::Sidecar;
use crate::kafka::client::producer::Produced;
use crate::lfs::envelope::Envelope;
use crate::lfs::idempotency::{
    complete_fingerprint, fingerprint, Answer, IdempotencyRecords, KeyState,
};

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

/// Produces `request` once per caller and key: the first request claims
/// the key and records its answer; a retry with the same request gets
/// that answer; anything else with the key is 409.
pub async fn produce_once(
    sidecar: &Sidecar,
    caller: Option<[u8; 32]>,
    key: &str,
    request: ProduceRequest,
) -> Result<Response, ApiError> {
    let records = IdempotencyRecords::new(sidecar.lfs.store.clone(), sidecar.lfs.namespace.clone());
    let target = &request.target;
    let (topic, record_key, partition) =
        (target.topic.clone(), target.key.clone(), target.partition);
    let fingerprint_of = |sha: &str| fingerprint(&topic, record_key.as_deref(), partition, sha);
    if let Some(answer) = claim(&records, caller.as_ref(), key).await? {
        let reader = BodyReader::new(request.body, sidecar.config.read_idle);
        let sha = body_sha256(reader, sidecar.lfs.max_blob_size, sidecar.too_large()).await?;
        if fingerprint_of(&sha) != answer.fingerprint {
            return Err(key_reused());
        }
        return Ok(replayed(&answer));
    }
    // The fingerprint of the body as stored: known once it is.
    run_claimed(
        &records,
        caller.as_ref(),
        key,
        |e| fingerprint_of(&e.sha256),
        async { offload_and_publish(sidecar, request).await },
    )
    .await
}

/// Completes upload session `upload_id` (`run`) once per caller and key:
/// a retry gets the first answer, also after the session is gone; the
/// key used for another request is 409.
pub async fn complete_once<F, Fut>(
    sidecar: &Sidecar,
    caller: Option<[u8; 32]>,
    key: &str,
    upload_id: &str,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(Envelope, Produced), ApiError>>,
{
    let records = IdempotencyRecords::new(sidecar.lfs.store.clone(), sidecar.lfs.namespace.clone());
    let fingerprint = complete_fingerprint(upload_id);
    match claim(&records, caller.as_ref(), key).await? {
        None => {}
        Some(answer) if answer.fingerprint == fingerprint => return Ok(replayed(&answer)),
        Some(_) => return Err(key_reused()),
    }
    run_claimed(&records, caller.as_ref(), key, |_| fingerprint, run()).await
}

/// Claims `key`: `None` when this request holds it now, the first answer
/// when there is one, 409 while the first request is still running.
async fn claim(
    records: &IdempotencyRecords,
    caller: Option<&[u8; 32]>,
    key: &str,
) -> Result<Option<Answer>, ApiError> {
    match records.claim(caller, key).await.map_err(storage_failed)? {
        KeyState::Claimed => Ok(None),
        KeyState::InProgress => Err(in_progress()),
        KeyState::Answered(answer) => Ok(Some(answer)),
    }
}

/// Runs the request that claimed `key`: records its answer (with the
/// fingerprint `fingerprint_of` gives it), or releases the key when it
/// fails, so a retry runs again.
async fn run_claimed(
    records: &IdempotencyRecords,
    caller: Option<&[u8; 32]>,
    key: &str,
    fingerprint_of: impl FnOnce(&Envelope) -> String,
    run: impl std::future::Future<Output = Result<(Envelope, Produced), ApiError>>,
) -> Result<Response, ApiError> {
    match run.await {
        Ok((envelope, produced)) => {
            let fingerprint = fingerprint_of(&envelope);
            remember(records, caller, key, fingerprint, &envelope, produced).await;
            Ok(envelope_response(&envelope, produced))
        }
        Err(error) => {
            records.release(caller, key).await;
            Err(error)
        }
    }
}

/// Records a claimed key's answer. On failure the answer is still given:
/// the record is produced; a retry finds the claim and is told to wait
/// until it goes stale.
async fn remember(
    records: &IdempotencyRecords,
    caller: Option<&[u8; 32]>,
    key: &str,
    fingerprint: String,
    envelope: &Envelope,
    produced: Produced,
) {
    let answer = Answer {
        fingerprint,
        envelope: String::from_utf8_lossy(&envelope.to_json()).into_owned(),
        partition: produced.partition,
        offset: produced.offset,
    };
    if let Err(error) = records.complete(caller, key, answer).await {
        tracing::warn!(%error, "cannot record an idempotent answer");
    }
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
fn replayed(answer: &Answer) -> Response {
    let produced = Produced {
        partition: answer.partition,
        offset: answer.offset,
    };
    let mut response = envelope_json_response(answer.envelope.clone(), produced);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
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
