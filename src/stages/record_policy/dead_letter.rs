//! Writing refused records to a policy's dead-letter topic.
//!
//! A dead-lettered record is the record as its producer sent it (key,
//! value, headers, `LFS_BLOB` included: its value is not offloaded), plus
//! headers that say where it came from and why it is here. The proxy
//! writes it with its own producer (acks=all, partition by key, else
//! round-robin) before the rest of the batch is forwarded, so the producer
//! is told "delivered" only once every one of its records is in Kafka, in
//! its topic or in the dead-letter topic. When the producer retries (the
//! rest failed, or the answer was lost), a record is dead-lettered again:
//! at least once.

use bytes::Bytes;

use super::judge::BadRecord;
use crate::kafka::client::producer::{OutgoingRecord, ProduceError, Producer};
use crate::kafka::wire::codes::REQUEST_TIMED_OUT;

/// The topic the record was sent to.
pub const SOURCE_TOPIC: &str = "dlq.source.topic";
/// The partition it was sent to.
pub const SOURCE_PARTITION: &str = "dlq.source.partition";
/// Its producer's client.id.
pub const SOURCE_CLIENT_ID: &str = "dlq.source.client.id";
/// The policy it broke.
pub const POLICY: &str = "dlq.policy";
/// The rule it broke (a `Rule` label).
pub const RULE: &str = "dlq.rule";
/// What is wrong, as the producer would have been told.
pub const REASON: &str = "dlq.reason";

/// Why a partition's bad records could not be dead-lettered.
pub struct DeadLetterFailure {
    pub error_code: i16,
    pub message: String,
}

/// Writes the bad records of one partition, in order.
pub async fn write(
    producer: &Producer,
    dead_letter_topic: &str,
    source_topic: &str,
    source_partition: i32,
    client_id: &str,
    bad: &[BadRecord],
) -> Result<(), DeadLetterFailure> {
    for b in bad {
        let mut headers: Vec<(String, Bytes)> = b
            .record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().unwrap_or_default()))
            .collect();
        headers.extend([
            (
                SOURCE_TOPIC.to_owned(),
                Bytes::from(source_topic.to_owned()),
            ),
            (
                SOURCE_PARTITION.to_owned(),
                Bytes::from(source_partition.to_string()),
            ),
            (
                SOURCE_CLIENT_ID.to_owned(),
                Bytes::from(client_id.to_owned()),
            ),
            (POLICY.to_owned(), Bytes::from(b.violation.policy.clone())),
            (
                RULE.to_owned(),
                Bytes::from_static(b.violation.rule.label().as_bytes()),
            ),
            (REASON.to_owned(), Bytes::from(b.violation.message.clone())),
        ]);
        let record = OutgoingRecord {
            topic: dead_letter_topic.to_owned(),
            partition: None,
            key: b.record.key.clone(),
            value: b.record.value.clone(),
            headers,
        };
        if let Err(error) = producer.produce(&record).await {
            return Err(DeadLetterFailure {
                error_code: match &error {
                    ProduceError::Refused { code, .. } => *code,
                    _ => REQUEST_TIMED_OUT,
                },
                message: format!(
                    "record {} breaks policy {} and could not be written to dead-letter topic {dead_letter_topic}: {error}",
                    b.index, b.violation.policy
                ),
            });
        }
    }
    Ok(())
}
