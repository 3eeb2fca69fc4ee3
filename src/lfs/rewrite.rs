//! The Produce rewrite: every record tagged `LFS_BLOB` has its value stored
//! as an object and replaced by a JSON envelope.
//!
//! Rules kept here (the reasons are the broker's and the producer's):
//!
//! * Batches are rebuilt one by one, never merged, split or reordered: an
//!   idempotent producer's sequence numbers cover exactly its batches. A
//!   rebuilt batch keeps its codec, base offset and offset deltas,
//!   timestamps, producer id, epoch and base sequence, and transactional
//!   flag; the CRC is computed anew. Batches without LFS records, control
//!   batches and old-format (magic 0/1) message sets stay as their bytes.
//! * Finding out that a request has no LFS record must be cheap: an
//!   uncompressed batch is searched for the header name as bytes and only
//!   decoded on a hit; a compressed batch has to be decompressed.
//! * A record is never dropped or truncated. When any LFS record of a
//!   partition fails, the whole partition fails (a batch is atomic) with an
//!   error code the producer understands, its uploaded objects are deleted,
//!   and the other partitions go on.
//! * `LFS_BLOB` and `LFS_BLOB_ALG` are removed from the rewritten record:
//!   they are instructions to the proxy, and their content is in the
//!   envelope (`checksum`, `checksum_alg`). Every other header stays.

use bytes::{Buf, Bytes, BytesMut};
use chrono::Utc;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use super::checksum::ChecksumAlg;
use super::envelope::{self, RecordIdentity, DEFAULT_CONTENT_TYPE};
use super::offload::{delete_orphans, Offload, OffloadError, StoredKeys};
use super::Lfs;
use crate::kafka::wire::batches;
use crate::kafka::wire::frame::{self, Frame, RequestHeaderPeek};

/// The record header that asks for offload.
pub const LFS_BLOB: &str = "LFS_BLOB";
/// The optional record header naming the checksum algorithm.
pub const LFS_BLOB_ALG: &str = "LFS_BLOB_ALG";
/// The record header whose value becomes the envelope's `content_type`.
pub const CONTENT_TYPE: &str = "content-type";

pub use crate::kafka::wire::codes::{INVALID_RECORD, KAFKA_STORAGE_ERROR, MESSAGE_TOO_LARGE};

pub use crate::kafka::wire::produce_answer::FailedPartition;

/// Objects stored for one partition of a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionUploads {
    pub topic: String,
    pub partition: i32,
    pub keys: Vec<String>,
}

/// The outcome of rewriting one Produce request that held LFS records.
#[derive(Debug)]
pub struct RewrittenProduce {
    /// What to forward; `None` when every partition failed.
    pub frame: Option<Frame>,
    pub uploads: Vec<PartitionUploads>,
    pub failed: Vec<FailedPartition>,
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("cannot decode Produce v{version}: {source}")]
    Decode { version: i16, source: anyhow::Error },
    #[error("cannot encode Produce v{version}: {source}")]
    Encode { version: i16, source: anyhow::Error },
}

