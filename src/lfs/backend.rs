//! The object-store handles behind a [`BlobStore`](super::store::BlobStore),
//! and the raw calls the cleanup needs: abort an upload by id, remove a
//! local staging file, delete an object unless it was written again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// For the S3 requests object_store has no call for.
    pub http: reqwest::Client,
}

impl Backend {
    /// Removes one leftover; what is already gone counts as removed.
    /// `spared`: upload ids of the key still in flight (not leftovers).
    pub async fn remove(
        &self,
        leftover: &Leftover,
        spared: &[String],
    ) -> Result<Removal, object_store::Error> {
        match leftover {
            Leftover::Unconfirmed { key } => {
                for upload_id in self.list_uploads(key).await? {
                    if spared.contains(&upload_id) {
                        continue;
                    }
                    let multipart = Leftover::Multipart {
                        key: key.clone(),
                        upload_id,
                    };
                    Box::pin(self.remove(&multipart, spared)).await?;
                }
                Ok(Removal::Done)
            }
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

    /// Ids of the open multipart uploads of exactly `key`
    /// (ListMultipartUploads, signed like any request: object_store has no
    /// call for it).
    async fn list_uploads(&self, key: &str) -> Result<Vec<String>, object_store::Error> {
        use object_store::signer::{SignedUrlOptions, Signer};
        let Some(s3) = &self.s3 else {
            return Ok(Vec::new());
        };
        let options = SignedUrlOptions::default().with_query([("uploads", ""), ("prefix", key)]);
        let url = s3
            .signed_url_opts(
                http::Method::GET,
                &Path::from(""),
                Duration::from_secs(300),
                &options,
            )
            .await?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| generic(format!("list uploads of {key}: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| generic(format!("list uploads of {key}: {e}")))?;
        if !status.is_success() {
            let head: String = body.chars().take(300).collect();
            return Err(generic(format!(
                "list uploads of {key}: HTTP {status}: {head}"
            )));
        }
        Ok(uploads_of(&body, key))
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

    /// Writes `data` at `key` only if nothing is there (S3 `If-None-Match:
    /// *`, an exclusive create on a directory); `false` when something was.
    pub async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, object_store::Error> {
        let options = object_store::PutOptions {
            mode: object_store::PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(key), PutPayload::from(data), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, object_store::Error> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// The objects under `prefix`, as the store pages them (never all held).
    pub fn list_objects(
        &self,
        prefix: &str,
    ) -> futures_util::stream::BoxStream<
        'static,
        Result<object_store::ObjectMeta, object_store::Error>,
    > {
        self.store.list(Some(&Path::from(prefix)))
    }

    /// The names one level below `prefix` (`ns/a/x`, `ns/b/y` under `ns`:
    /// `a`, `b`).
    pub async fn child_prefixes(&self, prefix: &str) -> Result<Vec<String>, object_store::Error> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(prefix)))
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
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

/// The upload ids of `key` in a ListMultipartUploads result.
fn uploads_of(xml: &str, key: &str) -> Vec<String> {
    let field = |block: &str, name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = block.find(&open)? + open.len();
        let end = block[start..].find(&format!("</{name}>"))? + start;
        Some(unescape(&block[start..end]))
    };
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|block| {
            let block = block.split("</Upload>").next()?;
            (field(block, "Key")? == key).then(|| field(block, "UploadId"))?
        })
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn generic(reason: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "kafka-lfs-proxy",
        source: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_uploads_of_exactly_one_key() {
        let xml = r#"<?xml version="1.0"?><ListMultipartUploadsResult><Bucket>b</Bucket>
            <Upload><Key>ns/t/lfs/obj-a</Key><UploadId>id-1</UploadId></Upload>
            <Upload><Key>ns/t/lfs/obj-ab</Key><UploadId>id-2</UploadId></Upload>
            <Upload><UploadId>id-3</UploadId><Key>ns/t/lfs/obj-a</Key></Upload>
            </ListMultipartUploadsResult>"#;
        assert_eq!(
            super::uploads_of(xml, "ns/t/lfs/obj-a"),
            vec!["id-1", "id-3"]
        );
        assert!(super::uploads_of("<ListMultipartUploadsResult/>", "k").is_empty());
    }
}
