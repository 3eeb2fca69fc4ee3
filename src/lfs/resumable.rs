//! Multipart uploads that outlive the request, and the process, that
//! started them: an upload is named by its object key and S3 upload id
//! (or, on a local store, a staging file at a known key), so any replica
//! sharing the store, or the same proxy after a restart, can add a part,
//! complete or abort it. Upload sessions use these.
//!
//! Unlike [`super::multipart`], nothing here is registered with the
//! store's cleanup: a proxy shutting down must leave the upload open so
//! the session goes on elsewhere; the session's own expiry ends it (any
//! replica aborts an expired session).
//!
//! - S3: `CreateMultipartUpload`, `UploadPart` with the part's number,
//!   `CompleteMultipartUpload` with the parts' ETags, `AbortMultipartUpload`.
//!   A part sent again with the same number replaces the earlier one.
//! - Local store: every part is written into one staging file at its
//!   offset (parts arrive in order, so the offset is the bytes before it);
//!   completing renames the file onto the object's key, atomically and
//!   without copying; aborting deletes it.

use std::path::PathBuf;

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::store::{BlobStore, StoreError};

/// Where an upload lives: enough for any process to continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableUpload {
    /// The object's key once completed.
    pub key: String,
    /// The S3 multipart upload id; `None` on a local store.
    pub upload_id: Option<String>,
    /// The local store's staging file (a key under the store's root).
    pub staging: String,
}

fn put_error(key: &str, source: object_store::Error) -> StoreError {
    StoreError::Put {
        key: key.to_owned(),
        source,
    }
}

fn io_error(key: &str, e: std::io::Error) -> StoreError {
    put_error(
        key,
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        },
    )
}

impl BlobStore {
    /// Starts an upload of `key`; on a local store its bytes are staged at
    /// the key `staging`.
    pub async fn start_resumable(
        &self,
        key: &str,
        staging: &str,
    ) -> Result<ResumableUpload, StoreError> {
        self.cleanup()
            .check_open()
            .map_err(|e| StoreError::Closed(e.to_string()))?;
        let upload_id = match &self.backend().s3 {
            Some(s3) => Some(
                s3.create_multipart(&Path::from(key))
                    .await
                    .map_err(|e| put_error(key, e))?,
            ),
            None => None,
        };
        Ok(ResumableUpload {
            key: key.to_owned(),
            upload_id,
            staging: staging.to_owned(),
        })
    }

    /// Stores part `number` (from 1), whose first byte is at `offset` of
    /// the object. Returns the part's S3 ETag (what completing needs);
    /// `None` on a local store.
    pub async fn put_resumable_part(
        &self,
        upload: &ResumableUpload,
        number: u32,
        offset: u64,
        data: Bytes,
    ) -> Result<Option<String>, StoreError> {
        match (&self.backend().s3, &upload.upload_id) {
            (Some(s3), Some(id)) => {
                let index = number.saturating_sub(1) as usize;
                let part = s3
                    .put_part(&Path::from(upload.key.as_str()), id, index, data.into())
                    .await
                    .map_err(|e| put_error(&upload.key, e))?;
                Ok(Some(part.content_id))
            }
            _ => {
                let path = self.local_staging(upload)?;
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    file.write_all_at(&data, offset)?;
                    file.sync_data()
                })
                .await
                .map_err(|e| io_error(&upload.key, std::io::Error::other(e.to_string())))?
                .map_err(|e| io_error(&upload.key, e))?;
                Ok(None)
            }
        }
    }

    fn local_staging(&self, upload: &ResumableUpload) -> Result<PathBuf, StoreError> {
        self.local_file(&upload.staging).ok_or_else(|| {
            StoreError::Config(format!(
                "upload of {} has no S3 upload id on an S3 store",
                upload.key
            ))
        })
    }

    /// Makes the object of `size` bytes visible from its parts' ETags (S3)
    /// or its staging file (local).
    pub async fn complete_resumable(
        &self,
        upload: &ResumableUpload,
        etags: Vec<String>,
        size: u64,
    ) -> Result<(), StoreError> {
        match (&self.backend().s3, &upload.upload_id) {
            (Some(s3), Some(id)) => {
                let parts = etags
                    .into_iter()
                    .map(|content_id| PartId { content_id })
                    .collect();
                s3.complete_multipart(&Path::from(upload.key.as_str()), id, parts)
                    .await
                    .map(drop)
                    .map_err(|e| put_error(&upload.key, e))
            }
            _ => {
                let staging = self.local_staging(upload)?;
                let target = self
                    .local_file(&upload.key)
                    .ok_or_else(|| StoreError::Config("not a local store".into()))?;
                tokio::task::spawn_blocking(move || {
                    let staged = std::fs::metadata(&staging)?.len();
                    if staged != size {
                        return Err(std::io::Error::other(format!(
                            "the staged upload holds {staged} bytes, {size} expected"
                        )));
                    }
                    if let Some(dir) = target.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::rename(&staging, &target)
                })
                .await
                .map_err(|e| io_error(&upload.key, std::io::Error::other(e.to_string())))?
                .map_err(|e| io_error(&upload.key, e))
            }
        }
    }

    /// Drops every part; an upload already gone counts as aborted.
    pub async fn abort_resumable(&self, upload: &ResumableUpload) -> Result<(), StoreError> {
        let failed = |source| StoreError::Delete {
            key: upload.key.clone(),
            source,
        };
        match (&self.backend().s3, &upload.upload_id) {
            (Some(s3), Some(id)) => {
                match s3
                    .abort_multipart(&Path::from(upload.key.as_str()), id)
                    .await
                {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(failed(e)),
                }
            }
            _ => self.delete(&upload.staging).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_upload_goes_on_in_another_store_handle_and_completes_by_rename() {
        let dir = tempfile::tempdir().unwrap();
        let a = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let b = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let upload = a
            .start_resumable("ns/t/lfs/2026/01/01/obj-x", "_lfs_uploads/ns/u1/data")
            .await
            .unwrap();
        assert_eq!(upload.upload_id, None);
        a.put_resumable_part(&upload, 1, 0, Bytes::from_static(b"hello "))
            .await
            .unwrap();
        // The second part from "another replica", and the first again.
        b.put_resumable_part(&upload, 2, 6, Bytes::from_static(b"world"))
            .await
            .unwrap();
        b.put_resumable_part(&upload, 1, 0, Bytes::from_static(b"hello "))
            .await
            .unwrap();
        assert!(
            b.complete_resumable(&upload, vec![], 12).await.is_err(),
            "size checked"
        );
        b.complete_resumable(&upload, vec![], 11).await.unwrap();
        assert_eq!(a.get(&upload.key).await.unwrap(), &b"hello world"[..]);
        assert!(!dir.path().join("_lfs_uploads/ns/u1/data").exists());

        let other = a
            .start_resumable("ns/t/lfs/2026/01/01/obj-y", "_lfs_uploads/ns/u2/data")
            .await
            .unwrap();
        a.put_resumable_part(&other, 1, 0, Bytes::from_static(b"x"))
            .await
            .unwrap();
        b.abort_resumable(&other).await.unwrap();
        b.abort_resumable(&other).await.unwrap();
        assert!(!dir.path().join("_lfs_uploads/ns/u2/data").exists());
    }
}
