//! The proxy's own Kafka client, used by the HTTP API and request-reply:
//! cluster connections, a producer, a partition consumer, a consumer group.

pub mod assignor;
pub mod cluster;
pub mod consumer;
pub mod group;
pub mod leader_queue;
pub mod partitioner;
pub mod producer;
pub mod records;