/// Rewrites a Produce request. `Ok(None)`: nothing to offload, forward the
/// original bytes.
pub async fn rewrite_produce(
    lfs: &Lfs,
    header: &RequestHeaderPeek,
    frame: &Frame,
) -> Result<Option<RewrittenProduce>, RewriteError> {
    let version = header.api_version;
    // v0–v2 carry message sets without headers; v13+ name topics by id,
    // which the proxy does not advertise.
    if !(3..=12).contains(&version) {
        return Ok(None);
    }
    let body = frame.body();
    let Some(offset) = header.body_offset else {
        return Ok(None);
    };
    let mut buf = body.slice(offset..);
    let mut request = ProduceRequest::decode(&mut buf, version)
        .map_err(|source| RewriteError::Decode { version, source })?;
    // Bytes after the request: a length inside it was wrong (librdkafka's
    // zero records length for a batch of 256 MiB or more at v9+ leaves the
    // whole batch here). Forwarded, the broker would drop the connection.
    if buf.has_remaining() {
        return Err(RewriteError::Decode {
            version,
            source: anyhow::anyhow!("{} bytes after the request's end", buf.remaining()),
        });
    }

    let mut changed = false;
    // Every object stored so far, deleted if this request goes no further.
    let mut stored = StoredKeys::new(lfs);
    let mut uploads = Vec::new();
    let mut failed = Vec::new();
    for topic in &mut request.topic_data {
        let name = topic.name.0.to_string();
        if !lfs.topics.allows(&name) {
            continue;
        }
        let mut kept: Vec<PartitionProduceData> = Vec::with_capacity(topic.partition_data.len());
        for mut partition in std::mem::take(&mut topic.partition_data) {
            let Some(records) = partition.records.clone() else {
                kept.push(partition);
                continue;
            };
            match rewrite_partition(lfs, &name, partition.index, &records).await {
                Ok(None) => kept.push(partition),
                Ok(Some((records, keys))) => {
                    changed = true;
                    stored.extend(&keys);
                    partition.records = Some(records);
                    uploads.push(PartitionUploads {
                        topic: name.clone(),
                        partition: partition.index,
                        keys,
                    });
                    kept.push(partition);
                }
                Err(failure) => {
                    changed = true;
                    failed.push(FailedPartition {
                        topic: name.clone(),
                        partition: partition.index,
                        error_code: failure.error_code,
                        message: failure.message,
                        record_errors: Vec::new(),
                    });
                }
            }
        }
        topic.partition_data = kept;
    }
    if !changed {
        return Ok(None);
    }
    request.topic_data.retain(|t| !t.partition_data.is_empty());
    let frame = if request.topic_data.is_empty() {
        None
    } else {
        Some(
            frame::encode_after_header(&body[..offset], &request, version)
                .map_err(|source| RewriteError::Encode { version, source })?,
        )
    };
    // From here the response settles the objects (`uploads`).
    stored.take();
    Ok(Some(RewrittenProduce {
        frame,
        uploads,
        failed,
    }))
}

struct PartitionFailure {
    error_code: i16,
    message: String,
}

/// One v2 batch as it sits in the records field.
struct RawBatch {
    bytes: Bytes,
}

impl RawBatch {
    /// Whether the header name appears in the batch's records (see
    /// [`batches::records_mention`]): a false positive only costs a decode.
    fn mentions_lfs(&self) -> bool {
        batches::records_mention(&self.bytes, LFS_BLOB.as_bytes())
    }
}

/// Splits a records field into batches by their length fields. Trailing
/// bytes that do not form a batch stay attached to the last piece, so
/// nothing is ever dropped.
fn split_batches(records: &Bytes) -> Vec<RawBatch> {
    let (whole, rest) = crate::kafka::wire::batches::split_whole(records);
    let mut out: Vec<RawBatch> = whole.into_iter().map(|bytes| RawBatch { bytes }).collect();
    if !rest.is_empty() {
        out.push(RawBatch { bytes: rest });
    }
    out
}

/// Rewrites the LFS records of one partition. `Ok(None)`: none found.
async fn rewrite_partition(
    lfs: &Lfs,
    topic: &str,
    partition: i32,
    records: &Bytes,
) -> Result<Option<(Bytes, Vec<String>)>, PartitionFailure> {
    // The rebuilt records field exists only from the first batch that
    // changes: an ordinary request (no LFS record) is never copied.
    let mut out: Option<BytesMut> = None;
    let mut keys = StoredKeys::new(lfs);
    let mut offset = 0;
    for batch in split_batches(records) {
        let start = offset;
        offset += batch.bytes.len();
        let candidate = batches::magic(&batch.bytes) == 2
            && !batches::is_control(&batch.bytes)
            && batch.mentions_lfs();
        if !candidate {
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&batch.bytes);
            }
            continue;
        }
        // A batch that does not decode goes on unchanged: the broker checks
        // its CRC and answers the producer precisely.
        let mut set = match RecordBatchDecoder::decode(&mut batch.bytes.clone()) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!(%error, topic, partition, bytes = batch.bytes.len(), "record batch does not decode; forwarded unchanged");
                if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&batch.bytes);
                }
                continue;
            }
        };
        if !set.records.iter().any(is_lfs) {
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&batch.bytes);
            }
            continue;
        }
        for record in set.records.iter_mut().filter(|r| is_lfs(r)) {
            match offload(lfs, topic, partition, record).await {
                Ok(key) => keys.push(key),
                Err(failure) => {
                    delete_orphans(lfs, &keys.take()).await;
                    return Err(failure);
                }
            }
        }
        let options = RecordEncodeOptions {
            version: set.version,
            compression: set.compression,
        };
        let out = out.get_or_insert_with(|| BytesMut::from(&records[..start]));
        if let Err(e) = RecordBatchEncoder::encode(out, set.records.iter(), &options) {
            delete_orphans(lfs, &keys.take()).await;
            return Err(PartitionFailure {
                error_code: INVALID_RECORD,
                message: format!("cannot rebuild record batch: {e}"),
            });
        }
    }
    Ok(out.map(|out| (out.freeze(), keys.take())))
}

