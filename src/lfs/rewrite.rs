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

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use super::checksum::{self, ChecksumAlg};
use super::envelope::{self, Envelope, RecordIdentity, DEFAULT_CONTENT_TYPE, ENVELOPE_VERSION};
use super::store::BlobStore;
use crate::kafka::wire::frame::{Frame, RequestHeaderPeek};
use crate::metrics as m;

/// The record header that asks for offload.
pub const LFS_BLOB: &str = "LFS_BLOB";
/// The optional record header naming the checksum algorithm.
pub const LFS_BLOB_ALG: &str = "LFS_BLOB_ALG";
/// The record header whose value becomes the envelope's `content_type`.
pub const CONTENT_TYPE: &str = "content-type";

pub use crate::kafka::wire::codes::{INVALID_RECORD, KAFKA_STORAGE_ERROR, MESSAGE_TOO_LARGE};

/// Which topics may be offloaded.
#[derive(Debug, Clone, Default)]
pub struct TopicFilter(Option<HashSet<String>>);

impl TopicFilter {
    /// `None` or an empty list: every topic.
    pub fn new(topics: Option<Vec<String>>) -> Self {
        TopicFilter(
            topics
                .filter(|t| !t.is_empty())
                .map(|t| t.into_iter().collect()),
        )
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(topic))
    }
}

/// Everything the rewrite needs.
#[derive(Debug, Clone)]
pub struct Lfs {
    pub store: BlobStore,
    pub namespace: String,
    pub proxy_id: String,
    pub max_blob_size: u64,
    pub default_alg: ChecksumAlg,
    pub topics: TopicFilter,
}

/// A partition the proxy answers itself, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedPartition {
    pub topic: String,
    pub partition: i32,
    pub error_code: i16,
    pub message: String,
}

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

    let mut changed = false;
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
        let encode_err = |source| RewriteError::Encode { version, source };
        let size = request.compute_size(version).map_err(encode_err)?;
        let mut out = BytesMut::with_capacity(4 + offset + size);
        out.extend_from_slice(&((offset + size) as i32).to_be_bytes());
        out.extend_from_slice(&body[..offset]);
        request.encode(&mut out, version).map_err(encode_err)?;
        Some(Frame::from_wire(out.freeze()))
    };
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
    fn magic(&self) -> i8 {
        self.bytes.get(16).map(|m| *m as i8).unwrap_or(-1)
    }

    fn attributes(&self) -> i16 {
        match self.bytes.get(21..23) {
            Some(a) => i16::from_be_bytes([a[0], a[1]]),
            None => 0,
        }
    }

    fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }

    /// Whether the header name appears in the batch's records. Uncompressed
    /// batches are searched as they are; compressed ones after inflating
    /// only the records section (much cheaper than decoding every record).
    /// A false positive (the name inside a value) only costs a decode.
    fn mentions_lfs(&self) -> bool {
        use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
        /// Bytes of a v2 batch header before its records.
        const RECORDS_OFFSET: usize = 61;
        if self.bytes.len() < RECORDS_OFFSET {
            return false;
        }
        let mut records = self.bytes.slice(RECORDS_OFFSET..);
        let search = |buf: &mut Bytes| Ok(memchr::memmem::find(buf, LFS_BLOB.as_bytes()).is_some());
        let found = match self.attributes() & 0x07 {
            0 => return memchr::memmem::find(&records, LFS_BLOB.as_bytes()).is_some(),
            1 => Gzip::decompress(&mut records, search),
            2 => Snappy::decompress(&mut records, search),
            3 => Lz4::decompress(&mut records, search),
            4 => Zstd::decompress(&mut records, search),
            _ => Ok(true),
        };
        // A batch that does not inflate is left to the full decoder, which
        // reports it and forwards the batch unchanged.
        found.unwrap_or(true)
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
    let mut keys: Vec<String> = Vec::new();
    let mut offset = 0;
    for batch in split_batches(records) {
        let start = offset;
        offset += batch.bytes.len();
        let candidate = batch.magic() == 2 && !batch.is_control() && batch.mentions_lfs();
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
                    delete_all(lfs, &keys).await;
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
            delete_all(lfs, &keys).await;
            return Err(PartitionFailure {
                error_code: INVALID_RECORD,
                message: format!("cannot rebuild record batch: {e}"),
            });
        }
    }
    Ok(out.map(|out| (out.freeze(), keys)))
}

