//! The proxy's own Kafka producer (HTTP sidecar, request-reply gateway and
//! processor, dead letters): each caller awaits its own record's answer,
//! and records produced concurrently share Produce requests.
//!
//! - Batching: records go to a queue per partition leader; one task per
//!   leader sends everything queued as one Produce (one batch per
//!   partition, as Produce v3+ requires) and hands each record its own
//!   offset (the batch's base offset plus its index). Up to
//!   `MAX_IN_FLIGHT` requests per leader are in flight, each on its own
//!   connection. The linger is "while the requests are in flight": a lone
//!   caller's record leaves at once, and the records that arrive while
//!   every request slot is busy leave together in the next one, so the
//!   request rate stays bounded per round trip per leader however many
//!   callers wait. An extra `linger`
//!   (`KAFSCALE_LFS_PROXY_PRODUCE_LINGER_MS`, off by default) waits that
//!   long after the first record before sending. At most
//!   `MAX_REQUEST_RECORDS` records or `MAX_REQUEST_BYTES` per request.
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
//! - Order: records produced one after another (each awaited before the
//!   next, as every caller here does) land in that order; records produced
//!   concurrently have no order among themselves, which is what lets them
//!   travel in two requests at once.
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
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex, Semaphore};

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

/// Records in one Produce at most.
const MAX_REQUEST_RECORDS: usize = 500;
/// Bytes of keys and values in one Produce at most (a lone larger record
/// still goes, alone).
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Records waiting per leader before callers wait for room.
const QUEUE_DEPTH: usize = 4096;
/// Produce requests in flight per leader at once.
const MAX_IN_FLIGHT: usize = 2;

/// One record waiting for a Produce to its partition's leader.
struct Queued {
    topic: String,
    partition: i32,
    record: OutgoingRecord,
    answer: oneshot::Sender<Result<PartitionAnswer, String>>,
}

/// What the broker said about a record's partition.
#[derive(Debug, Clone)]
struct PartitionAnswer {
    error_code: i16,
    error_message: Option<String>,
    /// The record's own offset.
    offset: i64,
}

/// The producer; cheap to share behind an `Arc`.
pub struct Producer {
    cluster: Arc<Cluster>,
    topics: Mutex<HashMap<String, TopicLayout>>,
    round_robin: AtomicU32,
    queues: std::sync::Mutex<HashMap<i32, mpsc::Sender<Queued>>>,
    linger: Duration,
}

impl Producer {
    /// A producer that reaches the brokers through `cluster` (its own:
    /// the connections are held one request at a time).
    pub fn new(cluster: Cluster) -> Self {
        Producer {
            cluster: Arc::new(cluster.with_connections_per_node(MAX_IN_FLIGHT)),
            topics: Mutex::new(HashMap::new()),
            round_robin: AtomicU32::new(0),
            queues: std::sync::Mutex::new(HashMap::new()),
            linger: Duration::ZERO,
        }
    }

