//! Partitions of a Produce request the proxy answers itself (an LFS
//! offload that failed, a record policy that refused or dead-lettered),
//! and how those answers join the broker's response so the producer gets
//! one answer per partition.
//!
//! Where the version has them (v8+, KIP-467) an answer carries an
//! `error_message` and `record_errors`: the index of each refused record
//! in the partition's records, with its own message. A client's delivery
//! report shows them (librdkafka gives each refused message its own
//! error string).

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::frame::{encode_response, Frame};

/// A partition the proxy answers itself, with why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailedPartition {
    pub topic: String,
    pub partition: i32,
    /// 0: the proxy took the partition's records elsewhere (no offset).
    pub error_code: i16,
    pub message: String,
    /// (record index in the partition's records, why): v8+.
    pub record_errors: Vec<(i32, String)>,
}

/// A response built by the proxy when no partition was forwarded.
pub fn local_response(
    correlation_id: i32,
    version: i16,
    answers: &[FailedPartition],
) -> Result<Frame, String> {
    let mut response = ProduceResponse::default();
    add_answers(&mut response, version, answers);
    encode(correlation_id, version, &response)
}

/// The broker's response with the proxy's answers added.
pub fn merge_answers(
    frame: &Frame,
    version: i16,
    answers: &[FailedPartition],
) -> Result<Frame, String> {
    if answers.is_empty() {
        return Ok(frame.clone());
    }
    let (correlation_id, mut response) = decode(frame, version)?;
    add_answers(&mut response, version, answers);
    encode(correlation_id, version, &response)
}

/// The correlation id and body of a Produce response frame.
pub fn decode(frame: &Frame, version: i16) -> Result<(i32, ProduceResponse), String> {
    let mut buf = frame.body();
    let hv = ApiKey::Produce.response_header_version(version);
    let header = ResponseHeader::decode(&mut buf, hv).map_err(|e| e.to_string())?;
    let response = ProduceResponse::decode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok((header.correlation_id, response))
}

pub fn add_answers(response: &mut ProduceResponse, version: i16, answers: &[FailedPartition]) {
    for f in answers {
        let mut partition = PartitionProduceResponse::default()
            .with_index(f.partition)
            .with_error_code(f.error_code)
            .with_base_offset(-1);
        if version >= 8 {
            if f.error_code != 0 {
                partition.error_message = Some(StrBytes::from_string(f.message.clone()));
            }
            partition.record_errors = f
                .record_errors
                .iter()
                .map(|(index, message)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(*index)
                        .with_batch_index_error_message(Some(StrBytes::from_string(
                            message.clone(),
                        )))
                })
                .collect();
        }
        match response
            .responses
            .iter_mut()
            .find(|t| t.name.0.as_str() == f.topic)
        {
            Some(topic) => topic.partition_responses.push(partition),
            None => response.responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(f.topic.clone())))
                    .with_partition_responses(vec![partition]),
            ),
        }
    }
}

pub fn encode(
    correlation_id: i32,
    version: i16,
    response: &ProduceResponse,
) -> Result<Frame, String> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let hv = ApiKey::Produce.response_header_version(version);
    encode_response(&header, hv, response, version).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_errors_from_v8_only() {
        let answer = FailedPartition {
            topic: "t".into(),
            partition: 3,
            error_code: super::super::codes::INVALID_RECORD,
            message: "1 of 2 records".into(),
            record_errors: vec![(1, "header Security-Label is required".into())],
        };
        for version in 3..=12 {
            let frame = local_response(9, version, std::slice::from_ref(&answer)).unwrap();
            let (cid, r) = decode(&frame, version).unwrap();
            assert_eq!(cid, 9);
            let p = &r.responses[0].partition_responses[0];
            assert_eq!((p.index, p.error_code, p.base_offset), (3, 87, -1));
            if version >= 8 {
                assert_eq!(p.error_message.as_deref(), Some("1 of 2 records"));
                assert_eq!(p.record_errors.len(), 1);
                assert_eq!(p.record_errors[0].batch_index, 1);
                assert_eq!(
                    p.record_errors[0].batch_index_error_message.as_deref(),
                    Some("header Security-Label is required")
                );
            } else {
                assert!(p.error_message.is_none() && p.record_errors.is_empty());
            }
        }
    }

    #[test]
    fn a_success_answer_has_no_message() {
        let answer = FailedPartition {
            topic: "t".into(),
            message: "dead-lettered".into(),
            ..Default::default()
        };
        let frame = local_response(1, 9, &[answer]).unwrap();
        let (_, r) = decode(&frame, 9).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, -1));
        assert!(p.error_message.is_none());
    }
}
