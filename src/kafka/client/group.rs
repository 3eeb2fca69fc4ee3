//! Consumer-group membership for the processor: the classic protocol
//! (JoinGroup/SyncGroup/Heartbeat), the "consumer" protocol type with the
//! range assignor, and committed offsets. Members written with any Kafka
//! client library can share the group.
//!
//! Protocol rules it follows:
//! - FindCoordinator (key type 0 = group) names the broker that runs the
//!   group; NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE means ask again.
//! - JoinGroup v5: a new member first gets MEMBER_ID_REQUIRED with its id
//!   and joins again with it (KIP-394). The broker answers every member
//!   once all have joined; the one named leader gets the members'
//!   subscriptions and computes the assignment.
//! - SyncGroup v3: the leader sends every member's assignment, the others
//!   send none; each gets its own back.
//! - Heartbeat v3 keeps the membership; REBALANCE_IN_PROGRESS means join
//!   again, UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION mean join again as new.
//! - OffsetCommit v7 / OffsetFetch v5 store the next offset to read.
//! - Subscription and assignment bytes are ConsumerProtocolSubscription /
//!   ConsumerProtocolAssignment behind an i16 version (0 here).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::assignor::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, range_assign,
};
use crate::kafka::client::cluster::{CallError, Cluster};

const FIND_COORDINATOR_VERSION: i16 = 2;
const JOIN_GROUP_VERSION: i16 = 5;
const SYNC_GROUP_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const LEAVE_GROUP_VERSION: i16 = 2;
const OFFSET_COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 5;

const PROTOCOL_TYPE: &str = "consumer";
const ASSIGNOR: &str = "range";

use crate::kafka::wire::codes::{
    COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, ILLEGAL_GENERATION,
    MEMBER_ID_REQUIRED, NOT_COORDINATOR, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Call(#[from] CallError),
    /// The group is rebalancing or forgot this member: join again.
    #[error("group {group} needs a new join: {reason}")]
    Rejoin { group: String, reason: String },
    /// The coordinator moved or is loading: find it again and retry.
    #[error("group coordinator unavailable: {0}")]
    Coordinator(String),
    #[error("group {group}: {name}")]
    Refused { group: String, name: String },
    #[error("bad group protocol data: {0}")]
    Protocol(String),
}

impl GroupError {
    fn from_code(group: &str, code: i16) -> Self {
        let name = ResponseError::try_from_code(code)
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| format!("error {code}"));
        match code {
            UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION | REBALANCE_IN_PROGRESS => GroupError::Rejoin {
                group: group.to_owned(),
                reason: name,
            },
            COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR => {
                GroupError::Coordinator(name)
            }
            _ => GroupError::Refused {
                group: group.to_owned(),
                name,
            },
        }
    }

    /// Whether waiting and trying again can help.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            GroupError::Refused { .. } | GroupError::Call(CallError::Login(_))
        )
    }
}

/// This member's place in one generation of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub generation_id: i32,
    pub member_id: String,
    pub coordinator: i32,
    /// Topic → partitions given to this member.
    pub assignment: BTreeMap<String, Vec<i32>>,
}

/// Timing of a membership.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimeouts {
    pub session: Duration,
    pub rebalance: Duration,
}

/// A member of one group, subscribed to a fixed list of topics.
pub struct GroupMember {
    cluster: Arc<Cluster>,
    group: String,
    topics: Vec<String>,
    timeouts: GroupTimeouts,
    member_id: String,
}

