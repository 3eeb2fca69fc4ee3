//! The classic consumer protocol's range assignor, and the subscription and
//! assignment bytes members exchange through the coordinator (version 0 of
//! `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment`, which
//! every Java, librdkafka and Python client reads).

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::group::GroupError;

/// The range assignor: per topic, the members subscribed to it (sorted by
/// id) get consecutive runs of its sorted partitions; the first
/// `partitions % members` get one extra. Every member appears in the
/// plan, even with nothing.
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partitions: &HashMap<String, Vec<i32>>,
) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut plan: BTreeMap<String, BTreeMap<String, Vec<i32>>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let mut topics: Vec<&String> = subscriptions.values().flatten().collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let Some(parts) = partitions.get(topic) else {
            continue;
        };
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        let per = parts.len() / members.len();
        let extra = parts.len() % members.len();
        let mut start = 0;
        for (i, member) in members.iter().enumerate() {
            let n = per + usize::from(i < extra);
            if n > 0 {
                plan.entry((*member).clone())
                    .or_default()
                    .insert(topic.clone(), parts[start..start + n].to_vec());
            }
            start += n;
        }
    }
    plan
}

pub(super) fn encode_subscription(topics: &[String]) -> Result<Bytes, GroupError> {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    encode_v0(&subscription)
}

pub(super) fn decode_subscription(bytes: &Bytes) -> Result<Vec<String>, GroupError> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        return Err(GroupError::Protocol("empty subscription".into()));
    }
    // Newer versions only add fields after the topics; read as the highest
    // version this crate knows, capped at what the member sent.
    let version = buf.get_i16().clamp(0, 3);
    let s = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map_err(|e| GroupError::Protocol(format!("subscription: {e}")))?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

pub(super) fn encode_assignment(topics: &BTreeMap<String, Vec<i32>>) -> Result<Bytes, GroupError> {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topics
            .iter()
            .map(|(t, ps)| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    encode_v0(&assignment)
}

/// The consumer protocol's embedded encoding: an i16 version, then the
/// message at that version (v0, which every member reads).
fn encode_v0<M: Encodable>(message: &M) -> Result<Bytes, GroupError> {
    let mut out = BytesMut::new();
    out.put_i16(0);
    message
        .encode(&mut out, 0)
        .map_err(|e| GroupError::Protocol(e.to_string()))?;
    Ok(out.freeze())
}

pub(super) fn decode_assignment(bytes: &Bytes) -> Result<BTreeMap<String, Vec<i32>>, GroupError> {
    let mut buf = bytes.clone();
    if buf.remaining() < 2 {
        // An empty assignment: a member with nothing to do.
        return Ok(BTreeMap::new());
    }
    let version = buf.get_i16().clamp(0, 3);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version)
        .map_err(|e| GroupError::Protocol(format!("assignment: {e}")))?;
    Ok(a.assigned_partitions
        .into_iter()
        .map(|tp| (tp.topic.0.to_string(), tp.partitions))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignor_gives_runs_and_extras_to_the_first_members() {
        let subs: BTreeMap<String, Vec<String>> = [
            ("a".to_owned(), vec!["t".to_owned(), "u".to_owned()]),
            ("b".to_owned(), vec!["t".to_owned()]),
            ("c".to_owned(), vec!["t".to_owned()]),
        ]
        .into();
        let parts: HashMap<String, Vec<i32>> = [
            ("t".to_owned(), (0..7).collect()),
            ("u".to_owned(), vec![0, 1]),
        ]
        .into();
        let plan = range_assign(&subs, &parts);
        assert_eq!(plan["a"]["t"], vec![0, 1, 2]);
        assert_eq!(plan["b"]["t"], vec![3, 4]);
        assert_eq!(plan["c"]["t"], vec![5, 6]);
        assert_eq!(plan["a"]["u"], vec![0, 1]);
        assert!(!plan["b"].contains_key("u"));
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let subs: BTreeMap<String, Vec<String>> = (0..3)
            .map(|i| (format!("m{i}"), vec!["t".to_owned()]))
            .collect();
        let parts: HashMap<String, Vec<i32>> = [("t".to_owned(), vec![0])].into();
        let plan = range_assign(&subs, &parts);
        assert_eq!(plan["m0"]["t"], vec![0]);
        assert!(plan["m1"].is_empty() && plan["m2"].is_empty());
    }

    #[test]
    fn subscription_and_assignment_round_trip() {
        let topics = vec!["orders".to_owned(), "users".to_owned()];
        let bytes = encode_subscription(&topics).unwrap();
        assert_eq!(&bytes[..2], &[0, 0], "version 0 prefix");
        assert_eq!(decode_subscription(&bytes).unwrap(), topics);
        let plan: BTreeMap<String, Vec<i32>> = [("orders".to_owned(), vec![0, 2])].into();
        let bytes = encode_assignment(&plan).unwrap();
        assert_eq!(decode_assignment(&bytes).unwrap(), plan);
        assert!(decode_assignment(&Bytes::new()).unwrap().is_empty());
    }
}
