//! The objects a topic's log still references: every envelope of this
//! proxy's bucket and namespace, read from the log start of every
//! partition to the log end seen when the read began.
//!
//! - What counts as a reference is read leniently, so that a doubt keeps
//!   an object: any value that is a JSON object with a `kfs_lfs` field and
//!   a string `key` references that key, whatever its other fields (a
//!   KafScale envelope, a newer version), its bucket or its declared size.
//!   Only the keys under the swept topic's prefix matter: the resolver
//!   accepts an envelope only on the topic its key names
//!   (`lfs::resolve`), so a copy on another topic never kept an object.
//! - Every record still in the log counts, whatever the topic's cleanup
//!   policy: on a compacted topic an overwritten value's object is freed
//!   once the broker's cleaner has removed the old record, never while a
//!   consumer reading from the start can still see it.
//! - Memory: a referenced object is held as the first 16 bytes of the
//!   SHA-256 of its key (a collision can only keep an object, never delete
//!   one), so a million references take about 32 MiB with the set's
//!   overhead; records are read a Fetch at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::kafka::client::cluster::{CallError, Cluster};
use crate::kafka::client::consumer::{PartitionConsumer, StartAt};

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC: i16 = 3;
/// Extra polls past the log end seen at the start, until one is empty:
/// a broker that reports a short log end (tansu after multi-record
/// batches) still has every record read. More records only add
/// references.
const POLLS_PAST_END: usize = 10;
/// How much one partition's Fetch brings at most.
const PARTITION_MAX_BYTES: usize = 4 << 20;

/// The referenced objects of one topic, by key digest.
#[derive(Debug, Default)]
pub struct References {
    ids: HashSet<u128>,
    /// Records read.
    pub records: u64,
}

impl References {
    pub fn contains(&self, key: &str) -> bool {
        self.ids.contains(&key_id(key))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Counts `key` as referenced.
    pub fn add(&mut self, key: &str) {
        self.ids.insert(key_id(key));
    }
}

/// The object key a record value references, read leniently.
fn referenced_key(value: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct AnyEnvelope {
        #[allow(dead_code)]
        kfs_lfs: serde_json::Value,
        key: String,
    }
    let start = value.iter().position(|b| !b.is_ascii_whitespace())?;
    if value[start] != b'{' || memchr::memmem::find(value, b"\"kfs_lfs\"").is_none() {
        return None;
    }
    serde_json::from_slice::<AnyEnvelope>(value)
        .ok()
        .map(|e| e.key)
}

/// The first 16 bytes of the SHA-256 of an object key.
fn key_id(key: &str) -> u128 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// What the log says about a topic.
#[derive(Debug)]
pub enum TopicLog {
    /// The broker does not know the topic (deleted, or never created).
    Missing,
    Read(References),
}

/// Reads `topic` from its log start and collects the objects its
/// envelopes reference. `progress` is called every few seconds with the
/// records read so far.
pub async fn read_references(
    cluster: Arc<Cluster>,
    topic: &str,
    mut progress: impl FnMut(u64),
) -> Result<TopicLog, CallError> {
    let metadata = cluster.metadata(&[topic], false).await?;
    let Some(listed) = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Err(CallError::Unavailable(format!(
            "Metadata does not answer for topic {topic}"
        )));
    };
    if listed.error_code == UNKNOWN_TOPIC {
        return Ok(TopicLog::Missing);
    }
    if listed.error_code != 0 {
        // Not authorised, not ready: never taken for a missing topic.
        return Err(CallError::Unavailable(format!(
            "Metadata for topic {topic}: error {}",
            listed.error_code
        )));
    }
    if listed.partitions.is_empty() {
        // A topic being created: reading nothing would reference nothing.
        return Err(CallError::Unavailable(format!(
            "topic {topic} has no partitions yet"
        )));
    }
    let mut consumer = PartitionConsumer::new(
        Arc::clone(&cluster),
        Duration::from_millis(100),
        PARTITION_MAX_BYTES,
    );
    let assigned = consumer
        .assign_topics(&[topic], StartAt::Earliest, false)
        .await?;
    if assigned.get(topic).copied().unwrap_or(0) != listed.partitions.len() {
        return Err(CallError::Unavailable(format!(
            "topic {topic} changed while being read (partitions added or leaders moving); try again"
        )));
    }
    let mut ends = Vec::new();
    for (partition, leader) in listed
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
    {
        ends.push((partition, consumer.log_end(leader, topic, partition).await?));
    }
    let mut references = References::default();
    let mut reported = Instant::now();
    let mut past_end = 0;
    loop {
        let records = consumer.poll().await?;
        let got = !records.is_empty();
        for record in records {
            references.records += 1;
            if let Some(key) = record.value.as_deref().and_then(referenced_key) {
                references.add(&key);
            }
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            progress(references.records);
        }
        let positions = consumer.positions();
        let at_end = ends.iter().all(|(partition, end)| {
            positions
                .iter()
                .any(|(_, p, position)| p == partition && position >= end)
        });
        if at_end {
            if !got || past_end >= POLLS_PAST_END {
                return Ok(TopicLog::Read(references));
            }
            past_end += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_envelope_shape_references_its_key_and_other_values_nothing() {
        let ours = br#"{"kfs_lfs":1,"bucket":"b","key":"ns/t/lfs/2026/01/01/obj-a","size":1,"sha256":"00"}"#;
        assert_eq!(
            referenced_key(ours).as_deref(),
            Some("ns/t/lfs/2026/01/01/obj-a")
        );
        let newer = br#" {"kfs_lfs":2,"key":"k","size":99999999999999,"future":true}"#;
        assert_eq!(
            referenced_key(newer).as_deref(),
            Some("k"),
            "unknown fields and sizes keep it"
        );
        assert_eq!(referenced_key(b"plain bytes"), None);
        assert_eq!(referenced_key(br#"{"kfs_lfs":1}"#), None, "no key");
        assert_eq!(referenced_key(br#"{"key":"k"}"#), None, "not an envelope");
    }

    #[test]
    fn references_are_matched_by_key_and_only_by_key() {
        let mut refs = References::default();
        refs.add("ns/t/lfs/2026/01/01/obj-a");
        assert!(refs.contains("ns/t/lfs/2026/01/01/obj-a"));
        assert!(!refs.contains("ns/t/lfs/2026/01/01/obj-b"));
        assert!(!refs.contains("ns/u/lfs/2026/01/01/obj-a"));
        assert_eq!(refs.len(), 1);
    }
}
