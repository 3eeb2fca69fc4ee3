//! Content-addressed object keys (opt-in, `CONTENT_ADDRESSED_KEYS`): a
//! value is stored at `{namespace}/{topic}/lfs/sha256/obj-{sha256}`, so the
//! same payload produced twice to a topic is stored once and every record
//! carrying it points to the one object.
//!
//! Writing: the value is uploaded under a fresh key while it is hashed
//! (the hash is known only at its end), then copied onto its content key
//! (S3 `CopyObject`, inside the store; a local copy on a directory) and
//! the fresh key deleted. The copy gives the object a new modification
//! time, which the collector's grace period then protects.
//!
//! Deleting: an object shared by records can no longer be deleted when
//! one record's produce fails (another record may point to it), so the
//! proxy never deletes a content key on a request's path; only the
//! collector does, once no record references it. A delete must not meet
//! a writer who just copied the same bytes there (its record is about to
//! reference the object). Both sides follow one protocol through a
//! marker object, `_lfs_gc/{key}`:
//!
//! - the collector creates the marker (exclusive), reads the object's
//!   modification time again, deletes it only if still older than the
//!   cut-off, then removes the marker;
//! - the writer copies, then looks for the marker; if there is one, it
//!   waits for it to go and copies again.
//!
//! If the writer's look finds no marker, the collector's marker came
//! later, so its second read sees the writer's copy and keeps the
//! object. If the look finds one, the writer copies again after the
//! delete. Either way the object exists when the writer's record is
//! produced. A marker left by a collector that died goes stale after
//! `MARKER_STALE` and is ignored.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::store::{BlobStore, StoreError};

/// The key segment after `lfs/` that names content-addressed objects.
pub const SEGMENT: &str = "sha256";
/// Where deletion markers live, at the bucket root.
pub const MARKER_PREFIX: &str = "_lfs_gc";
/// A marker older than this was left by a collector that died.
pub const MARKER_STALE: Duration = Duration::from_secs(60);
/// S3 copies one object of at most 5 GiB in one request; larger values
/// keep their fresh key.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// `{namespace}/{topic}/lfs/sha256/obj-{sha256}`.
pub fn key(namespace: &str, topic: &str, sha256: &str) -> String {
    format!("{namespace}/{topic}/lfs/{SEGMENT}/obj-{sha256}")
}

