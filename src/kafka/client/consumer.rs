//! A partition consumer for the proxy's own needs (the request-reply reply
//! listener and the processor's group member): it holds a position per
//! assigned partition and fetches from each partition's leader.
//!
//! Protocol rules it follows:
//! - A position is the offset of the next record to read. ListOffsets
//!   turns "earliest" (-2), "latest" (-1) or a timestamp into one; a
//!   timestamp with no later record means the log end.
//! - Fetch v11, no fetch sessions (session epoch -1, the full partition
//!   list each time), read_uncommitted. The broker waits up to
//!   `max_wait` for one byte, so an idle poll costs one round trip.
//! - A fetched records field may end in a partial batch (the broker cuts
//!   at the byte limit); only whole batches are read and the position
//!   moves past the last whole one. A compressed batch may begin before
//!   the position; its earlier records are skipped.
//! - Control batches (transaction markers) only move the position.
//! - OFFSET_OUT_OF_RANGE resets the partition by its reset rule; leader
//!   errors refresh metadata on the next poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::kafka::client::cluster::{CallError, Cluster};

const FETCH_VERSION: i16 = 11;
const LIST_OFFSETS_VERSION: i16 = 2;
use super::records::{decode_records, ConsumedRecord};
use crate::kafka::wire::codes::OFFSET_OUT_OF_RANGE;

/// Where a partition starts when it has no position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    /// The first record with a timestamp at or after this (epoch ms).
    Timestamp(i64),
    Offset(i64),
}

type PartitionId = (Arc<str>, i32);

struct Assigned {
    position: i64,
    leader: i32,
    /// Where to go when the position falls out of the log.
    reset: StartAt,
}

/// A partition whose position fell out of the log (retention deleted the
/// records, or the position was past the end) and was moved by its reset
/// rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionReset {
    pub topic: Arc<str>,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// Positions on a set of partitions; not shared (one task polls it).
pub struct PartitionConsumer {
    cluster: Arc<Cluster>,
    partitions: BTreeMap<PartitionId, Assigned>,
    max_wait: Duration,
    partition_max_bytes: i32,
    stale_leaders: bool,
    /// Resets since the last `take_resets`, when the owner asked for them.
    resets: Option<Vec<PositionReset>>,
}

impl PartitionConsumer {
    pub fn new(cluster: Arc<Cluster>, max_wait: Duration, partition_max_bytes: usize) -> Self {
        PartitionConsumer {
            cluster,
            partitions: BTreeMap::new(),
            max_wait,
            partition_max_bytes: partition_max_bytes.min(i32::MAX as usize) as i32,
            stale_leaders: false,
            resets: None,
        }
    }

    /// Keeps every position reset for [`take_resets`](Self::take_resets)
    /// (for owners that must tell someone records were skipped).
    pub fn reporting_resets(mut self) -> Self {
        self.resets = Some(Vec::new());
        self
    }

