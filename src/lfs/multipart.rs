//! One multipart upload whose end the proxy always sees: completed, or
//! aborted, or handed to the cleanup.
//!
//! object_store's own `WriteMultipart` hides the S3 upload id, so an abort
//! that fails cannot be tried again later. Here S3 uploads go through
//! `MultipartStore` (create, parts by index, complete, abort by id), and
//! the id is recorded with the cleanup ([`Ticket`]) for as long as the
//! upload is open. A local store keeps object_store's staging file beside
//! the object (`{key}#{n}`), which the cleanup can remove by name.
//!
//! Parts upload on their own tasks, at most as many at once as the caller
//! waits for ([`Multipart::wait_for_capacity`]).

use std::sync::Arc;

use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinSet;

use super::cleanup::{Cleanup, Leftover, Ticket};
use super::store::StoreError;

enum Upload {
    S3 { s3: Arc<AmazonS3>, id: String },
    Local(Box<dyn MultipartUpload>),
}

/// How long an abort or delete on a request's path may wait for storage
/// before it is left to the cleanup's retry queue.
pub const INLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

type PartResult = Result<(usize, Option<PartId>), object_store::Error>;

pub struct Multipart {
    key: String,
    path: Path,
    upload: Upload,
    ticket: Ticket,
    running: JoinSet<PartResult>,
    /// S3 part ids by index.
    parts: Vec<Option<PartId>>,
    next_index: usize,
    cleanup: Arc<Cleanup>,
}

impl Multipart {
    /// Starts an upload of `key`: S3 by id when `s3` is set, else through
    /// `store`'s own multipart upload (a local staging file).
    pub async fn start(
        store: &Arc<dyn ObjectStore>,
        s3: Option<&Arc<AmazonS3>>,
        cleanup: &Arc<Cleanup>,
        key: &str,
    ) -> Result<Self, StoreError> {
        let put_error = |source| StoreError::Put {
            key: key.to_owned(),
            source,
        };
        cleanup
            .check_open()
            .map_err(|e| StoreError::Closed(e.to_string()))?;
        let path = Path::from(key);
        let (upload, leftover) = match s3 {
            Some(s3) => {
                let id = match s3.create_multipart(&path).await {
                    Ok(id) => id,
                    Err(error) => {
                        let unconfirmed = Leftover::Unconfirmed {
                            key: key.to_owned(),
                        };
                        cleanup.check_later(unconfirmed, &error.to_string());
                        return Err(put_error(error));
                    }
                };
                let leftover = Leftover::Multipart {
                    key: key.to_owned(),
                    upload_id: id.clone(),
                };
                (
                    Upload::S3 {
                        s3: Arc::clone(s3),
                        id,
                    },
                    leftover,
                )
            }
            None => {
                let upload = store.put_multipart(&path).await.map_err(put_error)?;
                (
                    Upload::Local(upload),
                    Leftover::Staging {
                        key: key.to_owned(),
                    },
                )
            }
        };
        let ticket = match cleanup.register(leftover) {
            Ok(ticket) => ticket,
            Err((closed, leftover)) => {
                // Shutdown began while the upload was being created.
                cleanup.remove_or_retry(leftover).await;
                return Err(StoreError::Closed(closed.to_string()));
            }
        };
        Ok(Multipart {
            key: key.to_owned(),
            path,
            upload,
            ticket,
            running: JoinSet::new(),
            parts: Vec::new(),
            next_index: 0,
            cleanup: Arc::clone(cleanup),
        })
    }

    fn error(&self, source: object_store::Error) -> StoreError {
        StoreError::Put {
            key: self.key.clone(),
            source,
        }
    }

    /// Starts uploading the next part.
    pub fn put_part(&mut self, payload: PutPayload) {
        let index = self.next_index;
        self.next_index += 1;
        match &mut self.upload {
            Upload::S3 { s3, id } => {
                let (s3, id, path) = (Arc::clone(s3), id.clone(), self.path.clone());
                self.running.spawn(async move {
                    let part = s3.put_part(&path, &id, index, payload).await?;
                    Ok((index, Some(part)))
                });
            }
            Upload::Local(upload) => {
                let part = upload.put_part(payload);
                self.running
                    .spawn(async move { part.await.map(|()| (index, None)) });
            }
        }
    }

