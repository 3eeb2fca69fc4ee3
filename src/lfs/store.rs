//! Where blobs go: S3 (any S3-compatible endpoint) when a bucket is
//! configured, otherwise a local directory, both through `object_store`.
//!
//! Values up to the chunk size are one PUT. Larger ones are multipart
//! uploads (`writer`, `multipart`): parts of `chunk_size` bytes, at most
//! `MAX_PARTS_IN_FLIGHT` at a time; the parts are slices of the value
//! already in memory, never copies. Every upload ends completed or
//! aborted, and what storage does not let go of is retried by the
//! store's [`Cleanup`].

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};

use super::backend::Backend;
use super::cleanup::{Cleanup, Leftover};
use super::multipart::{Multipart, PartUpload};
use super::writer::BlobWriter;

/// The region when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// S3's smallest multipart part other than the last.
pub const MIN_S3_PART_SIZE: usize = 5 * 1024 * 1024;

/// Size of the pieces a local object is read in.
const READ_CHUNK: usize = 1024 * 1024;

/// Parts of one multipart upload sent concurrently.
pub const MAX_PARTS_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("upload of {key} failed: {source}")]
    Put {
        key: String,
        source: object_store::Error,
    },
    #[error("upload refused: {0}")]
    Closed(String),
    #[error("delete of {key} failed: {source}")]
    Delete {
        key: String,
        source: object_store::Error,
    },
}

/// S3 settings, as the seed names them.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// `None` = auto: path style when an endpoint is set.
    pub force_path_style: Option<bool>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    /// Endpoint written into presigned URLs instead of `endpoint`.
    pub public_endpoint: Option<String>,
    /// Longest one request may take, body included (default 30 s).
    pub timeout: Option<Duration>,
    /// Longest storage may stay silent while answering (default 10 s).
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Arc<Backend>,
    /// Uploads in flight, aborts and deletes to retry, the ledger.
    cleanup: Arc<Cleanup>,
    /// Signs presigned URLs for `S3_PUBLIC_ENDPOINT` (split networks).
    public_signer: Option<Arc<AmazonS3>>,
    bucket: String,
    /// The S3 region (where `ensure_bucket` creates the bucket).
    region: String,
    chunk_size: usize,
}

impl BlobStore {
    /// A directory on the local filesystem; the envelope's `bucket` is the
    /// directory's absolute path, so `{bucket}/{key}` is the file.
    pub fn local(dir: &FsPath, chunk_size: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let backend = Arc::new(Backend {
            store: Arc::new(store),
            s3: None,
            root: Some(dir.clone()),
            http: reqwest::Client::new(),
        });
        Ok(BlobStore {
            cleanup: Cleanup::new(Arc::clone(&backend)),
            backend,
            public_signer: None,
            bucket: dir.display().to_string(),
            region: String::new(),
            chunk_size,
        })
    }

    pub fn s3(settings: &S3Settings, chunk_size: usize) -> Result<Self, StoreError> {
        let store = Arc::new(Self::s3_client(settings, settings.endpoint.as_deref())?);
        let public_signer = match &settings.public_endpoint {
            Some(public) => Some(Arc::new(Self::s3_client(settings, Some(public))?)),
            None => None,
        };
        let backend = Arc::new(Backend {
            s3: Some(Arc::clone(&store)),
            store,
            root: None,
            http: reqwest::Client::builder()
                .timeout(settings.timeout.unwrap_or(Duration::from_secs(30)))
                .build()
                .map_err(|e| StoreError::Config(e.to_string()))?,
        });
        Ok(BlobStore {
            cleanup: Cleanup::new(Arc::clone(&backend)),
            backend,
            public_signer,
            bucket: settings.bucket.clone(),
            region: settings
                .region
                .clone()
                .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            chunk_size,
        })
    }

