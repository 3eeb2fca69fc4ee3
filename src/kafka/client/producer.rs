//! The proxy's own Kafka producer (HTTP sidecar, request-reply gateway and
//! processor, dead letters): each caller awaits its own record's answer,
//! and records produced concurrently share Produce requests.
//!
//! - Batching (`leader_queue`): records go to a queue per partition
//!   leader, whose task sends what is queued as shared Produce requests,
//!   up to four in flight with no partition in two; a lone record leaves
//!   at once, the records that arrive meanwhile leave together. An extra
//!   `linger` (`KAFSCALE_LFS_PROXY_PRODUCE_LINGER_MS`, off by default)
//!   waits that long before each request.
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
//! - Order: a partition's records leave in the order they were queued, so
//!   records produced one after another land in that order.
//! - Connections go through the proxy's `UpstreamSecurity`: the same TLS
//!   and SASL settings as relayed client traffic.

use crate::backoff::Backoff;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::kafka::client::cluster::{CallError, Cluster};
use crate::kafka::client::leader_queue::{self, Queued, MAX_IN_FLIGHT};
use crate::kafka::client::partitioner;

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
        let tx = leader_queue::start(Arc::clone(&self.cluster), leader, self.linger);
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