    /// Waits until fewer than `max` parts are uploading.
    pub async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        while self.running.len() >= max.max(1) {
            self.join_one().await?;
        }
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        let Some(joined) = self.running.join_next().await else {
            return Ok(());
        };
        let (index, part) = match joined {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(self.error(e)),
            Err(e) => {
                return Err(self.error(object_store::Error::Generic {
                    store: "kafka-lfs-proxy",
                    source: format!("part upload task: {e}").into(),
                }))
            }
        };
        if self.parts.len() <= index {
            self.parts.resize(index + 1, None);
        }
        self.parts[index] = part;
        Ok(())
    }

    /// Waits for every part, then completes the object. On failure the
    /// upload is aborted (or handed to the cleanup).
    pub async fn complete(mut self) -> Result<(), StoreError> {
        let result = self.complete_parts().await;
        match result {
            Ok(()) => {
                self.ticket.settle();
                self.cleanup.stored(&self.key);
                Ok(())
            }
            Err(e) => {
                let s3 = matches!(self.upload, Upload::S3 { .. });
                let (cleanup, key) = (Arc::clone(&self.cleanup), self.key.clone());
                self.abort().await;
                if s3 {
                    // A completion that timed out may still be carried out.
                    cleanup.check_later(Leftover::object(&key), &e.to_string());
                }
                Err(e)
            }
        }
    }

    async fn complete_parts(&mut self) -> Result<(), StoreError> {
        while !self.running.is_empty() {
            self.join_one().await?;
        }
        match &mut self.upload {
            Upload::S3 { s3, id } => {
                let parts: Option<Vec<PartId>> =
                    std::mem::take(&mut self.parts).into_iter().collect();
                let Some(parts) = parts else {
                    return Err(StoreError::Put {
                        key: self.key.clone(),
                        source: object_store::Error::Generic {
                            store: "kafka-lfs-proxy",
                            source: "a part has no id".into(),
                        },
                    });
                };
                let done = s3.complete_multipart(&self.path, id, parts).await;
                done.map(drop).map_err(|e| self.error(e))
            }
            Upload::Local(upload) => {
                let done = upload.complete().await;
                done.map(drop).map_err(|e| self.error(e))
            }
        }
    }

    /// Drops what was uploaded. An abort storage does not answer is
    /// retried by the cleanup until it does.
    pub async fn abort(mut self) {
        self.running.abort_all();
        // A failed request answers its producer only after this: a store
        // that is down or stalled gets a short wait, then the queue.
        let aborted = tokio::time::timeout(INLINE_WAIT, self.abort_upload()).await;
        match aborted {
            Ok(Ok(())) => self.ticket.settle(),
            Ok(Err(error)) => self.ticket.abort_failed(&error.to_string()),
            Err(_) => self
                .ticket
                .abort_failed(&format!("no answer within {INLINE_WAIT:?}")),
        }
    }

    async fn abort_upload(&mut self) -> Result<(), object_store::Error> {
        match &mut self.upload {
            Upload::S3 { s3, id } => match s3.abort_multipart(&self.path, id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
            Upload::Local(upload) => match upload.abort().await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                // Already aborted by the shutdown flush: the file is gone.
                Err(e) if is_missing_file(&e) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}

fn is_missing_file(error: &object_store::Error) -> bool {
    use std::error::Error;
    let mut source: Option<&dyn Error> = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::NotFound;
        }
        source = e.source();
    }
    false
}

/// A multipart upload driven part by part from outside (upload sessions).
/// Each part is stored before `put_part` returns.
pub struct PartUpload {
    upload: Multipart,
}

impl std::fmt::Debug for PartUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartUpload")
            .field("key", &self.upload.key)
            .finish()
    }
}

impl PartUpload {
    pub fn new(upload: Multipart) -> Self {
        PartUpload { upload }
    }

    pub async fn put_part(&mut self, data: bytes::Bytes) -> Result<(), StoreError> {
        self.upload.put_part(PutPayload::from_bytes(data));
        self.upload.wait_for_capacity(1).await
    }

    pub async fn complete(self) -> Result<(), StoreError> {
        self.upload.complete().await
    }

    pub async fn abort(self) {
        self.upload.abort().await
    }
}