fn is_lfs(record: &Record) -> bool {
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
    let value = record.value.clone().unwrap_or_default();
    if value.len() as u64 > lfs.max_blob_size {
        count_upload("too_large", 0);
        return Err(PartitionFailure {
            error_code: MESSAGE_TOO_LARGE,
            message: format!(
                "LFS value of {} bytes exceeds KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE ({})",
                value.len(),
                lfs.max_blob_size
            ),
        });
    }
    let alg = match header_str(record, LFS_BLOB_ALG) {
        Some(name) if !name.trim().is_empty() => {
            ChecksumAlg::parse(name).ok_or_else(|| PartitionFailure {
                error_code: INVALID_RECORD,
                message: format!("unsupported LFS_BLOB_ALG `{name}` (sha256, md5, crc32)"),
            })?
        }
        _ => lfs.default_alg,
    };
    let expected = header_str(record, LFS_BLOB)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let identity = (record.producer_id >= 0).then_some(RecordIdentity {
        topic,
        partition,
        producer_id: record.producer_id,
        producer_epoch: record.producer_epoch,
        sequence: record.sequence,
    });
    let now = Utc::now();
    let key = envelope::object_key(&lfs.namespace, topic, now, envelope::object_id(identity));
    // Hashing 256 MiB takes a quarter second: it runs on a blocking thread
    // while the parts upload, and the multipart upload is completed only
    // once the checksum is known to match (otherwise it is aborted, and
    // nothing is left behind). A value within one chunk is a single PUT,
    // sent after the hash.
    let started = std::time::Instant::now();
    let hashing = {
        let value = value.clone();
        tokio::task::spawn_blocking(move || {
            let sha256 = ChecksumAlg::Sha256.hex_digest(&value);
            let requested = if alg == ChecksumAlg::Sha256 {
                sha256.clone()
            } else {
                alg.hex_digest(&value)
            };
            (sha256, requested)
        })
    };
    let mut writer = lfs.store.writer(&key);
    let (hashed, written) = tokio::join!(hashing, writer.write(value.clone()));
    let (sha256, requested) = match hashed {
        Ok(digests) => digests,
        Err(e) => {
            writer.abort().await;
            return Err(PartitionFailure {
                error_code: KAFKA_STORAGE_ERROR,
                message: format!("checksum task failed: {e}"),
            });
        }
    };
    if let Some(expected) = expected {
        if !checksum::matches(expected, &requested) {
            writer.abort().await;
            count_upload("checksum_mismatch", 0);
            return Err(PartitionFailure {
                error_code: INVALID_RECORD,
                message: format!(
                    "LFS_BLOB {} checksum mismatch: expected {expected}, got {requested}",
                    alg.name()
                ),
            });
        }
    }
    let stored = match written {
        Ok(()) => writer.finish().await,
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    };
    stored.map_err(|e| {
        tracing::warn!(error = %e, topic, partition, "LFS upload failed");
        metrics::counter!(m::LFS_STORAGE_ERRORS_TOTAL).increment(1);
        count_upload("storage_error", 0);
        PartitionFailure {
            error_code: KAFKA_STORAGE_ERROR,
            message: "object storage unavailable; retry".into(),
        }
    })?;
    metrics::histogram!(m::LFS_UPLOAD_SECONDS).record(started.elapsed().as_secs_f64());
    count_upload("ok", value.len() as u64);
    let content_type = header_str(record, CONTENT_TYPE)
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    let envelope = Envelope {
        kfs_lfs: ENVELOPE_VERSION,
        bucket: lfs.store.bucket().to_owned(),
        key: key.clone(),
        size: value.len() as u64,
        sha256,
        checksum: Some(requested),
        checksum_alg: Some(alg.name().to_owned()),
        content_type,
        created_at: envelope::rfc3339(now),
        proxy_id: lfs.proxy_id.clone(),
    };
    record.value = Some(Bytes::from(envelope.to_json()));
    record.headers.shift_remove(&header_name(LFS_BLOB));
    record.headers.shift_remove(&header_name(LFS_BLOB_ALG));
    Ok(key)
}

