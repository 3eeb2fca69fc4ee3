//! The Produce response side of the rewrite.
//!
//! Partitions the proxy failed itself (too large, checksum mismatch,
//! storage down) were not forwarded; their errors are merged into the
//! broker's response so the producer gets one answer per partition, with
//! `error_message` where the version has it (v8+). Partitions the broker
//! rejected lose their objects: no envelope points at them.

use super::rewrite::{FailedPartition, PartitionUploads};
use crate::kafka::wire::frame::Frame;
use crate::kafka::wire::produce_answer;

use crate::kafka::wire::codes::{DUPLICATE_SEQUENCE_NUMBER, NONE};

/// What a forwarded LFS Produce request left to settle when its response comes.
#[derive(Debug, Default)]
pub struct LfsOwed {
    pub uploads: Vec<PartitionUploads>,
    pub failed: Vec<FailedPartition>,
}

impl LfsOwed {
    /// Every object key, for when no response will ever settle them.
    pub fn all_keys(&self) -> Vec<String> {
        self.uploads
            .iter()
            .flat_map(|u| u.keys.iter().cloned())
            .collect()
    }
}

/// A response built by the proxy when no partition was forwarded.
pub fn failed_response(
    correlation_id: i32,
    version: i16,
    failed: &[FailedPartition],
) -> Result<Frame, String> {
    produce_answer::local_response(correlation_id, version, failed)
}

/// Merges the proxy's failures into the broker's response and returns the
/// keys of objects whose partitions the broker rejected.
pub fn merge_response(
    frame: &Frame,
    version: i16,
    owed: &LfsOwed,
) -> Result<(Frame, Vec<String>), String> {
    let (correlation_id, mut response) = produce_answer::decode(frame, version)?;
    let mut orphans = Vec::new();
    for topic in &response.responses {
        for p in &topic.partition_responses {
            if
            // DUPLICATE_SEQUENCE_NUMBER: the broker already has this batch, so
            // the objects it references are in use.
            p.error_code == NONE || p.error_code == DUPLICATE_SEQUENCE_NUMBER {
                continue;
            }
            if let Some(u) = owed
                .uploads
                .iter()
                .find(|u| u.partition == p.index && u.topic == topic.name.0.as_str())
            {
                orphans.extend(u.keys.iter().cloned());
            }
        }
    }
    if owed.failed.is_empty() {
        return Ok((frame.clone(), orphans));
    }
    produce_answer::add_answers(&mut response, version, &owed.failed);
    Ok((
        produce_answer::encode(correlation_id, version, &response)?,
        orphans,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::wire::produce_answer::encode;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};

    fn failed(topic: &str, partition: i32, code: i16) -> FailedPartition {
        FailedPartition {
            topic: topic.into(),
            partition,
            error_code: code,
            message: "why".into(),
            ..Default::default()
        }
    }

    fn decode(frame: &Frame, version: i16) -> (i32, ProduceResponse) {
        let mut buf = frame.body();
        let h = ResponseHeader::decode(&mut buf, ApiKey::Produce.response_header_version(version))
            .unwrap();
        (
            h.correlation_id,
            ProduceResponse::decode(&mut buf, version).unwrap(),
        )
    }

    #[test]
    fn local_answer_for_every_version() {
        for version in 3..=12 {
            let frame =
                failed_response(5, version, &[failed("t", 1, 10), failed("u", 0, 87)]).unwrap();
            let (cid, r) = decode(&frame, version);
            assert_eq!(cid, 5);
            let codes: Vec<_> = r
                .responses
                .iter()
                .flat_map(|t| {
                    t.partition_responses
                        .iter()
                        .map(move |p| (t.name.0.to_string(), p.index, p.error_code))
                })
                .collect();
            assert_eq!(codes, vec![("t".into(), 1, 10), ("u".into(), 0, 87)]);
            let msg = r.responses[0].partition_responses[0].error_message.clone();
            assert_eq!(msg.is_some(), version >= 8);
        }
    }

    #[test]
    fn merge_adds_failures_and_finds_rejected_uploads() {
        let version = 9;
        let broker =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_responses(vec![
                    PartitionProduceResponse::default()
                        .with_index(0)
                        .with_base_offset(42),
                    PartitionProduceResponse::default()
                        .with_index(2)
                        .with_error_code(crate::kafka::wire::codes::NOT_LEADER_OR_FOLLOWER),
                ])]);
        let frame = encode(77, version, &broker).unwrap();
        let owed = LfsOwed {
            uploads: vec![
                PartitionUploads {
                    topic: "t".into(),
                    partition: 0,
                    keys: vec!["k0".into()],
                },
                PartitionUploads {
                    topic: "t".into(),
                    partition: 2,
                    keys: vec!["k2a".into(), "k2b".into()],
                },
            ],
            failed: vec![failed("t", 1, 56)],
        };
        let (merged, orphans) = merge_response(&frame, version, &owed).unwrap();
        assert_eq!(orphans, vec!["k2a", "k2b"]);
        let (cid, r) = decode(&merged, version);
        assert_eq!(cid, 77);
        let parts: Vec<_> = r.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.error_code))
            .collect();
        assert_eq!(parts, vec![(0, 0), (2, 6), (1, 56)]);
    }
}
