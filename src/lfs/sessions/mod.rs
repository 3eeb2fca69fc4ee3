//! Upload-session state kept in the object store, next to the multipart
//! upload, so that any replica sharing the store can take the next part,
//! complete or abort, and a restarted proxy goes on where it was.
//!
//! Layout, under `_lfs_uploads/{namespace}/{upload_id}/`:
//!
//! | object | written | holds |
//! |---|---|---|
//! | `session.json` | once, at init | owner, target, size, checksum, object key, expiry, the [`ResumableUpload`] |
//! | `part-NNNNN.json` | claimed by exclusive create, rewritten once stored | etag, size, offset, the digest state after the part |
//! | `data` | local store only | the staged bytes |
//! | `lock.json` | exclusive create | held while a request completes, aborts or expires the session |
//! | `stored.json` | under the lock | the object is complete; its envelope is not yet in Kafka |
//! | `end.json` | exclusive create, under the lock | the session is over, and why: a tombstone kept `TOMBSTONE_FOR` |
//!
//! The only primitive needed is an exclusive create (S3 `If-None-Match: *`,
//! `O_EXCL` on a directory): S3 offers no compare-and-swap every
//! S3-compatible store implements. Hence:
//! - A part is claimed by creating its record; a second request for the
//!   same part with the same bytes (a retry on another replica) goes on
//!   and writes the same bytes again; other bytes are a conflict. Part `n`
//!   continues the digest from part `n - 1`'s record, so the SHA-256 of the
//!   whole object is known at `complete` without reading anything back.
//! - Ending a session (complete, abort, expiry) takes the lock; `end.json`
//!   is created exclusively, so an expiry found by several replicas at
//!   once is carried out, and counted, once.

mod records;

pub use records::{
    EndRecord, Ended, LockOutcome, PartRecord, SessionDir, SessionListing, SessionRecord,
    StoredRecord,
};

use std::time::Duration;

use super::store::BlobStore;

pub use super::resumable::ResumableUpload;

/// Where session state lives, at the bucket root (beside `_lfs_pending`
/// and `_lfs_idempotency`), outside every `{namespace}/{topic}/lfs/` prefix
/// the garbage collector sweeps.
pub const PREFIX: &str = "_lfs_uploads";

/// How long an ended session is remembered (expired: 410, not 404), and
/// how long the collector keeps sparing its object.
pub const TOMBSTONE_FOR: Duration = Duration::from_secs(3600);

/// A lock older than this was left by a process that died; it is taken
/// over. Longer than completing the largest upload and producing its
/// envelope take.
pub const LOCK_STALE: Duration = Duration::from_secs(600);

/// The prefix of a namespace's sessions.
pub fn namespace_prefix(namespace: &str) -> String {
    format!("{PREFIX}/{namespace}")
}

/// The upload ids with state in the store.
pub async fn session_ids(
    store: &BlobStore,
    namespace: &str,
) -> Result<Vec<String>, object_store::Error> {
    store.child_prefixes(&namespace_prefix(namespace)).await
}

/// The object keys of every session in the store, open or recently ended:
/// the collector spares them, because a multipart object's modification
/// time is when its upload began (S3), so an object completed just now
/// for a long session can look older than the grace period while its
/// envelope is being produced.
pub async fn object_keys(
    store: &BlobStore,
    namespace: &str,
) -> Result<std::collections::HashSet<String>, object_store::Error> {
    let mut keys = std::collections::HashSet::new();
    for id in session_ids(store, namespace).await? {
        let dir = SessionDir::new(store.clone(), namespace, &id);
        if let Some(session) = dir.session().await? {
            keys.insert(session.upload.key);
        } else if let Some(end) = dir.end().await? {
            keys.extend(end.object_key);
        }
    }
    Ok(keys)
}
