//! Garbage collection tied to Kafka: the objects under
//! `{namespace}/{topic}/lfs/` that no envelope still in the topic's log
//! references, and that are older than a grace period, are deleted (or,
//! in a dry run, listed).
//!
//! The safety argument, with `T0` the moment a topic's collection starts
//! and `W` the longest time between an object's upload and its record's
//! commit (the produce timeout and retries of whoever produced it):
//!
//! 1. An object is written before the record that references it is
//!    produced (the proxy uploads, then produces the envelope).
//! 2. The log end `E` is read after `T0`, and the log is read from its
//!    start to at least `E`. A record committed before `E` was read is
//!    therefore seen, and its object is referenced — unless retention or
//!    compaction removed the record meanwhile, which makes the object
//!    garbage anyway.
//! 3. A record committed after that was committed after `T0`, so its
//!    object was uploaded after `T0 - W`. Objects are deleted only when
//!    last modified before `T0 - grace`; with `grace ≥ W` such an object
//!    is never deleted.
//! 4. The store is listed after the log is read, so an object uploaded
//!    during the read is at most as old as the read, far younger than
//!    the grace period.
//!
//! 5. An upload session's object is written when the session completes,
//!    but on S3 it carries the time its multipart upload *began*, which
//!    can be older than the grace period. The objects of sessions in the
//!    store (open, or ended within `sessions::TOMBSTONE_FOR`) are spared,
//!    read after the log, so a session completed during the read is
//!    still among them.
//!
//! Several collectors or proxies at once are safe by the same argument:
//! each deletes only what it proved unreferenced; a second delete of the
//! same object is a no-op. A run stopped part way leaves no partial
//! state: rerun it, and it lists only what is left.

mod background;
mod references;
mod sweep;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use background::collect_every;
pub use references::{read_references, References, TopicLog};
pub use sweep::{judge, sweep, SweepCounts, Verdict};

use crate::kafka::client::cluster::{CallError, Cluster};
use crate::lfs::store::BlobStore;

/// Why a topic could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("reading the topic's log: {0}")]
    Kafka(#[from] CallError),
    #[error("listing the store: {0}")]
    Store(#[from] object_store::Error),
}

/// One topic's outcome.
#[derive(Debug, Clone)]
pub struct TopicReport {
    pub topic: String,
    /// The broker no longer knows the topic: every old object is garbage.
    pub topic_missing: bool,
    pub records_read: u64,
    pub counts: SweepCounts,
}

/// The topics with objects in the store (the names under `{namespace}/`).
pub async fn topics_in_store(
    store: &BlobStore,
    namespace: &str,
) -> Result<Vec<String>, object_store::Error> {
    let mut topics = store.child_prefixes(namespace).await?;
    topics.sort();
    Ok(topics)
}

/// What one collection needs.
pub struct Collector {
    pub store: BlobStore,
    /// The namespace whose `{namespace}/{topic}/lfs/` prefixes are swept.
    pub namespace: String,
    pub cluster: Arc<Cluster>,
    /// Objects modified after `started - grace` are kept.
    pub grace: chrono::Duration,
    pub delete: bool,
}

impl Collector {
    /// Collects one topic: reads its log, then sweeps its prefix.
    pub async fn collect(
        &self,
        topic: &str,
        on_unreferenced: impl FnMut(&str, u64, Result<(), String>),
    ) -> Result<TopicReport, GcError> {
        let started: DateTime<Utc> = Utc::now();
        let cutoff = started - self.grace;
        let log = read_references(Arc::clone(&self.cluster), topic, |records| {
            tracing::info!(topic, records, "gc: reading the log");
        })
        .await?;
        let (references, records_read, topic_missing) = match log {
            TopicLog::Missing => (None, 0, true),
            TopicLog::Read(r) => {
                let n = r.records;
                (Some(r), n, false)
            }
        };
        tracing::info!(
            topic,
            records_read,
            referenced = references.as_ref().map_or(0, |r| r.len()),
            topic_missing,
            "gc: log read; listing the store"
        );
        let prefix = format!("{}/{topic}/lfs", self.namespace);
        let in_sessions = crate::lfs::sessions::object_keys(&self.store, &self.namespace).await?;
        let counts = sweep(
            &self.store,
            &prefix,
            references.as_ref(),
            &in_sessions,
            cutoff,
            self.delete,
            on_unreferenced,
            |c| {
                tracing::info!(
                    topic,
                    scanned = c.scanned,
                    unreferenced = c.unreferenced,
                    "gc: listing"
                )
            },
        )
        .await?;
        metrics::counter!(crate::metrics::GC_OBJECTS_SCANNED_TOTAL).increment(counts.scanned);
        metrics::counter!(crate::metrics::GC_OBJECTS_REFERENCED_TOTAL).increment(counts.referenced);
        metrics::counter!(crate::metrics::GC_OBJECTS_DELETED_TOTAL).increment(counts.deleted);
        metrics::counter!(crate::metrics::GC_BYTES_RECLAIMED_TOTAL).increment(counts.deleted_bytes);
        Ok(TopicReport {
            topic: topic.to_owned(),
            topic_missing,
            records_read,
            counts,
        })
    }
}
