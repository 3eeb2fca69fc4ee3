//! Verified objects recently served, shared by every connection, so N
//! consumers of one topic read each object from storage once.
//!
//! Bounded by bytes, not entries: a cache of 100 entries could hold 100
//! objects of 5 GiB. The least recently used objects leave first; an
//! object larger than the whole cache is served but not kept. Concurrent
//! misses for one key wait for a single read (the first reader's), so
//! three consumers arriving together still cause one store read. Only
//! verified bytes are ever kept: a failed read leaves nothing behind, and
//! the next request tries storage again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::lfs::resolve::{read_verified, EnvelopeRef, ResolveError};
use crate::lfs::store::BlobStore;
use crate::metrics as m;

pub struct VerifiedObjects {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// key -> (bytes, sha256, last use)
    entries: HashMap<String, Cached>,
    /// last use -> key: the eviction order.
    by_use: BTreeMap<u64, String>,
    held: usize,
    clock: u64,
    /// One lock per key being read, so concurrent misses share a read.
    loading: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

struct Cached {
    bytes: Bytes,
    sha256: String,
    used: u64,
}

impl VerifiedObjects {
    /// A cache of at most `capacity` bytes; 0 keeps nothing (every read
    /// goes to storage, concurrent ones still shared).
    pub fn new(capacity: usize) -> Self {
        VerifiedObjects {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.inner.lock().map(|i| i.held).unwrap_or(0)
    }

    /// The verified bytes of the envelope's object, from the cache or from
    /// storage.
    pub async fn get(
        &self,
        store: &BlobStore,
        envelope: &EnvelopeRef,
    ) -> Result<Bytes, ResolveError> {
        if let Some(bytes) = self.lookup(envelope) {
            metrics::counter!(m::REHYDRATE_CACHE_HITS_TOTAL).increment(1);
            return Ok(bytes);
        }
        let lock = self.loading_lock(&envelope.key);
        let guard = lock.lock().await;
        // Another reader may have finished while this one waited.
        let result = match self.lookup(envelope) {
            Some(bytes) => {
                metrics::counter!(m::REHYDRATE_CACHE_HITS_TOTAL).increment(1);
                Ok(bytes)
            }
            None => {
                metrics::counter!(m::REHYDRATE_CACHE_MISSES_TOTAL).increment(1);
                let read = read_verified(store, envelope).await;
                if let Ok(bytes) = &read {
                    self.insert(envelope, bytes.clone());
                }
                read
            }
        };
        drop(guard);
        self.release_loading_lock(&envelope.key, lock);
        result
    }

    /// A hit only when the cached object is the one this envelope names:
    /// the same key with another SHA-256 (an object rewritten in place) is
    /// a miss, and the fresh read replaces it.
    fn lookup(&self, envelope: &EnvelopeRef) -> Option<Bytes> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&envelope.key)?;
        if !entry.sha256.eq_ignore_ascii_case(&envelope.sha256) {
            return None;
        }
        let before = std::mem::replace(&mut entry.used, now);
        let bytes = entry.bytes.clone();
        inner.by_use.remove(&before);
        inner.by_use.insert(now, envelope.key.clone());
        Some(bytes)
    }

    fn insert(&self, envelope: &EnvelopeRef, bytes: Bytes) {
        if bytes.len() > self.capacity {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.entries.remove(&envelope.key) {
            inner.by_use.remove(&old.used);
            inner.held -= old.bytes.len();
        }
        while inner.held + bytes.len() > self.capacity {
            let Some((_, key)) = inner.by_use.pop_first() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&key) {
                inner.held -= old.bytes.len();
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.held += bytes.len();
        inner.by_use.insert(used, envelope.key.clone());
        inner.entries.insert(
            envelope.key.clone(),
            Cached {
                bytes,
                sha256: envelope.sha256.clone(),
                used,
            },
        );
        metrics::gauge!(m::REHYDRATE_CACHE_BYTES).set(inner.held as f64);
    }

    fn loading_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inner = self.inner.lock().expect("cache lock is never poisoned");
        Arc::clone(inner.loading.entry(key.to_owned()).or_default())
    }

    /// Forgets the key's lock once nobody else holds it.
    fn release_loading_lock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&lock) <= 2 {
            inner.loading.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(store: &BlobStore, key: &str, data: &[u8]) -> EnvelopeRef {
        EnvelopeRef {
            kfs_lfs: 1,
            bucket: store.bucket().into(),
            key: key.into(),
            size: data.len() as u64,
            sha256: crate::lfs::checksum::ChecksumAlg::Sha256.hex_digest(data),
            checksum: None,
            checksum_alg: None,
            content_type: None,
            created_at: None,
            proxy_id: None,
            original_headers: None,
        }
    }

    #[tokio::test]
    async fn bounded_by_bytes_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let mut envelopes = Vec::new();
        for (i, data) in [b"aaaa", b"bbbb", b"cccc"].iter().enumerate() {
            let key = format!("n/t/lfs/2026/01/01/obj-{i}");
            store.put(&key, Bytes::from_static(*data)).await.unwrap();
            envelopes.push(envelope(&store, &key, *data));
        }
        let cache = VerifiedObjects::new(8);
        cache.get(&store, &envelopes[0]).await.unwrap();
        cache.get(&store, &envelopes[1]).await.unwrap();
        assert_eq!(cache.held(), 8);
        // Use 0 again, so 1 is the least recently used when 2 arrives.
        assert!(cache.lookup(&envelopes[0]).is_some());
        cache.get(&store, &envelopes[2]).await.unwrap();
        assert_eq!(cache.held(), 8);
        assert!(cache.lookup(&envelopes[0]).is_some());
        assert!(cache.lookup(&envelopes[1]).is_none());
        // Served from the cache even once the file is gone.
        std::fs::remove_dir_all(dir.path().join("n")).unwrap();
        assert_eq!(
            &cache.get(&store, &envelopes[2]).await.unwrap()[..],
            b"cccc"
        );
        assert!(cache.get(&store, &envelopes[1]).await.is_err());
        // Another SHA-256 under a cached key is not a hit.
        let mut other = envelopes[2].clone();
        other.sha256 = "00".repeat(32);
        assert!(cache.lookup(&other).is_none());
        // Too large for the cache: served, not kept.
        let tiny = VerifiedObjects::new(3);
        let key = "n/t/lfs/2026/01/01/obj-9";
        store.put(key, Bytes::from_static(b"dddd")).await.unwrap();
        let e = envelope(&store, key, b"dddd");
        assert_eq!(&tiny.get(&store, &e).await.unwrap()[..], b"dddd");
        assert_eq!(tiny.held(), 0);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let key = "n/t/lfs/2026/01/01/obj-1";
        store
            .put(key, Bytes::from(vec![7u8; 1 << 20]))
            .await
            .unwrap();
        let e = envelope(&store, key, &vec![7u8; 1 << 20]);
        let cache = Arc::new(VerifiedObjects::new(4 << 20));
        let reads: Vec<_> = (0..3)
            .map(|_| {
                let (cache, store, e) = (Arc::clone(&cache), store.clone(), e.clone());
                tokio::spawn(async move { cache.get(&store, &e).await.unwrap() })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().len(), 1 << 20);
        }
        assert_eq!(cache.held(), 1 << 20);
        assert!(cache.inner.lock().unwrap().loading.is_empty());
    }
}
