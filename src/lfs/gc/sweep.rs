//! The store side of a collection: the objects under one topic's prefix,
//! streamed page by page, each judged against the log's references and
//! the grace cut-off.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::references::References;
use crate::lfs::content_address;
use crate::lfs::store::BlobStore;

/// How one object was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An envelope in the log points to it.
    Referenced,
    /// Unreferenced, but the object of an upload session (open, or ended
    /// within `sessions::TOMBSTONE_FOR`): its envelope may be on its way.
    InSession,
    /// Unreferenced but modified after the cut-off: its record may still
    /// be on its way.
    Young,
    /// Unreferenced and older than the cut-off.
    Unreferenced,
}

/// Counts of one topic's sweep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepCounts {
    pub scanned: u64,
    pub referenced: u64,
    pub young: u64,
    /// Judged [`Verdict::InSession`].
    pub in_session: u64,
    pub unreferenced: u64,
    /// Bytes of the unreferenced objects (reclaimed when deleting).
    pub unreferenced_bytes: u64,
    pub deleted: u64,
    /// Bytes of the objects deleted.
    pub deleted_bytes: u64,
    pub delete_failures: u64,
}

/// Judges an object. `references` `None`: the topic is gone, so nothing
/// references anything. `in_sessions`: the objects of upload sessions.
pub fn judge(
    key: &str,
    modified: DateTime<Utc>,
    references: Option<&References>,
    in_sessions: &HashSet<String>,
    cutoff: DateTime<Utc>,
) -> Verdict {
    if references.is_some_and(|r| r.contains(key)) {
        Verdict::Referenced
    } else if in_sessions.contains(key) {
        Verdict::InSession
    } else if modified >= cutoff {
        Verdict::Young
    } else {
        Verdict::Unreferenced
    }
}

/// An object name the proxy writes: `.../lfs/yyyy/mm/dd/obj-{id}`. Anything
/// else under the prefix is not the collector's to judge.
fn is_lfs_object(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("obj-"))
}

/// Deletes an unreferenced object; `Ok(false)` when a content key was
/// written again meanwhile (`content_address`'s protocol) and is kept.
async fn remove(store: &BlobStore, key: &str, cutoff: DateTime<Utc>) -> Result<bool, String> {
    if content_address::is_content_key(key) {
        return content_address::delete_unreferenced(store, key, cutoff)
            .await
            .map(|d| d == content_address::Deletion::Deleted)
            .map_err(|e| e.to_string());
    }
    store
        .delete(key)
        .await
        .map(|()| true)
        .map_err(|e| e.to_string())
}

/// Sweeps the objects under `prefix`; `on_unreferenced` is told of each
/// object that is (or, in a dry run, would be) deleted.
#[allow(clippy::too_many_arguments)]
pub async fn sweep(
    store: &BlobStore,
    prefix: &str,
    references: Option<&References>,
    in_sessions: &HashSet<String>,
    cutoff: DateTime<Utc>,
    delete: bool,
    mut on_unreferenced: impl FnMut(&str, u64, Result<(), String>),
    mut progress: impl FnMut(&SweepCounts),
) -> Result<SweepCounts, object_store::Error> {
    let mut counts = SweepCounts::default();
    let mut listing = store.list_objects(prefix);
    let mut reported = Instant::now();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let key = meta.location.to_string();
        if !is_lfs_object(&key) {
            continue;
        }
        counts.scanned += 1;
        match judge(&key, meta.last_modified, references, in_sessions, cutoff) {
            Verdict::Referenced => counts.referenced += 1,
            Verdict::InSession => counts.in_session += 1,
            Verdict::Young => counts.young += 1,
            Verdict::Unreferenced => {
                let outcome = if delete {
                    match remove(store, &key, cutoff).await {
                        Ok(true) => {
                            counts.deleted += 1;
                            counts.deleted_bytes += meta.size;
                            Ok(())
                        }
                        Ok(false) => {
                            // A content key written again since it was listed.
                            counts.young += 1;
                            continue;
                        }
                        Err(e) => {
                            counts.delete_failures += 1;
                            Err(e)
                        }
                    }
                } else {
                    Ok(())
                };
                counts.unreferenced += 1;
                counts.unreferenced_bytes += meta.size;
                on_unreferenced(&key, meta.size, outcome);
            }
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            progress(&counts);
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referenced_objects_are_kept_whatever_their_age_and_young_ones_by_the_grace() {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::hours(1);
        let old = now - chrono::Duration::days(30);
        let mut refs = References::default();
        let none = HashSet::new();
        let key = "ns/t/lfs/2026/01/01/obj-a";
        refs.add(key);
        assert_eq!(
            judge(key, old, Some(&refs), &none, cutoff),
            Verdict::Referenced
        );
        let other = "ns/t/lfs/2026/01/01/obj-b";
        assert_eq!(
            judge(other, old, Some(&refs), &none, cutoff),
            Verdict::Unreferenced
        );
        assert_eq!(judge(key, old, None, &none, cutoff), Verdict::Unreferenced);
        let sessions: HashSet<String> = [key.to_owned(), other.to_owned()].into();
        assert_eq!(
            judge(other, old, None, &sessions, cutoff),
            Verdict::InSession
        );
        assert_eq!(
            judge(key, old, Some(&refs), &sessions, cutoff),
            Verdict::Referenced,
            "a reference counts first"
        );
        assert_eq!(judge(key, now, None, &none, cutoff), Verdict::Young);
        assert_eq!(
            judge(key, cutoff, None, &none, cutoff),
            Verdict::Young,
            "at the cut-off is kept"
        );
        assert!(is_lfs_object(key));
        assert!(!is_lfs_object("ns/t/lfs/sessions/upload-1.json"));
    }

    #[tokio::test]
    async fn session_objects_are_spared_and_content_keys_deleted_under_their_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let in_session = "ns/t/lfs/2026/01/01/obj-session";
        let plain = "ns/t/lfs/2026/01/01/obj-plain";
        let content = content_address::key("ns", "t", &"cd".repeat(32));
        for key in [in_session, plain, content.as_str()] {
            store
                .put(key, bytes::Bytes::from_static(b"v"))
                .await
                .unwrap();
        }
        let spared: HashSet<String> = [in_session.to_owned()].into();
        let cutoff = Utc::now() + chrono::Duration::seconds(5);
        let mut gone = Vec::new();
        let counts = sweep(
            &store,
            "ns/t/lfs",
            None,
            &spared,
            cutoff,
            true,
            |key, _, outcome| gone.push((key.to_owned(), outcome.is_ok())),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(
            (counts.scanned, counts.in_session, counts.deleted),
            (3, 1, 2)
        );
        gone.sort();
        assert_eq!(
            gone,
            vec![(plain.to_owned(), true), (content.clone(), true)]
        );
        assert_eq!(store.list("ns").await.unwrap(), vec![in_session.to_owned()]);
        assert!(
            store.list("_lfs_gc").await.unwrap().is_empty(),
            "marker removed"
        );
    }
}
