//! Where blobs go: S3 (any S3-compatible endpoint) when a bucket is
//! configured, otherwise a local directory, both through `object_store`.
//!
//! Values up to the chunk size are one PUT. Larger ones are multipart
//! uploads: parts of `chunk_size` bytes, at most `MAX_PARTS_IN_FLIGHT` at a
//! time; the parts are slices of the value already in memory, never copies.
//! A failed multipart upload is aborted, so no parts are left behind.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};

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
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Signs bucket-level requests object_store has no call for.
    s3: Option<Arc<AmazonS3>>,
    bucket: String,
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
        Ok(BlobStore {
            store: Arc::new(store),
            s3: None,
            bucket: dir.display().to_string(),
            chunk_size,
        })
    }

    pub fn s3(settings: &S3Settings, chunk_size: usize) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(settings.region.as_deref().unwrap_or("us-east-1"))
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(std::time::Duration::from_secs(5))
                    .with_timeout(std::time::Duration::from_secs(120)),
            )
            // A producer retries a retriable error itself; an upload that
            // waits minutes on a dead S3 only holds its request hostage.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(10),
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
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
        let store = Arc::new(
            builder
                .build()
                .map_err(|e| StoreError::Config(e.to_string()))?,
        );
        Ok(BlobStore {
            s3: Some(Arc::clone(&store)),
            store,
            bucket: settings.bucket.clone(),
            chunk_size,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the S3 bucket when it does not exist (`S3_ENSURE_BUCKET`).
    /// object_store has no bucket calls, so this sends presigned HEAD and
    /// PUT (CreateBucket) requests for the bucket itself. Returns whether
    /// the bucket was created. A local store has nothing to create.
    pub async fn ensure_bucket(&self) -> Result<bool, StoreError> {
        use object_store::signer::Signer;
        let Some(s3) = &self.s3 else {
            return Ok(false);
        };
        let client = reqwest::Client::new();
        let bucket_root = Path::from("");
        let ttl = std::time::Duration::from_secs(300);
        let sign = |method| {
            let bucket_root = &bucket_root;
            async move {
                s3.signed_url(method, bucket_root, ttl)
                    .await
                    .map_err(|e| StoreError::Config(format!("cannot sign a bucket request: {e}")))
            }
        };
        let http_err =
            |e: reqwest::Error| StoreError::Config(format!("bucket request failed: {e}"));
        let head = client
            .head(sign(http::Method::HEAD).await?)
            .send()
            .await
            .map_err(http_err)?;
        if head.status().is_success() {
            return Ok(false);
        }
        let put = client
            .put(sign(http::Method::PUT).await?)
            .send()
            .await
            .map_err(http_err)?;
        if put.status().is_success() {
            Ok(true)
        } else {
            let status = put.status();
            let body = put.text().await.unwrap_or_default();
            Err(StoreError::Config(format!(
                "cannot create bucket {}: HTTP {status}: {}",
                self.bucket,
                body.chars().take(300).collect::<String>()
            )))
        }
    }

    /// Stores `data` under `key`, as a multipart upload above the chunk size.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = Path::from(key);
        let err = |source| StoreError::Put {
            key: key.to_owned(),
            source,
        };
        if data.len() <= self.chunk_size {
            self.store
                .put(&path, PutPayload::from_bytes(data))
                .await
                .map_err(err)?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await.map_err(err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.chunk_size);
        let mut offset = 0;
        while offset < data.len() {
            if let Err(e) = writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(err(e));
            }
            let end = (offset + self.chunk_size).min(data.len());
            writer.put(data.slice(offset..end));
            offset = end;
        }
        // `finish` aborts the upload itself when a part fails.
        writer.finish().await.map_err(err)?;
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StoreError::Delete {
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// Reads a whole object (tests and checks; downloads stream elsewhere).
    pub async fn get(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// Every key under `prefix` (tests and orphan checks).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        use futures_util::TryStreamExt;
        let prefix = Path::from(prefix);
        let objects: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
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