/// Whether the record asks for offload (carries `LFS_BLOB`).
pub fn is_lfs(record: &Record) -> bool {
    record.headers.contains_key(&header_name(LFS_BLOB))
}

fn header_name(name: &'static str) -> StrBytes {
    StrBytes::from_static_str(name)
}

fn header_str<'a>(record: &'a Record, name: &'static str) -> Option<&'a str> {
    record
        .headers
        .get(&header_name(name))
        .and_then(|v| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Stores one record's value and puts the envelope in its place.
async fn offload(
    lfs: &Lfs,
    topic: &str,
    partition: i32,
    record: &mut Record,
) -> Result<String, PartitionFailure> {
    let alg = match header_str(record, LFS_BLOB_ALG) {
        Some(name) if !name.trim().is_empty() => {
            ChecksumAlg::parse(name).ok_or_else(|| PartitionFailure {
                error_code: INVALID_RECORD,
                message: format!("unsupported LFS_BLOB_ALG `{name}` (sha256, md5, crc32)"),
            })?
        }
        _ => lfs.default_alg,
    };
    let identity = (record.producer_id >= 0).then_some(RecordIdentity {
        topic,
        partition,
        producer_id: record.producer_id,
        producer_epoch: record.producer_epoch,
        sequence: record.sequence,
    });
    let value = record.value.clone().unwrap_or_default();
    // The whole value is at hand: it is hashed on a blocking thread while
    // its parts upload, and the upload completes only once the checksum
    // matches. A value within one chunk is a single PUT, after the hash.
    let mut offload = Offload::begin(lfs, topic, Utc::now(), envelope::object_id(identity), alg);
    if let Err(error) = offload.write(value).await {
        offload.abort().await;
        return Err(partition_failure(error));
    }
    let key = offload.key().to_owned();
    let content_type = header_str(record, CONTENT_TYPE)
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    let expected = header_str(record, LFS_BLOB);
    let envelope = offload
        .finish(lfs, expected, content_type)
        .await
        .map_err(partition_failure)?;
    record.value = Some(Bytes::from(envelope.to_json()));
    record.headers.shift_remove(&header_name(LFS_BLOB));
    record.headers.shift_remove(&header_name(LFS_BLOB_ALG));
    Ok(key)
}

/// The error code and message a producer gets for a failed offload.
fn partition_failure(error: OffloadError) -> PartitionFailure {
    match error {
        OffloadError::TooLarge { size, max } => PartitionFailure {
            error_code: MESSAGE_TOO_LARGE,
            message: format!(
                "LFS value of {size} bytes exceeds KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE ({max})"
            ),
        },
        OffloadError::ChecksumMismatch {
            alg,
            expected,
            actual,
        } => PartitionFailure {
            error_code: INVALID_RECORD,
            message: format!("LFS_BLOB {alg} checksum mismatch: expected {expected}, got {actual}"),
        },
        OffloadError::Storage(_) => PartitionFailure {
            error_code: KAFKA_STORAGE_ERROR,
            message: "object storage unavailable; retry".into(),
        },
        OffloadError::Hashing(reason) => PartitionFailure {
            error_code: KAFKA_STORAGE_ERROR,
            message: format!("checksum task failed: {reason}"),
        },
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
