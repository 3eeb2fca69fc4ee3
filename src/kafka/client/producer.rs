//! The HTTP sidecar's Kafka producer: one record at a time, straight to the
//! partition leader, with the broker's answer checked.
//!
//! - Partition: the one asked for, else Kafka's default partitioner on the
//!   key, else round-robin over the topic's partitions.
//! - Metadata v4 (auto-creation allowed, as a normal producer asks) finds
//!   the partition count and leaders; it is cached per topic and refreshed
//!   when a broker says the leader moved.
//! - Produce v7, acks=all. Retriable errors (leader moves, a topic being
//!   created, a lost connection) are retried with back-off until the
//!   request timeout; anything else is returned with its Kafka error name.
//!   A retry after a lost answer can write the record twice (at least once).
//! - Connections go through the proxy's `UpstreamSecurity`: the same TLS
//!   and SASL settings as relayed client traffic.

use crate::backoff::Backoff;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use crate::kafka::client::cluster::{CallError, Cluster};
use crate::kafka::client::partitioner;

const PRODUCE_VERSION: i16 = 7;
/// How long a topic's partition count and leaders are trusted.
const METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// A record to produce.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    /// `None`: a tombstone (a delete on a compacted topic).
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}

/// Where the broker wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// No broker answered in time; worth retrying later.
    #[error("Kafka unavailable: {0}")]
    Unavailable(String),
    #[error("topic {topic} has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        topic: String,
        partition: i32,
        partitions: i32,
    },
    /// The broker refused the record (or the topic) with a Kafka error.
    #[error("broker refused the record: {name} ({code}){}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused {
        code: i16,
        name: String,
        retriable: bool,
        detail: Option<String>,
    },
    #[error("cannot build the record: {0}")]
    Encode(String),
    /// The broker refused the proxy's own login.
    #[error("Kafka login refused: {0}")]
    Login(String),
}

impl From<CallError> for ProduceError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Unavailable(m) => ProduceError::Unavailable(m),
            CallError::Login(m) => ProduceError::Login(m),
        }
    }
}

impl ProduceError {
    fn refused(code: i16, detail: Option<String>) -> Self {
        let error = ResponseError::try_from_code(code);
        ProduceError::Refused {
            code,
            name: error
                .map(|e| format!("{e:?}"))
                .unwrap_or_else(|| "UNKNOWN".into()),
            retriable: error.is_some_and(|e| e.is_retriable()),
            detail,
        }
    }

    fn is_retriable(&self) -> bool {
        match self {
            ProduceError::Unavailable(_) => true,
            ProduceError::Refused { retriable, .. } => *retriable,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct TopicLayout {
    /// Leader node id by partition index (-1 while there is none).
    leaders: Vec<i32>,
    fetched: Instant,
}

/// The producer; cheap to share behind an `Arc`.
pub struct Producer {
    cluster: Cluster,
    topics: Mutex<HashMap<String, TopicLayout>>,
    round_robin: AtomicU32,
}

impl Producer {
    /// A producer that reaches the brokers through `cluster` (its own:
    /// the connections are held one request at a time).
    pub fn new(cluster: Cluster) -> Self {
        Producer {
            cluster,
            topics: Mutex::new(HashMap::new()),
            round_robin: AtomicU32::new(0),
        }
    }

    /// Produces `record` and returns its partition and offset.
    pub async fn produce(&self, record: &OutgoingRecord) -> Result<Produced, ProduceError> {
        let batch = encode_batch(record)?;
        let deadline = Instant::now() + self.cluster.request_timeout();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut partition = record.partition;
        let mut refresh = false;
        loop {
            let attempt = self.attempt(record, &mut partition, &batch, refresh).await;
            match attempt {
                Ok(produced) => return Ok(produced),
                Err(e) if e.is_retriable() && Instant::now() + backoff.nominal() < deadline => {
                    tracing::debug!(error = %e, topic = %record.topic, "produce retry");
                    tokio::time::sleep(backoff.next_wait()).await;
                    refresh = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attempt(
        &self,
        record: &OutgoingRecord,
        partition: &mut Option<i32>,
        batch: &Bytes,
        refresh: bool,
    ) -> Result<Produced, ProduceError> {
        let layout = self.layout(&record.topic, refresh).await?;
        let count = layout.leaders.len() as i32;
        let chosen = match (*partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partitioner::partition_for_key(key, count),
            (None, None) => {
                (self.round_robin.fetch_add(1, Ordering::Relaxed) % count as u32) as i32
            }
        };
        if chosen < 0 || chosen >= count {
            return Err(ProduceError::NoSuchPartition {
                topic: record.topic.clone(),
                partition: chosen,
                partitions: count,
            });
        }
        // A retry keeps the partition first chosen (order per key).
        *partition = Some(chosen);
        let leader = layout.leaders[chosen as usize];
        if leader < 0 {
            return Err(ProduceError::refused(5, Some("no leader yet".into())));
        }
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(
                self.cluster
                    .request_timeout()
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            )
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(record.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(chosen)
                    .with_records(Some(batch.clone()))])]);
        let response = self
            .cluster
            .call_node(leader, PRODUCE_VERSION, &request, Duration::ZERO)
            .await?;
        let answer = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == chosen)
            .ok_or_else(|| {
                ProduceError::Unavailable("Produce response does not name the partition".into())
            })?;
        if answer.error_code != 0 {
            return Err(ProduceError::refused(
                answer.error_code,
                answer.error_message.as_ref().map(|m| m.to_string()),
            ));
        }
        Ok(Produced {
            partition: chosen,
            offset: answer.base_offset,
        })
    }

    /// The topic's partitions and leaders, from cache or a Metadata call.
    async fn layout(&self, topic: &str, refresh: bool) -> Result<TopicLayout, ProduceError> {
        if !refresh {
            if let Some(l) = self.topics.lock().await.get(topic) {
                if l.fetched.elapsed() < METADATA_MAX_AGE {
                    return Ok(l.clone());
                }
            }
        }
        let metadata = self.cluster.metadata(&[topic], true).await?;
        let t = metadata
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .ok_or_else(|| ProduceError::Unavailable("Metadata response lacks the topic".into()))?;
        if t.error_code != 0 {
            return Err(ProduceError::refused(t.error_code, None));
        }
        if t.partitions.is_empty() {
            return Err(ProduceError::refused(
                5,
                Some("topic has no partitions yet".into()),
            ));
        }
        let mut leaders = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition_index)
                .ok()
                .and_then(|i| leaders.get_mut(i))
            {
                *slot = p.leader_id.0;
            }
        }
        let layout = TopicLayout {
            leaders,
            fetched: Instant::now(),
        };
        self.topics
            .lock()
            .await
            .insert(topic.to_owned(), layout.clone());
        Ok(layout)
    }
}

/// One uncompressed v2 batch holding `record`, timestamped now.
fn encode_batch(record: &OutgoingRecord) -> Result<Bytes, ProduceError> {
    let headers: IndexMap<StrBytes, Option<Bytes>> = record
        .headers
        .iter()
        .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(v.clone())))
        .collect();
    let timestamp = chrono::Utc::now().timestamp_millis();
    let r = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    };
    crate::kafka::wire::batches::encode_v2(std::slice::from_ref(&r), Compression::None)
        .map_err(|e| ProduceError::Encode(e.to_string()))
}