/// Counts one offload attempt; labels are a fixed set, no topic names.
fn count_upload(outcome: &'static str, bytes: u64) {
    metrics::counter!(m::LFS_UPLOADS_TOTAL, "outcome" => outcome).increment(1);
    if bytes > 0 {
        metrics::counter!(m::LFS_UPLOAD_BYTES_TOTAL, "outcome" => outcome).increment(bytes);
    }
}

/// Deletes objects that no envelope will point to; failures are counted
/// and logged with their keys.
pub async fn delete_all(lfs: &Lfs, keys: &[String]) {
    for key in keys {
        match lfs.store.delete(key).await {
            Ok(()) => metrics::counter!(m::LFS_ORPHANS_DELETED).increment(1),
            Err(error) => {
                metrics::counter!(m::LFS_ORPHANS_LEFT).increment(1);
                tracing::error!(%error, key, "orphaned LFS object could not be deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::wire::frame::peek_request_header;
    use kafka_protocol::messages::produce_request::TopicProduceData;
    use kafka_protocol::messages::{ApiKey, RequestHeader, TopicName};
    use kafka_protocol::records::{Compression, TimestampType};

    fn record(
        offset: i64,
        value: &[u8],
        headers: &[(&'static str, &[u8])],
        producer_id: i64,
        sequence: i32,
    ) -> Record {
        let mut r = Record {
            transactional: producer_id >= 0,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 3,
            producer_id,
            producer_epoch: if producer_id >= 0 { 2 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset,
            sequence,
            timestamp: 1_700_000_000_000 + offset * 7,
            key: Some(Bytes::from(format!("key-{offset}"))),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        };
        for (k, v) in headers {
            r.headers.insert(
                StrBytes::from_static_str(k),
                Some(Bytes::copy_from_slice(v)),
            );
        }
        r
    }

    fn batch(records: &[Record], compression: Compression) -> Bytes {
        crate::kafka::wire::batches::encode_v2(records, compression).unwrap()
    }

    fn produce_frame(version: i16, partitions: Vec<(&str, i32, Bytes)>) -> Frame {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for (topic, index, records) in partitions {
            let data = PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(records));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partition_data(vec![data]),
                ),
            }
        }
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(topics);
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(version)
            .with_correlation_id(9)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut body, ApiKey::Produce.request_header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        Frame::from_body(&body)
    }

    fn lfs(dir: &std::path::Path) -> Lfs {
        Lfs {
            store: BlobStore::local(dir, 5 * 1024 * 1024).unwrap(),
            namespace: "default".into(),
            proxy_id: "proxy-test".into(),
            max_blob_size: 1024 * 1024,
            default_alg: ChecksumAlg::Sha256,
            topics: TopicFilter::default(),
        }
    }

    async fn rewrite(lfs: &Lfs, frame: &Frame) -> Option<RewrittenProduce> {
        let body = frame.body();
        let header = peek_request_header(&body).unwrap();
        rewrite_produce(lfs, &header, frame).await.unwrap()
    }

    fn decode_partitions(frame: &Frame, version: i16) -> Vec<(String, i32, Bytes)> {
        let body = frame.body();
        let header = peek_request_header(&body).unwrap();
        let mut buf = body.slice(header.body_offset.unwrap()..);
        let r = ProduceRequest::decode(&mut buf, version).unwrap();
        let mut out = Vec::new();
        for t in r.topic_data {
            for p in t.partition_data {
                out.push((t.name.0.to_string(), p.index, p.records.unwrap()));
            }
        }
        out
    }

    #[tokio::test]
    async fn plain_requests_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lfs = lfs(dir.path());
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let frame = produce_frame(
                9,
                vec![(
                    "t",
                    0,
                    batch(&[record(0, b"plain", &[("h", b"v")], -1, -1)], compression),
                )],
            );
            assert!(rewrite(&lfs, &frame).await.is_none());
        }
    }

    #[tokio::test]
    async fn every_codec_rebuilds_only_lfs_batches_and_keeps_batch_fields() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let lfs = lfs(dir.path());
            let blob = vec![0xabu8; 300_000];
            let plain = batch(
                &[
                    record(0, b"ordinary-0", &[], 7, 10),
                    record(1, b"ordinary-1", &[], 7, 11),
                ],
                compression,
            );
            let mixed = batch(
                &[
                    record(2, b"ordinary-2", &[("keep", b"me")], 7, 12),
                    record(
                        3,
                        &blob,
                        &[
                            (LFS_BLOB, b""),
                            ("content-type", b"image/png"),
                            ("keep", b"too"),
                        ],
                        7,
                        13,
                    ),
                ],
                compression,
            );
            let mut records = BytesMut::new();
            records.extend_from_slice(&plain);
            records.extend_from_slice(&mixed);
            let frame = produce_frame(9, vec![("t", 4, records.freeze())]);
            let out = rewrite(&lfs, &frame).await.expect("rewritten");
            assert!(out.failed.is_empty());
            let parts = decode_partitions(out.frame.as_ref().unwrap(), 9);
            let rewritten = &parts[0].2;
            assert_eq!(
                &rewritten[..plain.len()],
                &plain[..],
                "{compression:?}: untouched batch keeps its bytes"
            );

            let mut rest = rewritten.slice(plain.len()..);
            let set = RecordBatchDecoder::decode(&mut rest).unwrap();
            assert!(rest.is_empty(), "exactly one batch follows");
            assert_eq!(set.compression, compression);
            assert_eq!(set.records.len(), 2, "no record dropped");
            let (a, b) = (&set.records[0], &set.records[1]);
            assert_eq!((a.offset, b.offset), (2, 3));
            assert_eq!((a.sequence, b.sequence), (12, 13));
            assert_eq!(
                (a.producer_id, a.producer_epoch, a.transactional),
                (7, 2, true)
            );
            assert_eq!(a.partition_leader_epoch, 3);
            assert_eq!(
                (a.timestamp, b.timestamp),
                (1_700_000_000_014, 1_700_000_000_021)
            );
            assert_eq!(a.value.as_deref(), Some(&b"ordinary-2"[..]));

            let env: Envelope = serde_json::from_slice(b.value.as_ref().unwrap()).unwrap();
            assert_eq!(env.size, blob.len() as u64);
            assert_eq!(env.sha256, ChecksumAlg::Sha256.hex_digest(&blob));
            assert_eq!(env.content_type, "image/png");
            assert_eq!(env.proxy_id, "proxy-test");
            assert!(env.key.starts_with("default/t/lfs/"), "{}", env.key);
            assert!(!b.headers.contains_key(&header_name(LFS_BLOB)));
            assert!(b.headers.contains_key(&StrBytes::from_static_str("keep")));
            assert!(b
                .headers
                .contains_key(&StrBytes::from_static_str("content-type")));
            assert_eq!(
                lfs.store.get(&env.key).await.unwrap(),
                Bytes::from(blob.clone())
            );
            assert_eq!(
                out.uploads,
                vec![PartitionUploads {
                    topic: "t".into(),
                    partition: 4,
                    keys: vec![env.key.clone()]
                }]
            );
        }
    }

    #[tokio::test]
    async fn failures_are_per_partition_and_leave_no_object() {
        let dir = tempfile::tempdir().unwrap();
        let lfs = lfs(dir.path());
        let good = batch(
            &[record(0, b"fine", &[(LFS_BLOB, b"")], -1, -1)],
            Compression::None,
        );
        let too_big = batch(
            &[record(
                0,
                &vec![1u8; 2 * 1024 * 1024],
                &[(LFS_BLOB, b"")],
                -1,
                -1,
            )],
            Compression::None,
        );
        let md5_bad = batch(
            &[
                record(0, b"first ok", &[(LFS_BLOB, b"")], -1, -1),
                record(
                    1,
                    b"payload",
                    &[
                        (LFS_BLOB, b"00000000000000000000000000000000"),
                        (LFS_BLOB_ALG, b"md5"),
                    ],
                    -1,
                    -1,
                ),
            ],
            Compression::Lz4,
        );
        let crc_ok = batch(
            &[record(
                0,
                b"123456789",
                &[(LFS_BLOB, b"CBF43926"), (LFS_BLOB_ALG, b"crc32")],
                -1,
                -1,
            )],
            Compression::None,
        );
        let frame = produce_frame(
            7,
            vec![
                ("t", 0, good),
                ("t", 1, too_big),
                ("u", 0, md5_bad),
                ("u", 1, crc_ok),
            ],
        );
        let out = rewrite(&lfs, &frame).await.unwrap();
        let failed: Vec<_> = out
            .failed
            .iter()
            .map(|f| (f.topic.as_str(), f.partition, f.error_code))
            .collect();
        assert_eq!(
            failed,
            vec![("t", 1, MESSAGE_TOO_LARGE), ("u", 0, INVALID_RECORD)]
        );
        assert!(
            out.failed[1].message.contains("checksum mismatch"),
            "{}",
            out.failed[1].message
        );
        let forwarded: Vec<_> = decode_partitions(out.frame.as_ref().unwrap(), 7)
            .into_iter()
            .map(|(t, p, _)| (t, p))
            .collect();
        assert_eq!(forwarded, vec![("t".to_string(), 0), ("u".to_string(), 1)]);
        // Only the two forwarded partitions' objects exist: the first record
        // of the failed lz4 batch was uploaded, then deleted.
        let stored = lfs.store.list("default").await.unwrap();
        assert_eq!(stored.len(), 2, "{stored:?}");
        let envelope_of_crc: Vec<String> =
            out.uploads.iter().flat_map(|u| u.keys.clone()).collect();
        assert_eq!(envelope_of_crc.len(), 2);
    }

    #[tokio::test]
    async fn multipart_values_are_hashed_while_uploading_and_a_mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut lfs = lfs(dir.path());
        // 64 KiB parts: a 1 MiB value is a multipart upload of 16 parts.
        lfs.store = BlobStore::local(dir.path(), 64 * 1024).unwrap();
        let value: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let sha = ChecksumAlg::Sha256.hex_digest(&value);
        let wrong = ChecksumAlg::Sha256.hex_digest(b"something else");
        let frame = |checksum: &str| {
            produce_frame(
                9,
                vec![(
                    "t",
                    0,
                    batch(
                        &[record(
                            0,
                            &value,
                            &[(LFS_BLOB, checksum.as_bytes())],
                            -1,
                            -1,
                        )],
                        Compression::None,
                    ),
                )],
            )
        };
        let refused = rewrite(&lfs, &frame(&wrong)).await.unwrap();
        assert_eq!(refused.failed.len(), 1);
        assert_eq!(refused.failed[0].error_code, INVALID_RECORD);
        assert!(lfs.store.list("").await.unwrap().is_empty());
        let leftovers: Vec<_> = walk(dir.path());
        assert!(leftovers.is_empty(), "parts left behind: {leftovers:?}");

        let stored = rewrite(&lfs, &frame(&sha)).await.unwrap();
        assert!(stored.failed.is_empty());
        let key = &stored.uploads[0].keys[0];
        assert_eq!(lfs.store.get(key).await.unwrap(), Bytes::from(value));
    }

    /// Every file under `dir`, staging files included.
    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[tokio::test]
    async fn idempotent_retries_reuse_the_object_key() {
        let dir = tempfile::tempdir().unwrap();
        let lfs = lfs(dir.path());
        let frame = produce_frame(
            9,
            vec![(
                "t",
                0,
                batch(
                    &[record(0, b"v", &[(LFS_BLOB, b"")], 99, 5)],
                    Compression::None,
                ),
            )],
        );
        let first = rewrite(&lfs, &frame).await.unwrap();
        let again = rewrite(&lfs, &frame).await.unwrap();
        assert_eq!(first.uploads, again.uploads);
        assert_eq!(lfs.store.list("default").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn topic_filter_confines_offload() {
        let dir = tempfile::tempdir().unwrap();
        let mut lfs = lfs(dir.path());
        lfs.topics = TopicFilter::new(Some(vec!["images".into()]));
        let frame = produce_frame(
            9,
            vec![(
                "other",
                0,
                batch(
                    &[record(0, b"v", &[(LFS_BLOB, b"")], -1, -1)],
                    Compression::None,
                ),
            )],
        );
        assert!(rewrite(&lfs, &frame).await.is_none());
        let frame = produce_frame(
            9,
            vec![(
                "images",
                0,
                batch(
                    &[record(0, b"v", &[(LFS_BLOB, b"")], -1, -1)],
                    Compression::None,
                ),
            )],
        );
        assert!(rewrite(&lfs, &frame).await.is_some());
    }
}