impl GroupMember {
    pub fn new(
        cluster: Arc<Cluster>,
        group: String,
        topics: Vec<String>,
        timeouts: GroupTimeouts,
    ) -> Self {
        GroupMember {
            cluster,
            group,
            topics,
            timeouts,
            member_id: String::new(),
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Joins (or re-joins) the group and returns this member's share.
    pub async fn join(&mut self) -> Result<Generation, GroupError> {
        let coordinator = self.find_coordinator().await?;
        let subscription = encode_subscription(&self.topics)?;
        let mut attempts = 0;
        let joined = loop {
            attempts += 1;
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
                .with_session_timeout_ms(millis(self.timeouts.session))
                .with_rebalance_timeout_ms(millis(self.timeouts.rebalance))
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(ASSIGNOR))
                    .with_metadata(subscription.clone())]);
            let response = self
                .cluster
                .call_node(
                    coordinator,
                    JOIN_GROUP_VERSION,
                    &request,
                    self.timeouts.rebalance,
                )
                .await?;
            match response.error_code {
                0 => break response,
                MEMBER_ID_REQUIRED if attempts < 3 => {
                    self.member_id = response.member_id.to_string();
                }
                UNKNOWN_MEMBER_ID if attempts < 3 => self.member_id.clear(),
                code => return Err(GroupError::from_code(&self.group, code)),
            }
        };
        self.member_id = joined.member_id.to_string();
        let leader = joined.leader.as_str() == joined.member_id.as_str();
        let assignments = if leader {
            let mut subscriptions = BTreeMap::new();
            for m in &joined.members {
                subscriptions.insert(m.member_id.to_string(), decode_subscription(&m.metadata)?);
            }
            let wanted: Vec<&str> = subscriptions
                .values()
                .flatten()
                .map(String::as_str)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let metadata = self.cluster.metadata(&wanted, false).await?;
            let mut partitions = HashMap::new();
            for t in &metadata.topics {
                if let (Some(name), 0) = (&t.name, t.error_code) {
                    let mut ps: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                    ps.sort_unstable();
                    partitions.insert(name.0.to_string(), ps);
                }
            }
            let plan = range_assign(&subscriptions, &partitions);
            let mut out = Vec::new();
            for (member, topics) in plan {
                out.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member))
                        .with_assignment(encode_assignment(&topics)?),
                );
            }
            out
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(joined.generation_id)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_assignments(assignments);
        let synced = self
            .cluster
            .call_node(
                coordinator,
                SYNC_GROUP_VERSION,
                &request,
                self.timeouts.rebalance,
            )
            .await?;
        if synced.error_code != 0 {
            return Err(GroupError::from_code(&self.group, synced.error_code));
        }
        Ok(Generation {
            generation_id: joined.generation_id,
            member_id: self.member_id.clone(),
            coordinator,
            assignment: decode_assignment(&synced.assignment)?,
        })
    }

    /// Leaves the group so the others take over at once instead of after
    /// the session timeout.
    pub async fn leave(&mut self, generation: &Generation) {
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_member_id(StrBytes::from_string(generation.member_id.clone()));
        let _ = self
            .cluster
            .call_node(
                generation.coordinator,
                LEAVE_GROUP_VERSION,
                &request,
                Duration::ZERO,
            )
            .await;
        self.member_id.clear();
    }

    async fn find_coordinator(&self) -> Result<i32, GroupError> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(self.group.clone()))
            .with_key_type(0);
        // Any broker answers FindCoordinator; the Metadata call teaches the
        // cluster their addresses.
        let metadata = self.cluster.metadata(&[], false).await?;
        let node = metadata
            .brokers
            .first()
            .map(|b| b.node_id.0)
            .ok_or_else(|| GroupError::Coordinator("no brokers in Metadata".into()))?;
        let response = self
            .cluster
            .call_node(node, FIND_COORDINATOR_VERSION, &request, Duration::ZERO)
            .await?;
        if response.error_code != 0 {
            return Err(GroupError::from_code(&self.group, response.error_code));
        }
        self.cluster
            .learn_broker(
                response.node_id.0,
                format!("{}:{}", response.host, response.port),
            )
            .await;
        Ok(response.node_id.0)
    }
}

/// Heartbeats and offsets of one generation; cheap to clone into tasks.
#[derive(Clone)]
pub struct Membership {
    cluster: Arc<Cluster>,
    group: String,
    generation: Generation,
}

impl Membership {
    pub fn new(cluster: Arc<Cluster>, group: &str, generation: Generation) -> Self {
        Membership {
            cluster,
            group: group.to_owned(),
            generation,
        }
    }

    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// One heartbeat; `Err(Rejoin)` when the group moved on.
    pub async fn heartbeat(&self) -> Result<(), GroupError> {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id(self.generation.generation_id)
            .with_member_id(StrBytes::from_string(self.generation.member_id.clone()));
        let response = self
            .cluster
            .call_node(
                self.generation.coordinator,
                HEARTBEAT_VERSION,
                &request,
                Duration::ZERO,
            )
            .await?;
        match response.error_code {
            0 => Ok(()),
            code => Err(GroupError::from_code(&self.group, code)),
        }
    }

    /// The committed next offset of each assigned partition (absent when
    /// the group never committed one).
    pub async fn committed(&self) -> Result<HashMap<(String, i32), i64>, GroupError> {
        let topics = self
            .generation
            .assignment
            .iter()
            .map(|(t, ps)| {
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.clone())))
                    .with_partition_indexes(ps.clone())
            })
            .collect();
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_topics(Some(topics));
        let response = self
            .cluster
            .call_node(
                self.generation.coordinator,
                OFFSET_FETCH_VERSION,
                &request,
                Duration::ZERO,
            )
            .await?;
        if response.error_code != 0 {
            return Err(GroupError::from_code(&self.group, response.error_code));
        }
        let mut out = HashMap::new();
        for t in response.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Commits next offsets to read.
    pub async fn commit(&self, offsets: &[(String, i32, i64)]) -> Result<(), GroupError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (t, p, o) in offsets {
            topics.entry(t.as_str()).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id_or_member_epoch(self.generation.generation_id)
            .with_member_id(StrBytes::from_string(self.generation.member_id.clone()))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = self
            .cluster
            .call_node(
                self.generation.coordinator,
                OFFSET_COMMIT_VERSION,
                &request,
                Duration::ZERO,
            )
            .await?;
        for t in response.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(GroupError::from_code(&self.group, p.error_code));
                }
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}
