//! The sending side of the producer: one queue and one task per partition
//! leader, turning the records queued by concurrent callers into shared
//! Produce requests.
//!
//! - A request carries everything sendable that is queued for the leader,
//!   one batch per partition (Produce v3+ allows one), at most
//!   `MAX_REQUEST_RECORDS` records or `MAX_REQUEST_BYTES` (a lone larger
//!   record still goes, alone). Each record is answered with its own
//!   offset: its batch's base offset plus its index in the batch.
//! - Up to `MAX_IN_FLIGHT` requests are in flight, each on its own
//!   connection, and **no partition is in two of them**: a partition's
//!   records wait while a request for it is in flight and leave together
//!   in the next one. Two appends to one partition racing on two
//!   connections would rely on the broker serialising them and answering
//!   each with its true base offset; tansu's memory engine does not (two
//!   concurrent batches were answered with the same base offset while both
//!   were written), and per-partition order across retries stays simple.
//! - The linger is "while requests are in flight": a lone record leaves at
//!   once; an extra fixed `linger` (off by default) waits that long before
//!   each request.
//! - Order: a partition's records leave in the order they were queued.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, TimestampType};
use tokio::sync::{mpsc, oneshot};

use super::cluster::Cluster;
use super::producer::{OutgoingRecord, ProduceError};

const PRODUCE_VERSION: i16 = 7;
/// Records in one Produce at most.
const MAX_REQUEST_RECORDS: usize = 500;
/// Bytes of keys and values in one Produce at most (a lone larger record
/// still goes, alone).
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Records waiting per leader (in the channel, and again taken from it
/// but not yet sendable) before callers wait for room.
const QUEUE_DEPTH: usize = 4096;
/// Produce requests in flight per leader at once.
pub const MAX_IN_FLIGHT: usize = 4;

/// One record waiting for a Produce to its partition's leader.
pub struct Queued {
    pub topic: String,
    pub partition: i32,
    pub record: OutgoingRecord,
    pub answer: oneshot::Sender<Result<PartitionAnswer, String>>,
}

/// What the broker said about a record's partition.
#[derive(Debug, Clone)]
pub struct PartitionAnswer {
    pub error_code: i16,
    pub error_message: Option<String>,
    /// The record's own offset.
    pub offset: i64,
}

/// Starts the task sending `leader`'s records and returns its queue; the
/// task ends once every sender is dropped and what was queued has gone.
pub fn start(cluster: Arc<Cluster>, leader: i32, linger: Duration) -> mpsc::Sender<Queued> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    tokio::spawn(send_queued(cluster, leader, rx, linger));
    tx
}

/// The records taken from the channel, and which partitions are in a
/// request in flight.
#[derive(Default)]
struct Pending {
    held: VecDeque<Queued>,
    /// Topic and partition of every request in flight (a few at most).
    busy: Vec<(String, i32)>,
    in_flight: usize,
}

impl Pending {
    fn is_busy(&self, q: &Queued) -> bool {
        self.busy
            .iter()
            .any(|(t, p)| *p == q.partition && *t == q.topic)
    }

    fn finished(&mut self, partitions: Vec<(String, i32)>) {
        self.in_flight -= 1;
        self.busy.retain(|b| !partitions.contains(b));
    }

    fn can_send(&self) -> bool {
        self.in_flight < MAX_IN_FLIGHT && self.held.iter().any(|q| !self.is_busy(q))
    }

    /// The next request's records, in queue order: those of partitions not
    /// in flight, up to the request limits. The rest stay, in order.
    fn take_request(&mut self) -> Vec<Queued> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        let mut kept = VecDeque::with_capacity(self.held.len());
        let mut full = false;
        for q in std::mem::take(&mut self.held) {
            let size = record_bytes(&q.record);
            full = full
                || taken.len() >= MAX_REQUEST_RECORDS
                || (!taken.is_empty() && bytes + size > MAX_REQUEST_BYTES);
            if full || self.is_busy(&q) {
                kept.push_back(q);
            } else {
                bytes += size;
                taken.push(q);
            }
        }
        self.held = kept;
        taken
    }
}