/// Whether `key` is a content key (`.../lfs/sha256/obj-{64 hex}`).
pub fn is_content_key(key: &str) -> bool {
    let mut parts = key.rsplit('/');
    let (Some(object), Some(segment), Some("lfs")) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    segment == SEGMENT
        && object.strip_prefix("obj-").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

fn marker(key: &str) -> String {
    format!("{MARKER_PREFIX}/{key}")
}

/// Whether a live (not stale) marker stands for `key`.
async fn marked(store: &BlobStore, key: &str) -> Result<bool, object_store::Error> {
    Ok(store
        .head(&marker(key))
        .await?
        .is_some_and(|meta| Utc::now() - meta.last_modified < stale()))
}

fn stale() -> chrono::Duration {
    chrono::Duration::from_std(MARKER_STALE).unwrap_or_default()
}

/// Moves the freshly written object `fresh` onto its content key `target`
/// (see the module's protocol); the fresh key is deleted after.
pub async fn promote(store: &BlobStore, fresh: &str, target: &str) -> Result<(), StoreError> {
    let failed = |source| StoreError::Put {
        key: target.to_owned(),
        source,
    };
    let deadline = tokio::time::Instant::now() + MARKER_STALE + Duration::from_secs(5);
    loop {
        store.copy(fresh, target).await.map_err(failed)?;
        if !marked(store, target).await.map_err(failed)? {
            break;
        }
        // A collector is deleting this key now: copy again once it is done.
        while marked(store, target).await.map_err(failed)? {
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(object_store::Error::Generic {
                    store: "kafka-lfs-proxy",
                    source: format!("{target} stayed marked for deletion").into(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    store.delete_orphan(fresh).await;
    Ok(())
}

/// What [`delete_unreferenced`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// Written again since it was listed (a writer's copy), or another
    /// collector is deleting it: kept.
    Kept,
}

/// Deletes the content-keyed object `key`, judged unreferenced and last
/// modified before `cutoff`, unless a writer copied it again meanwhile.
pub async fn delete_unreferenced(
    store: &BlobStore,
    key: &str,
    cutoff: DateTime<Utc>,
) -> Result<Deletion, object_store::Error> {
    let mark = marker(key);
    let stamp = Utc::now().timestamp_millis().to_string().into_bytes();
    if !store.put_new(&mark, stamp.clone()).await? {
        if marked(store, key).await? {
            return Ok(Deletion::Kept);
        }
        // Stale: its collector died. Take it over.
        store.delete(&mark).await.map_err(generic)?;
        if !store.put_new(&mark, stamp).await? {
            return Ok(Deletion::Kept);
        }
    }
    let outcome = match store.head(key).await {
        Ok(Some(meta)) if meta.last_modified < cutoff => store
            .delete(key)
            .await
            .map(|()| Deletion::Deleted)
            .map_err(generic),
        Ok(_) => Ok(Deletion::Kept),
        Err(e) => Err(e),
    };
    if let Err(error) = store.delete(&mark).await {
        tracing::warn!(%error, marker = %mark, "cannot remove a deletion marker; it goes stale by itself");
    }
    outcome
}

fn generic(e: StoreError) -> object_store::Error {
    object_store::Error::Generic {
        store: "kafka-lfs-proxy",
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn content_keys_are_recognised_exactly() {
        let k = key("ns", "t", SHA);
        assert_eq!(k, format!("ns/t/lfs/sha256/obj-{SHA}"));
        assert!(is_content_key(&k));
        for other in [
            "ns/t/lfs/2026/01/01/obj-1",
            &format!("ns/t/lfs/sha256/obj-{}", &SHA[1..]),
            &format!("ns/t/lfs/sha256/obj-{}", SHA.to_uppercase()),
            &format!("ns/t/x/sha256/obj-{SHA}"),
        ] {
            assert!(!is_content_key(other), "{other}");
        }
    }

    #[tokio::test]
    async fn a_copy_after_the_listing_keeps_the_object_and_a_marker_makes_the_writer_copy_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let target = key("ns", "t", SHA);
        store
            .put("ns/t/lfs/2026/01/01/obj-a", Bytes::from_static(b"test"))
            .await
            .unwrap();
        promote(&store, "ns/t/lfs/2026/01/01/obj-a", &target)
            .await
            .unwrap();
        assert_eq!(store.get(&target).await.unwrap(), &b"test"[..]);
        assert!(
            store
                .head("ns/t/lfs/2026/01/01/obj-a")
                .await
                .unwrap()
                .is_none(),
            "fresh key gone"
        );

        // Listed before the cut-off, then written again: kept.
        let listed_cutoff = Utc::now() - chrono::Duration::seconds(60);
        assert_eq!(
            delete_unreferenced(&store, &target, listed_cutoff)
                .await
                .unwrap(),
            Deletion::Kept
        );
        // Older than the cut-off: deleted, marker removed.
        let later = Utc::now() + chrono::Duration::seconds(1);
        assert_eq!(
            delete_unreferenced(&store, &target, later).await.unwrap(),
            Deletion::Deleted
        );
        assert!(store.head(&marker(&target)).await.unwrap().is_none());

        // A writer that finds a live marker after its copy waits for it to
        // go, then copies again: the object exists when promote returns.
        store
            .put("ns/t/lfs/2026/01/01/obj-b", Bytes::from_static(b"test"))
            .await
            .unwrap();
        store
            .put_new(&marker(&target), b"1".to_vec())
            .await
            .unwrap();
        let writer = {
            let store = store.clone();
            let target = target.clone();
            tokio::spawn(async move { promote(&store, "ns/t/lfs/2026/01/01/obj-b", &target).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The collector's delete lands while the marker stands.
        store.delete(&target).await.unwrap();
        store.delete(&marker(&target)).await.unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(
            store.get(&target).await.unwrap(),
            &b"test"[..],
            "copied again"
        );
    }
}