    fn s3_client(settings: &S3Settings, endpoint: Option<&str>) -> Result<AmazonS3, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(settings.region.as_deref().unwrap_or(DEFAULT_REGION))
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(settings.timeout.unwrap_or(Duration::from_secs(30)))
                    .with_read_timeout(settings.idle_timeout.unwrap_or(Duration::from_secs(10))),
            )
            // A producer retries a retriable error itself; an upload that
            // waits minutes on a dead S3 only holds its request hostage.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let path_style = settings
            .force_path_style
            .unwrap_or(settings.endpoint.is_some());
        builder = builder.with_virtual_hosted_style_request(!path_style);
        if let Some(k) = &settings.access_key {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &settings.secret_key {
            builder = builder.with_secret_access_key(s);
        }
        if let Some(t) = &settings.session_token {
            builder = builder.with_token(t);
        }
        builder
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object-store handles (for the raw calls of `resumable`).
    pub(super) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Where a local store keeps `key`; `None` for S3.
    pub fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        self.backend.root.as_ref().map(|root| root.join(key))
    }

    /// Creates the S3 bucket when it does not exist (`S3_ENSURE_BUCKET`),
    /// in the configured region; returns whether it was created. A local
    /// store has nothing to create.
    pub async fn ensure_bucket(&self) -> Result<bool, StoreError> {
        match &self.backend.s3 {
            Some(s3) => super::bucket::ensure(s3, &self.bucket, &self.region).await,
            None => Ok(false),
        }
    }

    /// The cleanup of this store: uploads in flight, retries, the ledger.
    pub fn cleanup(&self) -> &Arc<Cleanup> {
        &self.cleanup
    }

    /// Stores `data` under `key`, as a multipart upload above the chunk size.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let mut writer = self.writer(key);
        if let Err(e) = writer.write(data).await {
            writer.abort().await;
            return Err(e);
        }
        writer.finish().await
    }

    /// One PUT of a value within a chunk.
    pub(super) async fn put_payload(
        &self,
        key: &str,
        payload: PutPayload,
    ) -> Result<(), StoreError> {
        self.cleanup
            .check_open()
            .map_err(|e| StoreError::Closed(e.to_string()))?;
        let put = self.backend.store.put(&Path::from(key), payload).await;
        if let Err(source) = put {
            if self.backend.s3.is_some() {
                // A PUT that timed out may still be carried out.
                self.cleanup
                    .check_later(Leftover::object(key), &source.to_string());
            }
            return Err(StoreError::Put {
                key: key.to_owned(),
                source,
            });
        }
        self.cleanup.stored(key);
        Ok(())
    }

    /// A writer for a value that arrives in pieces (an HTTP body): memory
    /// stays at one chunk plus `MAX_PARTS_IN_FLIGHT` parts, whatever the size.
    pub fn writer(&self, key: &str) -> BlobWriter {
        BlobWriter::new(self.clone(), key, self.chunk_size)
    }

    pub(super) async fn start_multipart(&self, key: &str) -> Result<Multipart, StoreError> {
        Multipart::start(
            &self.backend.store,
            self.backend.s3.as_ref(),
            &self.cleanup,
            key,
        )
        .await
    }

    /// Starts a multipart upload whose parts the caller sends one by one
    /// (HTTP upload sessions).
    pub async fn parts(&self, key: &str) -> Result<PartUpload, StoreError> {
        Ok(PartUpload::new(self.start_multipart(key).await?))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.backend
            .delete_key(key)
            .await
            .map_err(|source| StoreError::Delete {
                key: key.to_owned(),
                source,
            })
    }

    /// Deletes an object no envelope points to; when storage does not
    /// answer, the cleanup retries until it does. Returns whether it is gone.
    /// A content key is never deleted here: other records may point to it;
    /// the collector deletes it once none does.
    pub async fn delete_orphan(&self, key: &str) -> bool {
        if super::content_address::is_content_key(key) {
            return false;
        }
        let deleted =
            tokio::time::timeout(super::multipart::INLINE_WAIT, self.backend.delete_key(key)).await;
        let error = match deleted {
            Ok(Ok(())) => {
                metrics::counter!(crate::metrics::LFS_ORPHANS_DELETED).increment(1);
                return true;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", super::multipart::INLINE_WAIT),
        };
        self.cleanup.retry_later(Leftover::object(key), &error);
        false
    }

    /// Objects no envelope points to, handed to the cleanup without waiting
    /// (a request dropped before its answer).
    pub fn leave_orphans(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let store = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    for key in keys {
                        store.delete_orphan(&key).await;
                    }
                });
            }
            Err(_) => {
                for key in keys {
                    store
                        .cleanup
                        .retry_later(Leftover::object(&key), "no runtime to delete it now");
                }
            }
        }
    }

    /// Reads a whole object (tests and checks; downloads use `stream`).
    pub async fn get(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.backend
            .store
            .get(&Path::from(key))
            .await?
            .bytes()
            .await
    }

    /// The object's bytes as they arrive from storage, unverified. A local
    /// file is read in `READ_CHUNK` pieces (object_store's own stream reads
    /// 8 KiB at a time, one blocking task each).
    pub async fn stream(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
        use futures_util::StreamExt;
        let result = self.backend.store.get(&Path::from(key)).await?;
        match result.payload {
            object_store::GetResultPayload::File(file, path) => {
                let chunks = futures_util::stream::try_unfold(Some(file), move |file| {
                    let path = path.clone();
                    async move {
                        let Some(mut file) = file else {
                            return Ok(None);
                        };
                        let read = tokio::task::spawn_blocking(move || {
                            use std::io::Read;
                            let mut buf = vec![0u8; READ_CHUNK];
                            let mut filled = 0;
                            while filled < READ_CHUNK {
                                match file.read(&mut buf[filled..])? {
                                    0 => break,
                                    n => filled += n,
                                }
                            }
                            buf.truncate(filled);
                            Ok::<_, std::io::Error>((file, buf))
                        })
                        .await;
                        let (file, buf) = read
                            .map_err(|e| std::io::Error::other(e.to_string()))
                            .and_then(|r| r)
                            .map_err(|source| object_store::Error::Generic {
                                store: "LocalFileSystem",
                                source: format!("{}: {source}", path.display()).into(),
                            })?;
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let more = (buf.len() == READ_CHUNK).then_some(file);
                        Ok(Some((Bytes::from(buf), more)))
                    }
                });
                Ok(chunks.boxed())
            }
            object_store::GetResultPayload::Stream(stream) => Ok(stream),
        }
    }

    /// A URL that lets its holder GET `key` for `ttl`, signed for the
    /// public endpoint when one is set. `None` for a local store.
    pub async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Option<Result<String, object_store::Error>> {
        use object_store::signer::Signer;
        let signer = self.public_signer.as_ref().or(self.backend.s3.as_ref())?;
        Some(
            signer
                .signed_url(http::Method::GET, &Path::from(key), ttl)
                .await
                .map(|u| u.to_string()),
        )
    }

    /// Whether storage answers with valid credentials: a HEAD of a key that
    /// does not exist must come back "not found".
    pub async fn probe(&self, key: &str) -> Result<(), object_store::Error> {
        match self.backend.store.head(&Path::from(key)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The objects under `prefix` with their size and modification time,
    /// streamed page by page.
    pub fn list_objects(
        &self,
        prefix: &str,
    ) -> futures_util::stream::BoxStream<
        'static,
        Result<object_store::ObjectMeta, object_store::Error>,
    > {
        self.backend.list_objects(prefix)
    }

    /// The object's metadata, or `None` when there is none.
    pub async fn head(
        &self,
        key: &str,
    ) -> Result<Option<object_store::ObjectMeta>, object_store::Error> {
        match self.backend.store.head(&Path::from(key)).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Copies `from` onto `to` inside the store (S3 `CopyObject`).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), object_store::Error> {
        let (from, to) = (Path::from(from), Path::from(to));
        self.backend.store.copy(&from, &to).await
    }

    /// A small object, or `None` when there is none.
    pub async fn get_small(&self, key: &str) -> Result<Option<Bytes>, object_store::Error> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a small object, replacing what is there.
    pub async fn put_small(&self, key: &str, data: Vec<u8>) -> Result<(), object_store::Error> {
        self.backend.put_small(key, data).await
    }

    /// Writes a small object only if there is none; `false` when there was.
    pub async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, object_store::Error> {
        self.backend.put_new(key, data).await
    }

    /// The names one level below `prefix`.
    pub async fn child_prefixes(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        self.backend.child_prefixes(prefix).await
    }

    /// Every key under `prefix` (tests and orphan checks).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        self.backend.list_keys(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_put_multipart_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 * 1024 * 1024).unwrap();
        let data = Bytes::from(
            (0..12 * 1024 * 1024)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        store
            .put("ns/t/lfs/2026/01/01/obj-a", data.clone())
            .await
            .unwrap();
        store
            .put("ns/t/lfs/2026/01/01/obj-b", Bytes::from_static(b"small"))
            .await
            .unwrap();
        assert_eq!(store.get("ns/t/lfs/2026/01/01/obj-a").await.unwrap(), data);
        let on_disk = std::fs::read(dir.path().join("ns/t/lfs/2026/01/01/obj-b")).unwrap();
        assert_eq!(on_disk, b"small");
        let mut keys = store.list("ns").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            vec!["ns/t/lfs/2026/01/01/obj-a", "ns/t/lfs/2026/01/01/obj-b"]
        );
        store.delete("ns/t/lfs/2026/01/01/obj-a").await.unwrap();
        store.delete("ns/t/lfs/2026/01/01/obj-a").await.unwrap();
        assert_eq!(store.list("ns").await.unwrap().len(), 1);
    }
}
