//! `POST /lfs/produce`: the raw body streams to storage while its SHA-256
//! is computed, then the envelope is produced to Kafka and the broker's
//! answer checked. The body is never held whole: memory is one chunk plus
//! the multipart parts in flight. When anything after the upload fails,
//! the object is deleted, so no blob is left without an envelope. With an
//! `Idempotency-Key`, a retry gets the first answer (`idempotency`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;

use super::body::BodyReader;
use super::error::ApiError;
use super::idempotency;
use super::middleware::Caller;
use super::policy;
use super::target::{self, ProduceTarget};
use super::Sidecar;
use crate::kafka::client::producer::{OutgoingRecord, ProduceError, Produced};
use crate::lfs::envelope::Envelope;
use crate::lfs::offload::{delete_orphans, Offload, OffloadError};
use crate::metrics as m;

pub async fn produce(
    State(sidecar): State<Arc<Sidecar>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = target::from_headers(&headers, sidecar.config.topic_max_length)?;
    sidecar.check_topic_enabled(&target.topic)?;
    let expected = target::checksum_from_headers(&headers, sidecar.lfs.default_alg)?;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > sidecar.lfs.max_blob_size) {
        return Err(sidecar.too_large());
    }
    let request = ProduceRequest {
        target,
        expected,
        declared,
        body,
    };
    match idempotency::key_from_headers(&headers)? {
        Some(key) => {
            let caller = caller.and_then(|Extension(c)| c.0);
            idempotency::produce_once(&sidecar, caller, &key, request).await
        }
        None => {
            let (envelope, produced) = offload_and_publish(&sidecar, request).await?;
            Ok(envelope_response(&envelope, produced))
        }
    }
}

/// What `/lfs/produce` was asked, once its headers are checked.
pub(super) struct ProduceRequest {
    pub target: ProduceTarget,
    pub expected: target::ExpectedChecksum,
    /// `Content-Length`, when sent.
    pub declared: Option<u64>,
    pub body: Body,
}

/// Stores the body (verified, policy-checked), then produces its envelope;
/// the object is deleted when anything after the upload fails.
pub(super) async fn offload_and_publish(
    sidecar: &Sidecar,
    request: ProduceRequest,
) -> Result<(Envelope, Produced), ApiError> {
    let ProduceRequest {
        target,
        expected,
        declared,
        body,
    } = request;
    let target = &target;
    let mut value_check = policy::ValueCheck::begin(
        policy::for_topic(&sidecar.policies, &target.topic),
        target.key.as_deref(),
        &target.headers,
        declared,
    )?;
    let mut offload = Offload::begin(
        &sidecar.lfs,
        &target.topic,
        Utc::now(),
        uuid::Uuid::new_v4(),
        expected.alg,
    );
    let reader = BodyReader::new(body, sidecar.config.read_idle);
    let stored = store_body(sidecar, &mut offload, reader, value_check.as_mut()).await;
    if let Err(error) = stored.and_then(|()| value_check.as_ref().map_or(Ok(()), |c| c.judge())) {
        offload.abort().await;
        return Err(error);
    }
    let key = offload.key().to_owned();
    let envelope = offload
        .finish(
            &sidecar.lfs,
            expected.value.as_deref(),
            target.content_type.clone(),
        )
        .await
        .map_err(|e| sidecar.offload_failed(e))?;
    match sidecar.publish(target, &envelope).await {
        Ok(produced) => Ok((envelope, produced)),
        Err(error) => {
            delete_orphans(&sidecar.lfs, &[key]).await;
            Err(error)
        }
    }
}

/// Streams the body into the offload; on an error the caller aborts it.
async fn store_body(
    sidecar: &Sidecar,
    offload: &mut Offload,
    mut reader: BodyReader,
    mut value_check: Option<&mut policy::ValueCheck>,
) -> Result<(), ApiError> {
    while let Some(data) = reader.next().await? {
        metrics::counter!(m::HTTP_BYTES_TOTAL, "direction" => "up").increment(data.len() as u64);
        if let Some(check) = value_check.as_mut() {
            check.feed(&data);
        }
        offload
            .write(data)
            .await
            .map_err(|e| sidecar.offload_failed(e))?;
    }
    if offload.size() == 0 {
        return Err(ApiError::bad_request(
            "empty_upload",
            "the request body is empty",
        ));
    }
    Ok(())
}

/// A storage failure outside the offload path (an upload session's part).
pub fn storage_failed(e: impl std::fmt::Display) -> ApiError {
    metrics::counter!(m::LFS_STORAGE_ERRORS_TOTAL).increment(1);
    upload_refused(e)
}

fn upload_refused(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "s3_upload_failed",
        "object storage did not accept the upload",
    )
    .with_detail(e)
}

impl Sidecar {
    /// With `KAFSCALE_LFS_PROXY_TOPICS` set, only those topics take uploads.
    pub fn check_topic_enabled(&self, topic: &str) -> Result<(), ApiError> {
        if self.lfs.topics.allows(topic) {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                "invalid_topic",
                "LFS is not enabled for this topic (KAFSCALE_LFS_PROXY_TOPICS)",
            ))
        }
    }

    pub fn too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "payload exceeds KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE ({} bytes)",
                self.lfs.max_blob_size
            ),
        )
    }

    /// The HTTP answer to a failed offload (the offload counted it).
    pub fn offload_failed(&self, error: OffloadError) -> ApiError {
        match error {
            OffloadError::TooLarge { .. } => self.too_large(),
            OffloadError::ChecksumMismatch {
                alg,
                expected,
                actual,
            } => ApiError::bad_request(
                "checksum_mismatch",
                format!("{alg} of the payload is {actual}, not {expected}"),
            ),
            OffloadError::Storage(_) | OffloadError::Hashing(_) => upload_refused(error),
        }
    }

    /// Produces the envelope record and maps Kafka's answer to HTTP.
    pub async fn publish(
        &self,
        target: &ProduceTarget,
        envelope: &Envelope,
    ) -> Result<Produced, ApiError> {
        let record = OutgoingRecord {
            topic: target.topic.clone(),
            partition: target.partition,
            key: target.key.clone(),
            value: Some(Bytes::from(envelope.to_json())),
            headers: target.headers.clone(),
        };
        self.producer.produce(&record).await.map_err(produce_failed)
    }
}

pub(crate) fn produce_failed(error: ProduceError) -> ApiError {
    match &error {
        ProduceError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            "Kafka is unavailable; retry later",
        ),
        ProduceError::NoSuchPartition { .. } => {
            ApiError::bad_request("invalid_partition", error.to_string())
        }
        ProduceError::Refused {
            name, retriable, ..
        } if *retriable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend_unavailable",
            format!("Kafka did not take the record in time: {name}; retry later"),
        ),
        ProduceError::Refused { name, code, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_error",
            format!("Kafka refused the record: {name} ({code})"),
        ),
        ProduceError::Login(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_error",
            "the proxy's login to Kafka was refused",
        ),
        ProduceError::Encode(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encode_failed",
            "the record could not be encoded",
        ),
    }
    .with_detail(error)
}

/// 200 with the envelope as JSON; partition and offset in headers.
pub fn envelope_response(envelope: &Envelope, produced: Produced) -> Response {
    envelope_json_response(envelope.to_json(), produced)
}

/// 200 with an envelope already rendered as JSON.
pub fn envelope_json_response(json: impl Into<Body>, produced: Produced) -> Response {
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        json.into(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-kafka-partition", HeaderValue::from(produced.partition));
    headers.insert("x-kafka-offset", HeaderValue::from(produced.offset));
    response
}