/// Sends what is queued for one leader until the producer is dropped.
async fn send_queued(
    cluster: Arc<Cluster>,
    leader: i32,
    mut queue: mpsc::Receiver<Queued>,
    linger: Duration,
) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Vec<(String, i32)>>();
    let mut pending = Pending::default();
    let mut open = true;
    loop {
        while let Ok(partitions) = done.try_recv() {
            pending.finished(partitions);
        }
        while open && pending.held.len() < QUEUE_DEPTH {
            match queue.try_recv() {
                Ok(q) => pending.held.push_back(q),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if pending.can_send() {
            if !linger.is_zero() {
                tokio::time::sleep(linger).await;
                while pending.held.len() < QUEUE_DEPTH {
                    let Ok(q) = queue.try_recv() else { break };
                    pending.held.push_back(q);
                }
            }
            let taken = pending.take_request();
            let mut partitions: Vec<(String, i32)> = Vec::new();
            for q in &taken {
                if !partitions
                    .iter()
                    .any(|(t, p)| *p == q.partition && *t == q.topic)
                {
                    partitions.push((q.topic.clone(), q.partition));
                }
            }
            pending.busy.extend(partitions.iter().cloned());
            pending.in_flight += 1;
            let cluster = Arc::clone(&cluster);
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                send_one_request(&cluster, leader, taken).await;
                let _ = done_tx.send(partitions);
            });
            continue;
        }
        if !open && pending.held.is_empty() {
            return;
        }
        let room = open && pending.held.len() < QUEUE_DEPTH;
        tokio::select! {
            q = queue.recv(), if room => match q {
                Some(q) => pending.held.push_back(q),
                None => open = false,
            },
            Some(partitions) = done.recv() => pending.finished(partitions),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(topic: &str, partition: i32, value: &str) -> Queued {
        let (answer, _) = oneshot::channel();
        Queued {
            topic: topic.into(),
            partition,
            record: OutgoingRecord {
                topic: topic.into(),
                partition: Some(partition),
                key: None,
                value: Some(Bytes::from(value.to_owned())),
                headers: Vec::new(),
            },
            answer,
        }
    }

    fn values(records: &[Queued]) -> Vec<String> {
        records
            .iter()
            .map(|q| String::from_utf8_lossy(q.record.value.as_deref().unwrap_or_default()).into())
            .collect()
    }

    #[test]
    fn a_partition_in_flight_is_left_for_the_next_request_in_order() {
        let mut pending = Pending::default();
        for (p, v) in [(0, "a"), (1, "b"), (0, "c"), (2, "d"), (1, "e")] {
            pending.held.push_back(queued("t", p, v));
        }
        pending.busy.push(("t".into(), 1));
        pending.in_flight = 1;
        assert!(pending.can_send());
        assert_eq!(values(&pending.take_request()), ["a", "c", "d"]);
        assert_eq!(values(pending.held.make_contiguous()), ["b", "e"]);
        // Same partition number on another topic is not busy.
        pending.held.push_back(queued("u", 1, "f"));
        assert_eq!(values(&pending.take_request()), ["f"]);
        pending.finished(vec![("t".into(), 1)]);
        assert_eq!(pending.in_flight, 0);
        assert_eq!(values(&pending.take_request()), ["b", "e"]);
    }

    #[test]
    fn nothing_is_sent_while_every_slot_is_busy_or_every_partition_in_flight() {
        let mut pending = Pending::default();
        pending.held.push_back(queued("t", 0, "a"));
        pending.busy.push(("t".into(), 0));
        pending.in_flight = 1;
        assert!(!pending.can_send(), "its only partition is in flight");
        pending.held.push_back(queued("t", 1, "b"));
        assert!(pending.can_send());
        pending.in_flight = MAX_IN_FLIGHT;
        assert!(!pending.can_send(), "every slot is busy");
    }

    #[test]
    fn a_request_stops_at_its_limits_and_keeps_the_rest_in_order() {
        let mut pending = Pending::default();
        for i in 0..MAX_REQUEST_RECORDS + 3 {
            pending
                .held
                .push_back(queued("t", (i % 2) as i32, &i.to_string()));
        }
        let first = pending.take_request();
        assert_eq!(first.len(), MAX_REQUEST_RECORDS);
        assert_eq!(
            values(pending.held.make_contiguous()),
            ["500", "501", "502"]
        );

        let mut pending = Pending::default();
        let big = "x".repeat(MAX_REQUEST_BYTES);
        pending.held.push_back(queued("t", 0, &big));
        pending.held.push_back(queued("t", 1, "small"));
        assert_eq!(
            pending.take_request().len(),
            1,
            "a lone large record goes alone"
        );
        assert_eq!(values(&pending.take_request()), ["small"]);
    }
}
