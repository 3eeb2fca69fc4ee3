//! `POST /lfs/produce`: the raw body streams to storage while its SHA-256
//! is computed, then the envelope is produced to Kafka and the broker's
//! answer checked. The body is never held whole: memory is one chunk plus
//! the multipart parts in flight. When anything after the upload fails,
//! the object is deleted, so no blob is left without an envelope.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;

use super::body::BodyReader;
use super::error::ApiError;
use super::target::{self, ExpectedChecksum, ProduceTarget};
use super::Sidecar;
use crate::kafka::client::producer::{OutgoingRecord, ProduceError, Produced};
use crate::lfs::checksum::{self, ChecksumAlg, StreamingDigest};
use crate::lfs::envelope::{self, Envelope, ENVELOPE_VERSION};
use crate::metrics as m;

pub async fn produce(
    State(sidecar): State<Arc<Sidecar>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let target = target::from_headers(&headers, sidecar.topic_max_length)?;
    sidecar.check_topic_enabled(&target.topic)?;
    let expected = target::checksum_from_headers(&headers, sidecar.lfs.default_alg)?;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > sidecar.lfs.max_blob_size) {
        return Err(sidecar.too_large());
    }
    let now = Utc::now();
    let key = envelope::object_key(
        &sidecar.lfs.namespace,
        &target.topic,
        now,
        uuid::Uuid::new_v4(),
    );
    let reader = BodyReader::new(body, sidecar.read_idle);
    let (size, digest) = store_body(&sidecar, &key, reader, expected.alg).await?;
    let envelope = match sidecar.check_and_describe(&key, size, digest, &expected, &target, now) {
        Ok(e) => e,
        Err(error) => {
            sidecar.delete_quietly(&key).await;
            return Err(error);
        }
    };
    let produced = sidecar.publish(&target, &envelope).await;
    match produced {
        Ok(produced) => Ok(envelope_response(&envelope, produced)),
        Err(error) => {
            sidecar.delete_quietly(&key).await;
            Err(error)
        }
    }
}

/// Streams the body into storage under `key`; returns its size and digest.
async fn store_body(
    sidecar: &Sidecar,
    key: &str,
    mut reader: BodyReader,
    alg: ChecksumAlg,
) -> Result<(u64, StreamingDigest), ApiError> {
    let mut digest = StreamingDigest::new(alg);
    let mut writer = sidecar.lfs.store.writer(key);
    let mut size = 0u64;
    loop {
        let data = match reader.next().await {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        size += data.len() as u64;
        metrics::counter!(m::HTTP_BYTES_TOTAL, "direction" => "up").increment(data.len() as u64);
        if size > sidecar.lfs.max_blob_size {
            writer.abort().await;
            return Err(sidecar.too_large());
        }
        digest.update(&data);
        if let Err(e) = writer.write(data).await {
            writer.abort().await;
            return Err(storage_failed(e));
        }
    }
    if size == 0 {
        writer.abort().await;
        return Err(ApiError::bad_request(
            "empty_upload",
            "the request body is empty",
        ));
    }
    writer.finish().await.map_err(storage_failed)?;
    Ok((size, digest))
}

pub fn storage_failed(e: impl std::fmt::Display) -> ApiError {
    metrics::counter!(m::LFS_STORAGE_ERRORS_TOTAL).increment(1);
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

    /// Checks the uploader's checksum and builds the envelope for `key`.
    pub fn check_and_describe(
        &self,
        key: &str,
        size: u64,
        digest: StreamingDigest,
        expected: &ExpectedChecksum,
        target: &ProduceTarget,
        created: chrono::DateTime<Utc>,
    ) -> Result<Envelope, ApiError> {
        let alg = digest.alg();
        let (sha256, requested) = digest.finish();
        if let Some(value) = &expected.value {
            if !checksum::matches(value, &requested) {
                return Err(ApiError::bad_request(
                    "checksum_mismatch",
                    format!("{} of the payload is {requested}, not {value}", alg.name()),
                ));
            }
        }
        Ok(Envelope {
            kfs_lfs: ENVELOPE_VERSION,
            bucket: self.lfs.store.bucket().to_owned(),
            key: key.to_owned(),
            size,
            sha256,
            checksum: Some(requested),
            checksum_alg: Some(alg.name().to_owned()),
            content_type: target.content_type.clone(),
            created_at: envelope::rfc3339(created),
            proxy_id: self.lfs.proxy_id.clone(),
        })
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
            value: Bytes::from(envelope.to_json()),
            headers: target.headers.clone(),
        };
        self.producer.produce(&record).await.map_err(produce_failed)
    }

    /// Deletes an object no envelope points to; a failure is logged and
    /// counted as an orphan.
    pub async fn delete_quietly(&self, key: &str) {
        match self.lfs.store.delete(key).await {
            Ok(()) => metrics::counter!(m::LFS_ORPHANS_DELETED).increment(1),
            Err(error) => {
                metrics::counter!(m::LFS_ORPHANS_LEFT).increment(1);
                tracing::error!(%error, key, "cannot delete object without envelope");
            }
        }
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
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        envelope.to_json(),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-kafka-partition", HeaderValue::from(produced.partition));
    headers.insert("x-kafka-offset", HeaderValue::from(produced.offset));
    response
}
