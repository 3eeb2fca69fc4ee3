//! The object-store handles behind a [`BlobStore`](super::store::BlobStore),
//! and the raw calls the cleanup needs: abort an upload by id, remove a
//! local staging file, delete an object unless it was written again.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::cleanup::Leftover;

/// What removing a leftover did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Aborted or deleted (or already gone).
    Done,
    /// Not deleted: the object was written again after it was left, so an
    /// envelope points to the new one.
    Superseded,
}

#[derive(Debug)]
pub struct Backend {
    pub store: Arc<dyn ObjectStore>,
    /// The same client as `store` when it is S3: multipart calls by id and
    /// bucket-level requests.
    pub s3: Option<Arc<AmazonS3>>,
    /// The directory of a local store.
    pub root: Option<PathBuf>,
}

impl Backend {
    /// Removes one leftover; what is already gone counts as removed.
    pub async fn remove(&self, leftover: &Leftover) -> Result<Removal, object_store::Error> {
        match leftover {
            Leftover::Multipart { key, upload_id } => {
                let Some(s3) = &self.s3 else {
                    return Err(generic(format!(
                        "upload {upload_id} of {key}: not an S3 store"
                    )));
                };
                match s3
                    .abort_multipart(&Path::from(key.as_str()), &upload_id.clone())
                    .await
                {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(Removal::Done),
                    Err(e) => Err(e),
                }
            }
            Leftover::Staging { key } => self.remove_staging(key).await.map(|()| Removal::Done),
            Leftover::Object { key, left_at_ms } => {
                let path = Path::from(key.as_str());
                match self.store.head(&path).await {
                    Ok(meta) if meta.last_modified.timestamp_millis() > *left_at_ms => {
                        return Ok(Removal::Superseded)
                    }
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => return Ok(Removal::Done),
                    Err(e) => return Err(e),
                }
                self.delete_key(key).await.map(|()| Removal::Done)
            }
        }
    }

    /// Removes the staging files object_store's local store writes beside
    /// `key` while an upload is open (`{key}#{n}`).
    async fn remove_staging(&self, key: &str) -> Result<(), object_store::Error> {
        let Some(root) = &self.root else {
            return Err(generic(format!("staging file of {key}: not a local store")));
        };
        let target = root.join(key);
        tokio::task::spawn_blocking(move || {
            let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
                return Ok(());
            };
            let prefix = format!("{}#", name.to_string_lossy());
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                let is_staging = file
                    .strip_prefix(&prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if is_staging {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| generic(e.to_string()))?
        .map_err(|e| generic(format!("staging file of {key}: {e}")))
    }

    pub async fn delete_key(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn put_small(&self, key: &str, data: Vec<u8>) -> Result<(), object_store::Error> {
        self.store
            .put(&Path::from(key), PutPayload::from(data))
            .await
            .map(drop)
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// Every key under `prefix`.
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        use futures_util::TryStreamExt;
        let prefix = Path::from(prefix);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
    }
}

fn generic(reason: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "kafka-lfs-proxy",
        source: reason.into(),
    }
}