    /// The resets since the last call (none unless `reporting_resets`).
    pub fn take_resets(&mut self) -> Vec<PositionReset> {
        self.resets.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The partitions of each topic with their leaders; `create` asks the
    /// broker to create missing topics (as a producer's Metadata does).
    pub async fn partition_counts(
        &self,
        topics: &[&str],
        create: bool,
    ) -> Result<HashMap<String, Vec<(i32, i32)>>, CallError> {
        let metadata = self.cluster.metadata(topics, create).await?;
        let mut out = HashMap::new();
        for t in &metadata.topics {
            let Some(name) = &t.name else { continue };
            if t.error_code != 0 {
                continue;
            }
            let parts = t
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.leader_id.0))
                .collect();
            out.insert(name.0.to_string(), parts);
        }
        Ok(out)
    }

    /// Assigns every partition of `topics` that is not assigned yet, each
    /// at `start` (one Metadata call for all); returns how many it added
    /// per topic. A topic that does not exist (and is not created) adds
    /// none: call again later.
    pub async fn assign_topics(
        &mut self,
        topics: &[&str],
        start: StartAt,
        create: bool,
    ) -> Result<HashMap<String, usize>, CallError> {
        let layout = self.partition_counts(topics, create).await?;
        let mut added = HashMap::new();
        for topic in topics {
            let count = added.entry((*topic).to_owned()).or_insert(0);
            let Some(parts) = layout.get(*topic) else {
                continue;
            };
            let name: Arc<str> = Arc::from(*topic);
            for (partition, leader) in parts {
                let id = (Arc::clone(&name), *partition);
                if self.partitions.contains_key(&id) {
                    continue;
                }
                let position = self.resolve(*leader, &name, *partition, start).await?;
                self.partitions.insert(
                    id,
                    Assigned {
                        position,
                        leader: *leader,
                        reset: start_reset(start),
                    },
                );
                *count += 1;
            }
        }
        Ok(added)
    }

    /// Assigns partitions `(topic, partition, position)` (one Metadata call
    /// for all), each at its position, or at `reset` without one.
    pub async fn assign_partitions(
        &mut self,
        wanted: &[(String, i32, Option<i64>)],
        reset: StartAt,
    ) -> Result<(), CallError> {
        let mut topics: Vec<&str> = wanted.iter().map(|(t, _, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let layout = self.partition_counts(&topics, false).await?;
        for (topic, partition, position) in wanted {
            let leader = layout
                .get(topic)
                .and_then(|ps| ps.iter().find(|(p, _)| p == partition))
                .map(|(_, l)| *l)
                .ok_or_else(|| {
                    CallError::Unavailable(format!("{topic}/{partition} has no leader yet"))
                })?;
            let name: Arc<str> = Arc::from(topic.as_str());
            let position = match position {
                Some(p) if *p >= 0 => *p,
                _ => self.resolve(leader, &name, *partition, reset).await?,
            };
            self.partitions.insert(
                (name, *partition),
                Assigned {
                    position,
                    leader,
                    reset,
                },
            );
        }
        Ok(())
    }

    /// Drops every assignment.
    pub fn unassign_all(&mut self) {
        self.partitions.clear();
    }

    /// The topics with at least one assigned partition.
    pub fn topics(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for (t, _) in self.partitions.keys() {
            if out.last() != Some(t) {
                out.push(Arc::clone(t));
            }
        }
        out
    }

    /// The next offset to read on each assigned partition.
    pub fn positions(&self) -> Vec<(Arc<str>, i32, i64)> {
        self.partitions
            .iter()
            .map(|((t, p), a)| (Arc::clone(t), *p, a.position))
            .collect()
    }

    /// One Fetch per leader (concurrently); records in offset order per
    /// partition. Returns an empty list after `max_wait` when idle, at
    /// once when nothing is assigned (after a short sleep).
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, CallError> {
        if self.partitions.is_empty() {
            tokio::time::sleep(self.max_wait).await;
            return Ok(Vec::new());
        }
        if self.stale_leaders {
            self.refresh_leaders().await?;
        }
        let mut by_leader: BTreeMap<i32, Vec<(PartitionId, i64)>> = BTreeMap::new();
        for (id, a) in &self.partitions {
            by_leader
                .entry(a.leader)
                .or_default()
                .push((id.clone(), a.position));
        }
        let fetches = by_leader
            .into_iter()
            .map(|(leader, parts)| self.fetch_from(leader, parts));
        let answers = futures_util::future::join_all(fetches).await;
        let mut out = Vec::new();
        let mut first_error = None;
        for answer in answers {
            match answer {
                Ok(partitions) => {
                    for (id, outcome) in partitions {
                        self.apply(id, outcome, &mut out).await;
                    }
                }
                Err(e) => {
                    self.stale_leaders = true;
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    async fn apply(
        &mut self,
        id: PartitionId,
        outcome: FetchOutcome,
        out: &mut Vec<ConsumedRecord>,
    ) {
        let Some(assigned) = self.partitions.get_mut(&id) else {
            return;
        };
        match outcome {
            FetchOutcome::Records(records) => {
                let (records, next) = decode_records(&id.0, id.1, &records, assigned.position);
                assigned.position = next;
                out.extend(records);
            }
            FetchOutcome::Error(OFFSET_OUT_OF_RANGE) => {
                let (leader, reset, from) = (assigned.leader, assigned.reset, assigned.position);
                match self.resolve(leader, &id.0, id.1, reset).await {
                    Ok(position) => {
                        tracing::warn!(topic = %id.0, partition = id.1, position, "offset out of range; reset");
                        if let Some(a) = self.partitions.get_mut(&id) {
                            a.position = position;
                        }
                        if let Some(resets) = self.resets.as_mut() {
                            resets.push(PositionReset {
                                topic: Arc::clone(&id.0),
                                partition: id.1,
                                from,
                                to: position,
                            });
                        }
                    }
                    Err(_) => self.stale_leaders = true,
                }
            }
            FetchOutcome::Error(code) => {
                tracing::debug!(topic = %id.0, partition = id.1, code, "fetch error; metadata refresh");
                self.stale_leaders = true;
            }
        }
    }

    async fn refresh_leaders(&mut self) -> Result<(), CallError> {
        let topics = self.topics();
        let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
        let layout = self.partition_counts(&names, false).await?;
        for ((topic, partition), a) in self.partitions.iter_mut() {
            if let Some((_, leader)) = layout
                .get(&**topic)
                .and_then(|ps| ps.iter().find(|(p, _)| p == partition))
            {
                a.leader = *leader;
            }
        }
        self.stale_leaders = false;
        Ok(())
    }

    async fn fetch_from(
        &self,
        leader: i32,
        parts: Vec<(PartitionId, i64)>,
    ) -> Result<Vec<(PartitionId, FetchOutcome)>, CallError> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for ((topic, partition), position) in &parts {
            let entry = FetchPartition::default()
                .with_partition(*partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(*position)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(self.partition_max_bytes);
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == &**topic => t.partitions.push(entry),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.max_wait.as_millis().min(i32::MAX as u128) as i32)
            .with_min_bytes(1)
            .with_max_bytes(self.partition_max_bytes.saturating_mul(4))
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        let response = self
            .cluster
            .call_node(leader, FETCH_VERSION, &request, self.max_wait)
            .await?;
        if response.error_code != 0 {
            return Err(CallError::Unavailable(format!(
                "Fetch failed: {}",
                error_name(response.error_code)
            )));
        }
        let mut out = Vec::new();
        for t in response.responses {
            let topic: Arc<str> = Arc::from(t.topic.0.as_str());
            for p in t.partitions {
                let outcome = if p.error_code != 0 {
                    FetchOutcome::Error(p.error_code)
                } else {
                    FetchOutcome::Records(p.records.unwrap_or_default())
                };
                out.push(((Arc::clone(&topic), p.partition_index), outcome));
            }
        }
        Ok(out)
    }

    /// The log start offset of a partition led by `leader` (as
    /// `partition_counts` lists them): the earliest record retention kept.
    pub async fn log_start(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
    ) -> Result<i64, CallError> {
        self.resolve(leader, topic, partition, StartAt::Earliest)
            .await
    }

    /// The log end offset (high watermark) of a partition led by `leader`:
    /// the offset the next record will get.
    pub async fn log_end(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
    ) -> Result<i64, CallError> {
        self.resolve(leader, topic, partition, StartAt::Latest)
            .await
    }

    /// The offset `start` names on one partition.
    async fn resolve(
        &self,
        leader: i32,
        topic: &str,
        partition: i32,
        start: StartAt,
    ) -> Result<i64, CallError> {
        let timestamp = match start {
            StartAt::Offset(o) => return Ok(o),
            StartAt::Earliest => -2,
            StartAt::Latest => -1,
            StartAt::Timestamp(t) => t,
        };
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(0)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)])]);
        let response = self
            .cluster
            .call_node(leader, LIST_OFFSETS_VERSION, &request, Duration::ZERO)
            .await?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| CallError::Unavailable("ListOffsets lacks the partition".into()))?;
        if answer.error_code != 0 {
            return Err(CallError::Unavailable(format!(
                "ListOffsets {topic}/{partition}: {}",
                error_name(answer.error_code)
            )));
        }
        if answer.offset < 0 && matches!(start, StartAt::Timestamp(_)) {
            // No record at or after the timestamp: the log end.
            return Box::pin(self.resolve(leader, topic, partition, StartAt::Latest)).await;
        }
        Ok(answer.offset)
    }
}

enum FetchOutcome {
    Records(Bytes),
    Error(i16),
}

/// A timestamp or offset start is a one-off; a partition that later falls
/// out of range goes to the earliest record.
fn start_reset(start: StartAt) -> StartAt {
    match start {
        StartAt::Latest => StartAt::Latest,
        _ => StartAt::Earliest,
    }
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"))
}
