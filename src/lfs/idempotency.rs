//! Idempotency records of `/lfs/produce` and upload `complete`, kept in the object store so
//! every replica (and a restarted proxy) sees them.
//!
//! - One small JSON object per caller and key, at
//!   `_lfs_idempotency/{namespace}/{id}.json`, `id` the SHA-256 of the
//!   caller's identity and the `Idempotency-Key` (so keys are scoped to
//!   the caller, and no key or identity appears in the bucket).
//! - A request first claims the key with an exclusive create (S3
//!   `If-None-Match: *`): of two requests with one key, on any replicas,
//!   exactly one proceeds; the other is told the first is in progress.
//! - Once the record is produced, the claim is replaced by the answer
//!   (envelope, partition, offset) and the request's fingerprint (topic,
//!   key, partition and the body's SHA-256). A failed request releases its
//!   claim, so a retry runs again.
//! - Answers are kept `KEEP` (24 h) and then treated as absent; a claim
//!   whose request never finished (its process died) is taken over after
//!   `PENDING_STALE` (1 h).

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::BlobStore;

/// Where the records live, at the bucket root (beside `_lfs_pending`).
pub const PREFIX: &str = "_lfs_idempotency";
/// How long an answer is replayed.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);
/// How long a claim without an answer blocks its key.
pub const PENDING_STALE: Duration = Duration::from_secs(3600);

/// A claim or an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the Unix epoch when written.
    pub written_at: i64,
    /// Set once the request succeeded.
    #[serde(default)]
    pub answer: Option<Answer>,
}

/// The first answer, replayed to every retry with the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub fingerprint: String,
    /// The envelope as it was answered (JSON text).
    pub envelope: String,
    pub partition: i32,
    pub offset: i64,
}

/// What a key holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Claimed by this request: go on, then `complete` or `release`.
    Claimed,
    /// Another request holds it and has not finished.
    InProgress,
    Answered(Answer),
}

/// The records of one namespace.
#[derive(Debug, Clone)]
pub struct IdempotencyRecords {
    store: BlobStore,
    namespace: String,
}

/// A request's fingerprint: what must be equal for a retry to be "the
/// same request".
pub fn fingerprint(
    topic: &str,
    key: Option<&[u8]>,
    partition: Option<i32>,
    body_sha256: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(topic.as_bytes());
    h.update([0]);
    match key {
        Some(k) => {
            h.update([1]);
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
        }
        None => h.update([0]),
    }
    h.update(partition.map_or(-1i64, i64::from).to_be_bytes());
    h.update(body_sha256.as_bytes());
    hex::encode(h.finalize())
}

/// The fingerprint of completing upload session `upload_id`: a retry is
/// "the same request" when it completes the same session.
pub fn complete_fingerprint(upload_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"complete\0");
    h.update(upload_id.as_bytes());
    hex::encode(h.finalize())
}

impl IdempotencyRecords {
    pub fn new(store: BlobStore, namespace: String) -> Self {
        IdempotencyRecords { store, namespace }
    }

    fn path(&self, caller: Option<&[u8; 32]>, key: &str) -> String {
        let mut h = Sha256::new();
        match caller {
            Some(c) => {
                h.update([1]);
                h.update(c);
            }
            None => h.update([0]),
        }
        h.update(key.as_bytes());
        format!(
            "{PREFIX}/{}/{}.json",
            self.namespace,
            hex::encode(h.finalize())
        )
    }

    /// Claims `key` for `caller`, or says who holds it.
    pub async fn claim(
        &self,
        caller: Option<&[u8; 32]>,
        key: &str,
    ) -> Result<KeyState, object_store::Error> {
        let path = self.path(caller, key);
        let claim = serde_json::to_vec(&Entry {
            written_at: Utc::now().timestamp(),
            answer: None,
        })
        .unwrap_or_default();
        // Two rounds at most: an expired entry is removed, then claimed.
        for _ in 0..2 {
            if self.store.put_new(&path, claim.clone()).await? {
                return Ok(KeyState::Claimed);
            }
            let Some(bytes) = self.store.get_small(&path).await? else {
                continue; // released meanwhile
            };
            let entry: Option<Entry> = serde_json::from_slice(&bytes).ok();
            let age = |e: &Entry| Utc::now().timestamp().saturating_sub(e.written_at);
            match entry {
                Some(e) => match e.answer {
                    Some(answer) if age(&e) < KEEP.as_secs() as i64 => {
                        return Ok(KeyState::Answered(answer))
                    }
                    None if age(&e) < PENDING_STALE.as_secs() as i64 => {
                        return Ok(KeyState::InProgress)
                    }
                    _ => self.store.delete(&path).await.map_err(store_error)?,
                },
                // Unreadable: not ours to trust; taken over.
                None => self.store.delete(&path).await.map_err(store_error)?,
            }
        }
        Ok(KeyState::InProgress)
    }

    /// Records the answer of a claimed key.
    pub async fn complete(
        &self,
        caller: Option<&[u8; 32]>,
        key: &str,
        answer: Answer,
    ) -> Result<(), object_store::Error> {
        let entry = Entry {
            written_at: Utc::now().timestamp(),
            answer: Some(answer),
        };
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        self.store.put_small(&self.path(caller, key), bytes).await
    }

    /// Gives a claimed key up (the request failed): a retry runs again.
    pub async fn release(&self, caller: Option<&[u8; 32]>, key: &str) {
        if let Err(error) = self.store.delete(&self.path(caller, key)).await {
            tracing::warn!(%error, "cannot release an idempotency claim; it expires by itself");
        }
    }
}

fn store_error(e: super::store::StoreError) -> object_store::Error {
    object_store::Error::Generic {
        store: "lfs",
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claim_per_key_and_caller_then_the_answer_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let records = IdempotencyRecords::new(store, "ns".into());
        let alice = [1u8; 32];
        let bob = [2u8; 32];
        assert_eq!(
            records.claim(Some(&alice), "k").await.unwrap(),
            KeyState::Claimed
        );
        assert_eq!(
            records.claim(Some(&alice), "k").await.unwrap(),
            KeyState::InProgress
        );
        assert_eq!(
            records.claim(Some(&bob), "k").await.unwrap(),
            KeyState::Claimed,
            "keys are per caller"
        );
        let answer = Answer {
            fingerprint: fingerprint("t", Some(b"key"), None, "ab"),
            envelope: "{}".into(),
            partition: 0,
            offset: 7,
        };
        records
            .complete(Some(&alice), "k", answer.clone())
            .await
            .unwrap();
        assert_eq!(
            records.claim(Some(&alice), "k").await.unwrap(),
            KeyState::Answered(answer)
        );
        records.release(Some(&bob), "k").await;
        assert_eq!(
            records.claim(Some(&bob), "k").await.unwrap(),
            KeyState::Claimed,
            "released"
        );
    }

    #[test]
    fn fingerprints_differ_by_topic_key_partition_and_body() {
        let base = fingerprint("t", Some(b"k"), None, "aa");
        assert_eq!(base, fingerprint("t", Some(b"k"), None, "aa"));
        assert_ne!(base, fingerprint("u", Some(b"k"), None, "aa"));
        assert_ne!(base, fingerprint("t", None, None, "aa"));
        assert_ne!(base, fingerprint("t", Some(b"k"), Some(0), "aa"));
        assert_ne!(base, fingerprint("t", Some(b"k"), None, "bb"));
    }
}
