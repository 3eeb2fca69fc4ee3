//! The one offload path, shared by the Kafka Produce rewrite,
//! `POST /lfs/produce` and upload sessions:
//!
//! 1. the bytes are stored under a fresh object key while they are hashed
//!    (SHA-256, plus the algorithm the producer asked for);
//! 2. the producer's checksum, when given, is compared before the object
//!    is completed: a mismatch aborts the upload, and nothing is left;
//! 3. the envelope is built from what was stored;
//! 4. an object whose envelope does not reach Kafka is deleted
//!    ([`delete_orphans`]), or counted and logged when that fails.
//!
//! Metrics: uploads and bytes by outcome, upload duration, storage errors,
//! orphans deleted and left.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::checksum::{self, ChecksumAlg, StreamingDigest};
use super::envelope::{self, Envelope, ENVELOPE_VERSION};
use super::writer::BlobWriter;
use super::Lfs;
use crate::metrics as m;

/// Pieces at least this large are hashed on a blocking thread while they
/// upload (SHA-256 of 256 MiB takes a quarter second); smaller ones inline.
const HASH_ASIDE_FROM: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("value of {size} bytes exceeds KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE ({max})")]
    TooLarge { size: u64, max: u64 },
    #[error("{alg} checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        alg: &'static str,
        expected: String,
        actual: String,
    },
    #[error("object storage failed: {0}")]
    Storage(String),
    #[error("checksum task failed: {0}")]
    Hashing(String),
}

/// One value on its way into storage. Always ends with [`Offload::finish`]
/// or [`Offload::abort`], also after an error, so no part is left behind.
pub struct Offload {
    key: String,
    topic: String,
    created: DateTime<Utc>,
    writer: BlobWriter,
    /// `None` only while a piece is being hashed aside.
    digest: Option<StreamingDigest>,
    size: u64,
    max_size: u64,
    started: std::time::Instant,
}

