//! Topic names by topic id. Fetch v13 and later name topics only by id,
//! but an envelope is checked against the topic's name (its key holds it),
//! so the proxy learns the pairs from the Metadata responses it relays:
//! a client asks Metadata, through the proxy, before it can fetch.

use std::collections::HashMap;
use std::sync::RwLock;

use kafka_protocol::messages::MetadataResponse;
use uuid::Uuid;

/// Bounds the map: a cluster with more topics than this keeps the most
/// recently named ones (the map starts afresh when full).
const MAX_TOPICS: usize = 100_000;

#[derive(Default)]
pub struct TopicIds(RwLock<HashMap<Uuid, String>>);

impl TopicIds {
    pub fn name(&self, id: Uuid) -> Option<String> {
        self.0.read().ok()?.get(&id).cloned()
    }

    /// Records the ids a Metadata response names (v10 and later carry them).
    pub fn learn(&self, metadata: &MetadataResponse) {
        let named: Vec<(Uuid, String)> = metadata
            .topics
            .iter()
            .filter(|t| !t.topic_id.is_nil())
            .filter_map(|t| Some((t.topic_id, t.name.as_ref()?.0.to_string())))
            .collect();
        if named.is_empty() {
            return;
        }
        let Ok(mut map) = self.0.write() else { return };
        if map.len() + named.len() > MAX_TOPICS {
            map.clear();
        }
        map.extend(named);
    }
}
