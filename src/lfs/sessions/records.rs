//! The records of one upload session in the store, and the calls that
//! read and write them (the layout is in the module above).

use std::collections::BTreeSet;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{namespace_prefix, ResumableUpload, LOCK_STALE};
use crate::lfs::store::{BlobStore, StoreError};

/// Written once when the session opens; never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Hex SHA-256 of the caller's credential (API key, or JWT issuer and
    /// subject); `None` for an API without credentials.
    pub owner: Option<String>,
    pub topic: String,
    /// The record key, base64.
    pub key: Option<String>,
    pub partition: Option<i32>,
    /// Record headers, values base64.
    pub headers: Vec<(String, String)>,
    pub content_type: String,
    pub size: u64,
    pub part_size: u64,
    pub checksum_alg: String,
    pub checksum: Option<String>,
    /// When the session opened (ms since the Unix epoch): the envelope's
    /// `created_at` and the object key's date.
    pub created_ms: i64,
    pub expires_ms: i64,
    pub upload: ResumableUpload,
}

/// One part: claimed when created, `stored` once its bytes are in storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub etag: String,
    pub size: u64,
    /// Bytes of the object before this part.
    pub offset: u64,
    /// `StreamingDigest::save` after this part.
    pub digest: String,
    pub stored: bool,
    /// The S3 part's ETag, for completing.
    pub s3_etag: Option<String>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    Completed,
    Aborted,
    Expired,
    /// `complete` found the upload wrong (checksum, policy) and dropped it.
    Failed,
}

/// The tombstone of an ended session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    pub why: Ended,
    pub at_ms: i64,
    pub owner: Option<String>,
    /// The object's key (kept while the tombstone is: see `object_keys`).
    pub object_key: Option<String>,
}

/// The object is complete; its envelope is not yet in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// The envelope, JSON text.
    pub envelope: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    at_ms: i64,
}

/// What one listing of a session's prefix found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionListing {
    pub session: bool,
    pub end: bool,
    pub stored: bool,
    pub parts: BTreeSet<u32>,
}

impl SessionListing {
    /// The number of the next part: one past the run of parts from 1.
    pub fn next_part(&self) -> u32 {
        let mut next = 1;
        while self.parts.contains(&next) {
            next += 1;
        }
        next
    }
}

/// Whether `lock` got the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Taken,
    /// Another request holds it.
    Busy,
}

/// The records of one session.
#[derive(Debug, Clone)]
pub struct SessionDir {
    store: BlobStore,
    prefix: String,
}

fn undecodable(key: &str, e: serde_json::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "kafka-lfs-proxy",
        source: format!("{key}: not a session record: {e}").into(),
    }
}

