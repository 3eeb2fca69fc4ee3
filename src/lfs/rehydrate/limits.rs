//! What a consumer asked for in its Fetch request: the response's and
//! each partition's byte limits, which the rehydrated response keeps to
//! (after the first batch, see the parent module).

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::protocol::Decodable;
use uuid::Uuid;

/// How a Fetch request names a topic: by name before v13, by id after.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// What the consumer asked for, from its Fetch request.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    pub(super) max_bytes: usize,
    partitions: HashMap<(TopicRef, i32), usize>,
}

impl FetchLimits {
    /// Reads the limits of a Fetch request body (after its header).
    pub fn from_request(mut body: Bytes, version: i16) -> Result<Self, anyhow::Error> {
        let request = FetchRequest::decode(&mut body, version)?;
        let mut partitions = HashMap::new();
        for topic in &request.topics {
            let topic_ref = topic_ref(version, &topic.topic.0, topic.topic_id);
            for p in &topic.partitions {
                partitions.insert(
                    (topic_ref.clone(), p.partition),
                    p.partition_max_bytes.max(0) as usize,
                );
            }
        }
        Ok(FetchLimits {
            // v0–v2 have no response limit.
            max_bytes: if version >= 3 {
                request.max_bytes.max(0) as usize
            } else {
                usize::MAX
            },
            partitions,
        })
    }

    /// No limits (a request that could not be read).
    pub fn unlimited() -> Self {
        FetchLimits {
            max_bytes: usize::MAX,
            partitions: HashMap::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn set_partition(&mut self, topic: TopicRef, partition: i32, bytes: usize) {
        self.partitions.insert((topic, partition), bytes);
    }

    pub(super) fn partition(&self, topic: &TopicRef, partition: i32) -> usize {
        self.partitions
            .get(&(topic.clone(), partition))
            .copied()
            .unwrap_or(usize::MAX)
    }
}

pub(super) fn topic_ref(version: i16, name: &str, id: Uuid) -> TopicRef {
    if version >= 13 {
        TopicRef::Id(id)
    } else {
        TopicRef::Name(name.to_owned())
    }
}