impl Offload {
    /// Starts storing a value of `topic` under the object key made from
    /// `created` and `object_id`, hashed with SHA-256 and `alg`.
    pub fn begin(
        lfs: &Lfs,
        topic: &str,
        created: DateTime<Utc>,
        object_id: Uuid,
        alg: ChecksumAlg,
    ) -> Self {
        let key = envelope::object_key(&lfs.namespace, topic, created, object_id);
        Offload {
            writer: lfs.store.writer(&key),
            key,
            topic: topic.to_owned(),
            created,
            digest: Some(StreamingDigest::new(alg)),
            size: 0,
            max_size: lfs.max_blob_size,
            started: std::time::Instant::now(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next bytes of the value: refused beyond the size limit
    /// before anything of them is stored; hashed while they upload.
    pub async fn write(&mut self, data: Bytes) -> Result<(), OffloadError> {
        let size = self.size + data.len() as u64;
        if size > self.max_size {
            count_upload("too_large", 0);
            return Err(OffloadError::TooLarge {
                size,
                max: self.max_size,
            });
        }
        self.size = size;
        let mut digest = self
            .digest
            .take()
            .ok_or_else(|| OffloadError::Hashing("an earlier hash failed".into()))?;
        let written = if data.len() >= HASH_ASIDE_FROM {
            let piece = data.clone();
            let hashing = tokio::task::spawn_blocking(move || {
                digest.update(&piece);
                digest
            });
            let (hashed, written) = tokio::join!(hashing, self.writer.write(data));
            self.digest = Some(hashed.map_err(|e| OffloadError::Hashing(e.to_string()))?);
            written
        } else {
            digest.update(&data);
            self.digest = Some(digest);
            self.writer.write(data).await
        };
        written.map_err(|e| storage_error(&self.key, e))
    }

    /// Checks the producer's checksum (`expected`, hex in the requested
    /// algorithm), completes the object only when it matches, and returns
    /// the envelope. On any failure the upload is aborted.
    pub async fn finish(
        mut self,
        lfs: &Lfs,
        expected: Option<&str>,
        content_type: String,
    ) -> Result<Envelope, OffloadError> {
        let Some(digest) = self.digest.take() else {
            self.writer.abort().await;
            return Err(OffloadError::Hashing("an earlier hash failed".into()));
        };
        let sealed = seal(
            lfs,
            &self.key,
            self.size,
            digest,
            expected,
            content_type,
            self.created,
        );
        let mut envelope = match sealed {
            Ok(envelope) => envelope,
            Err(error) => {
                self.writer.abort().await;
                return Err(error);
            }
        };
        let key = self.key;
        self.writer
            .finish()
            .await
            .map_err(|e| storage_error(&key, e))?;
        to_content_key(lfs, &self.topic, &mut envelope).await?;
        metrics::histogram!(m::LFS_UPLOAD_SECONDS).record(self.started.elapsed().as_secs_f64());
        count_upload("ok", self.size);
        Ok(envelope)
    }

    /// Drops what was written; nothing is left in storage.
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

/// Checks a stored value's checksum against the producer's and builds its
/// envelope (upload sessions store their parts themselves, then seal).
pub fn seal(
    lfs: &Lfs,
    key: &str,
    size: u64,
    digest: StreamingDigest,
    expected: Option<&str>,
    content_type: String,
    created: DateTime<Utc>,
) -> Result<Envelope, OffloadError> {
    let alg = digest.alg();
    let (sha256, requested) = digest.finish();
    if let Some(expected) = expected.map(str::trim).filter(|e| !e.is_empty()) {
        if !checksum::matches(expected, &requested) {
            count_upload("checksum_mismatch", 0);
            return Err(OffloadError::ChecksumMismatch {
                alg: alg.name(),
                expected: expected.to_owned(),
                actual: requested,
            });
        }
    }
    Ok(Envelope {
        kfs_lfs: ENVELOPE_VERSION,
        bucket: lfs.store.bucket().to_owned(),
        key: key.to_owned(),
        size,
        sha256,
        checksum: Some(requested),
        checksum_alg: Some(alg.name().to_owned()),
        content_type,
        created_at: envelope::rfc3339(created),
        proxy_id: lfs.proxy_id.clone(),
    })
}

/// With content-addressed keys, moves a stored object onto its content
/// key and points the envelope there (`content_address`); on failure the
/// fresh object is deleted.
pub async fn to_content_key(
    lfs: &Lfs,
    topic: &str,
    envelope: &mut Envelope,
) -> Result<(), OffloadError> {
    use super::content_address;
    if !lfs.content_addressed || envelope.size > content_address::MAX_COPY_SIZE {
        return Ok(());
    }
    let target = content_address::key(&lfs.namespace, topic, &envelope.sha256);
    if let Err(e) = content_address::promote(&lfs.store, &envelope.key, &target).await {
        lfs.store.delete_orphan(&envelope.key).await;
        return Err(storage_error(&target, e));
    }
    envelope.key = target;
    Ok(())
}

/// Deletes objects that no envelope in Kafka points to; what storage does
/// not delete now is logged with its key, counted, and retried by the
/// store's cleanup until it is.
pub async fn delete_orphans(lfs: &Lfs, keys: &[String]) {
    for key in keys {
        lfs.store.delete_orphan(key).await;
    }
}

/// Keys of objects stored for a request that has not been forwarded yet.
/// Dropped before [`StoredKeys::take`] (the request was cut mid-way, or
/// could not be rebuilt), they are orphans and are deleted.
pub struct StoredKeys {
    store: super::store::BlobStore,
    keys: Vec<String>,
}

impl StoredKeys {
    pub fn new(lfs: &Lfs) -> Self {
        StoredKeys {
            store: lfs.store.clone(),
            keys: Vec::new(),
        }
    }

    pub fn push(&mut self, key: String) {
        self.keys.push(key);
    }

    pub fn extend(&mut self, keys: &[String]) {
        self.keys.extend_from_slice(keys);
    }

    /// The keys, no longer guarded: their envelopes are on their way.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.keys)
    }
}

impl Drop for StoredKeys {
    fn drop(&mut self) {
        let keys = self.take();
        self.store.leave_orphans(keys);
    }
}

fn storage_error(key: &str, error: impl std::fmt::Display) -> OffloadError {
    tracing::warn!(%error, key, "LFS upload failed");
    metrics::counter!(m::LFS_STORAGE_ERRORS_TOTAL).increment(1);
    count_upload("storage_error", 0);
    OffloadError::Storage(error.to_string())
}

/// Counts one offload attempt; labels are a fixed set, no topic names.
fn count_upload(outcome: &'static str, bytes: u64) {
    metrics::counter!(m::LFS_UPLOADS_TOTAL, "outcome" => outcome).increment(1);
    if bytes > 0 {
        metrics::counter!(m::LFS_UPLOAD_BYTES_TOTAL, "outcome" => outcome).increment(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lfs::store::BlobStore;
    use crate::lfs::TopicFilter;

    fn local(dir: &std::path::Path, max_blob_size: u64) -> Lfs {
        Lfs {
            store: BlobStore::local(dir, 5 * 1024 * 1024).unwrap(),
            namespace: "ns".into(),
            proxy_id: "p".into(),
            max_blob_size,
            default_alg: ChecksumAlg::Sha256,
            topics: TopicFilter::default(),
            content_addressed: false,
        }
    }

    fn files(dir: &std::path::Path) -> usize {
        walk(dir)
    }

    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn stores_in_pieces_and_describes_what_it_stored() {
        let dir = tempfile::tempdir().unwrap();
        let lfs = local(dir.path(), 1 << 30);
        let value: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let sha = ChecksumAlg::Sha256.hex_digest(&value);
        let mut offload =
            Offload::begin(&lfs, "t", Utc::now(), Uuid::new_v4(), ChecksumAlg::Sha256);
        // One large piece hashed aside, then small ones inline.
        offload
            .write(Bytes::copy_from_slice(&value[..2 * 1024 * 1024]))
            .await
            .unwrap();
        for chunk in value[2 * 1024 * 1024..].chunks(100_000) {
            offload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let key = offload.key().to_owned();
        let envelope = offload
            .finish(&lfs, Some(&sha.to_uppercase()), "application/pdf".into())
            .await
            .unwrap();
        assert_eq!(envelope.key, key);
        assert_eq!(envelope.size, value.len() as u64);
        assert_eq!(envelope.sha256, sha);
        assert_eq!(envelope.content_type, "application/pdf");
        assert_eq!(lfs.store.get(&key).await.unwrap().as_ref(), &value[..]);
    }

    #[tokio::test]
    async fn a_wrong_checksum_or_size_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lfs = local(dir.path(), 10);
        let mut offload = Offload::begin(&lfs, "t", Utc::now(), Uuid::new_v4(), ChecksumAlg::Md5);
        offload
            .write(Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let error = offload
            .finish(&lfs, Some("00"), "x".into())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, OffloadError::ChecksumMismatch { alg: "md5", expected, .. } if expected == "00"),
            "{error}"
        );
        let mut offload =
            Offload::begin(&lfs, "t", Utc::now(), Uuid::new_v4(), ChecksumAlg::Sha256);
        offload
            .write(Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let error = offload.write(Bytes::from_static(b"!")).await.unwrap_err();
        assert!(
            matches!(error, OffloadError::TooLarge { size: 11, max: 10 }),
            "{error}"
        );
        offload.abort().await;
        assert_eq!(files(dir.path()), 0, "nothing stored");
    }
}