fn store_error(e: StoreError) -> object_store::Error {
    object_store::Error::Generic {
        store: "kafka-lfs-proxy",
        source: Box::new(e),
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl SessionDir {
    pub fn new(store: BlobStore, namespace: &str, upload_id: &str) -> Self {
        SessionDir {
            store,
            prefix: format!("{}/{upload_id}", namespace_prefix(namespace)),
        }
    }

    /// Where a local store stages the session's bytes.
    pub fn staging_key(&self) -> String {
        format!("{}/data", self.prefix)
    }

    fn part_key(&self, number: u32) -> String {
        format!("{}/part-{number:05}.json", self.prefix)
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// One listing of the session's records.
    pub async fn list(&self) -> Result<SessionListing, object_store::Error> {
        let mut listing = SessionListing::default();
        for key in self.store.list(&self.prefix).await? {
            let name = key.rsplit('/').next().unwrap_or_default();
            match name {
                "session.json" => listing.session = true,
                "end.json" => listing.end = true,
                "stored.json" => listing.stored = true,
                _ => {
                    let number = name
                        .strip_prefix("part-")
                        .and_then(|n| n.strip_suffix(".json"))
                        .and_then(|n| n.parse().ok());
                    if let Some(n) = number {
                        listing.parts.insert(n);
                    }
                }
            }
        }
        Ok(listing)
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, object_store::Error> {
        match self.store.get_small(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| undecodable(key, e)),
        }
    }

    async fn create<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bool, object_store::Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| undecodable(key, e))?;
        self.store.put_new(key, bytes).await
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), object_store::Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| undecodable(key, e))?;
        self.store.put_small(key, bytes).await
    }

    pub async fn session(&self) -> Result<Option<SessionRecord>, object_store::Error> {
        self.read(&self.key("session.json")).await
    }

    /// Writes the session record; `false` if there was one (an id reused).
    pub async fn create_session(
        &self,
        record: &SessionRecord,
    ) -> Result<bool, object_store::Error> {
        self.create(&self.key("session.json"), record).await
    }

    pub async fn part(&self, number: u32) -> Result<Option<PartRecord>, object_store::Error> {
        self.read(&self.part_key(number)).await
    }

    /// Claims part `number` with `record`; `Some(existing)` when the part
    /// was already claimed.
    pub async fn claim_part(
        &self,
        number: u32,
        record: &PartRecord,
    ) -> Result<Option<PartRecord>, object_store::Error> {
        let key = self.part_key(number);
        if self.create(&key, record).await? {
            return Ok(None);
        }
        match self.read(&key).await? {
            Some(existing) => Ok(Some(existing)),
            // Removed meanwhile (the session ended): nothing to go on with.
            None => Err(object_store::Error::NotFound {
                path: key,
                source: "the part's record disappeared".into(),
            }),
        }
    }

    /// Rewrites a claimed part's record (marking it stored).
    pub async fn put_part(
        &self,
        number: u32,
        record: &PartRecord,
    ) -> Result<(), object_store::Error> {
        self.write(&self.part_key(number), record).await
    }

    pub async fn end(&self) -> Result<Option<EndRecord>, object_store::Error> {
        self.read(&self.key("end.json")).await
    }

    /// Ends the session; `false` when it had ended already.
    pub async fn create_end(&self, record: &EndRecord) -> Result<bool, object_store::Error> {
        self.create(&self.key("end.json"), record).await
    }

    pub async fn stored(&self) -> Result<Option<StoredRecord>, object_store::Error> {
        self.read(&self.key("stored.json")).await
    }

    pub async fn put_stored(&self, record: &StoredRecord) -> Result<(), object_store::Error> {
        self.write(&self.key("stored.json"), record).await
    }

    /// Takes the session's lock, taking over one older than `LOCK_STALE`.
    pub async fn lock(&self) -> Result<LockOutcome, object_store::Error> {
        let key = self.key("lock.json");
        let mine = LockRecord { at_ms: now_ms() };
        for _ in 0..2 {
            if self.create(&key, &mine).await? {
                return Ok(LockOutcome::Taken);
            }
            let held: Option<LockRecord> = self.read(&key).await.unwrap_or(None);
            match held {
                Some(l) if now_ms() - l.at_ms < LOCK_STALE.as_millis() as i64 => {
                    return Ok(LockOutcome::Busy)
                }
                Some(_) => {
                    tracing::warn!(lock = %key, "taking over a stale upload-session lock");
                    self.store.delete(&key).await.map_err(store_error)?;
                }
                None => {} // released meanwhile
            }
        }
        Ok(LockOutcome::Busy)
    }

    pub async fn unlock(&self) {
        if let Err(error) = self.store.delete(&self.key("lock.json")).await {
            tracing::warn!(%error, "cannot release an upload-session lock; it goes stale by itself");
        }
    }

    /// Removes every record but the tombstone (and the lock, which the
    /// holder releases last).
    pub async fn clear(&self) -> Result<(), object_store::Error> {
        self.delete_all_but(&["end.json", "lock.json"]).await
    }

    /// Removes everything, the tombstone too.
    pub async fn remove(&self) -> Result<(), object_store::Error> {
        self.delete_all_but(&[]).await
    }

    async fn delete_all_but(&self, kept: &[&str]) -> Result<(), object_store::Error> {
        for key in self.store.list(&self.prefix).await? {
            if kept
                .iter()
                .any(|name| key.rsplit('/').next() == Some(*name))
            {
                continue;
            }
            self.store.delete(&key).await.map_err(store_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(etag: &str) -> PartRecord {
        PartRecord {
            etag: etag.into(),
            size: 1,
            offset: 0,
            digest: String::new(),
            stored: false,
            s3_etag: None,
        }
    }

    #[tokio::test]
    async fn parts_are_claimed_once_and_the_session_ends_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let a = SessionDir::new(store.clone(), "ns", "u1");
        let b = SessionDir::new(store, "ns", "u1");
        assert_eq!(a.claim_part(1, &part("e1")).await.unwrap(), None);
        assert_eq!(
            b.claim_part(1, &part("e2")).await.unwrap(),
            Some(part("e1"))
        );
        assert_eq!(a.claim_part(2, &part("e2")).await.unwrap(), None);
        assert_eq!(a.claim_part(4, &part("e4")).await.unwrap(), None);
        let listing = b.list().await.unwrap();
        assert_eq!(listing.next_part(), 3);
        assert!(!listing.session && !listing.end);

        assert_eq!(a.lock().await.unwrap(), LockOutcome::Taken);
        assert_eq!(b.lock().await.unwrap(), LockOutcome::Busy);
        let end = EndRecord {
            why: Ended::Expired,
            at_ms: 1,
            owner: None,
            object_key: Some("ns/t/lfs/2026/01/01/obj-x".into()),
        };
        assert!(a.create_end(&end).await.unwrap());
        assert!(!b.create_end(&end).await.unwrap(), "ended once");
        a.clear().await.unwrap();
        a.unlock().await;
        assert_eq!(b.lock().await.unwrap(), LockOutcome::Taken);
        b.unlock().await;
        let left = b.list().await.unwrap();
        assert!(left.end && left.parts.is_empty());
        assert_eq!(b.end().await.unwrap(), Some(end));
        b.remove().await.unwrap();
        assert_eq!(a.list().await.unwrap(), SessionListing::default());
    }
}
