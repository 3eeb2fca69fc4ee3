//! Large-value offload (claim-check): envelope, checksums, storage, the one
//! offload path, and the Produce rewrite and response merge that apply it
//! to Kafka traffic.

pub mod backend;
mod bucket;
pub mod checksum;
pub mod cleanup;
pub mod content_address;
pub mod envelope;
pub mod gc;
pub mod idempotency;
pub mod multipart;
pub mod offload;
pub mod ranged_read;
pub mod rehydrate;
pub mod resolve;
pub mod response;
pub mod resumable;
pub mod rewrite;
pub mod sessions;
pub mod store;
pub mod writer;

use std::collections::HashSet;

use checksum::ChecksumAlg;
use store::BlobStore;

/// Which topics may be offloaded.
#[derive(Debug, Clone, Default)]
pub struct TopicFilter(Option<HashSet<String>>);

impl TopicFilter {
    /// `None` or an empty list: every topic.
    pub fn new(topics: Option<Vec<String>>) -> Self {
        TopicFilter(
            topics
                .filter(|t| !t.is_empty())
                .map(|t| t.into_iter().collect()),
        )
    }

    pub fn allows(&self, topic: &str) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(topic))
    }
}

/// Everything the offload needs: where objects go and the rules for them.
#[derive(Debug, Clone)]
pub struct Lfs {
    pub store: BlobStore,
    pub namespace: String,
    pub proxy_id: String,
    pub max_blob_size: u64,
    pub default_alg: ChecksumAlg,
    pub topics: TopicFilter,
    /// Name objects by their SHA-256 (`content_address`).
    pub content_addressed: bool,
}

impl Lfs {
    /// The envelopes this proxy resolves: its bucket and namespace, values
    /// up to `max_blob_size`.
    pub fn envelope_scope(&self) -> resolve::EnvelopeScope {
        resolve::EnvelopeScope {
            bucket: self.store.bucket().to_owned(),
            namespace: self.namespace.clone(),
            max_size: self.max_blob_size,
        }
    }
}