    /// Waits `linger` after a request's first record before sending it.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The queue of `leader`, its task started on first use.
    fn queue(&self, leader: i32) -> mpsc::Sender<Queued> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = queues.get(&leader).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(send_queued(
            Arc::clone(&self.cluster),
            leader,
            rx,
            self.linger,
        ));
        queues.insert(leader, tx.clone());
        tx
    }

    /// Produces `record` and returns its partition and offset.
    pub async fn produce(&self, record: &OutgoingRecord) -> Result<Produced, ProduceError> {
        let deadline = Instant::now() + self.cluster.request_timeout();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut partition = record.partition;
        let mut refresh = false;
        loop {
            let attempt = self.attempt(record, &mut partition, refresh).await;
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
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            topic: record.topic.clone(),
            partition: chosen,
            record: record.clone(),
            answer,
        };
        if self.queue(leader).send(queued).await.is_err() {
            return Err(ProduceError::Unavailable(
                "the produce queue stopped".into(),
            ));
        }
        let answer = answered
            .await
            .map_err(|_| ProduceError::Unavailable("the produce queue stopped".into()))?
            .map_err(ProduceError::Unavailable)?;
        if answer.error_code != 0 {
            return Err(ProduceError::refused(
                answer.error_code,
                answer.error_message,
            ));
        }
        Ok(Produced {
            partition: chosen,
            offset: answer.offset,
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

/// Sends what is queued for one leader, up to `MAX_IN_FLIGHT` Produce
/// requests at a time, until the producer is dropped.
async fn send_queued(
    cluster: Arc<Cluster>,
    leader: i32,
    mut queue: mpsc::Receiver<Queued>,
    linger: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        if !linger.is_zero() {
            tokio::time::sleep(linger).await;
        }
        // Records keep queueing while every slot is busy.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut bytes = record_bytes(&first.record);
        let mut taken = vec![first];
        while taken.len() < MAX_REQUEST_RECORDS && bytes < MAX_REQUEST_BYTES {
            match queue.try_recv() {
                Ok(q) => {
                    bytes += record_bytes(&q.record);
                    taken.push(q);
                }
                Err(_) => break,
            }
        }
        let cluster = Arc::clone(&cluster);
        tokio::spawn(async move {
            send_one_request(&cluster, leader, taken).await;
            drop(slot);
        });
    }
}

fn record_bytes(record: &OutgoingRecord) -> usize {
    record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len())
}

/// One Produce for `taken` (grouped by topic and partition, in arrival
/// order); every record gets its partition's answer.
async fn send_one_request(cluster: &Cluster, leader: i32, taken: Vec<Queued>) {
    let mut groups: Vec<((String, i32), Vec<Queued>)> = Vec::new();
    for q in taken {
        match groups
            .iter_mut()
            .find(|((t, p), _)| *t == q.topic && *p == q.partition)
        {
            Some((_, members)) => members.push(q),
            None => groups.push(((q.topic.clone(), q.partition), vec![q])),
        }
    }
    let mut topics: Vec<TopicProduceData> = Vec::new();
    let mut sent = Vec::new();
    for ((topic, partition), members) in groups {
        let records: Vec<OutgoingRecord> = members.iter().map(|q| q.record.clone()).collect();
        let batch = match encode_batch(&records) {
            Ok(b) => b,
            Err(e) => {
                for q in members {
                    let _ = q.answer.send(Err(e.to_string()));
                }
                continue;
            }
        };
        let data = PartitionProduceData::default()
            .with_index(partition)
            .with_records(Some(batch));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_data(vec![data]),
            ),
        }
        sent.push((topic, partition, members));
    }
    if sent.is_empty() {
        return;
    }
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(cluster.request_timeout().as_millis().min(i32::MAX as u128) as i32)
        .with_topic_data(topics);
    let records: usize = sent.iter().map(|(_, _, members)| members.len()).sum();
    metrics::counter!(crate::metrics::OWN_PRODUCE_REQUESTS_TOTAL).increment(1);
    metrics::counter!(crate::metrics::OWN_PRODUCE_RECORDS_TOTAL).increment(records as u64);
    let response = cluster
        .call_node(leader, PRODUCE_VERSION, &request, Duration::ZERO)
        .await;
    for (topic, partition, members) in sent {
        let answer = match &response {
            Err(e) => Err(e.to_string()),
            Ok(r) => r
                .responses
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == partition)
                .map(|p| PartitionAnswer {
                    error_code: p.error_code,
                    error_message: p.error_message.as_ref().map(|m| m.to_string()),
                    offset: p.base_offset,
                })
                .ok_or_else(|| "Produce response does not name the partition".to_owned()),
        };
        for (i, q) in members.into_iter().enumerate() {
            let mine = answer.clone().map(|mut a| {
                a.offset += i as i64;
                a
            });
            let _ = q.answer.send(mine);
        }
    }
}

/// One uncompressed v2 batch holding `records`, timestamped now.
fn encode_batch(records: &[OutgoingRecord]) -> Result<Bytes, ProduceError> {
    let timestamp = chrono::Utc::now().timestamp_millis();
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, record)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), Some(v.clone())))
                .collect::<IndexMap<StrBytes, Option<Bytes>>>(),
        })
        .collect();
    crate::kafka::wire::batches::encode_v2(&records, Compression::None)
        .map_err(|e| ProduceError::Encode(e.to_string()))
}
