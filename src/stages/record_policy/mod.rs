//! Stage: record policies on Produce. Every record of a topic that has a
//! policy is judged before the LFS offload (the document, not the envelope
//! that will replace it); a partition holding a bad record fails with
//! `INVALID_RECORD` and, from Produce v8, `record_errors` naming each bad
//! record and the rule it broke (KIP-467); the other partitions go on. Under
//! a dead-letter policy the bad records go to the dead-letter topic and the
//! rest of their batch to its topic, and the producer is told they were
//! delivered (see `dead_letter` and `judge` for the rules of both).
//!
//! A request none of whose topics has a policy goes on as the same bytes,
//! and so does a request whose records all keep their policies.

mod dead_letter;
mod judge;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::{ApiKey, ProduceRequest};
use kafka_protocol::protocol::Decodable;

pub use dead_letter::{
    POLICY as DLQ_POLICY, REASON as DLQ_REASON, RULE as DLQ_RULE,
    SOURCE_CLIENT_ID as DLQ_SOURCE_CLIENT_ID, SOURCE_PARTITION as DLQ_SOURCE_PARTITION,
    SOURCE_TOPIC as DLQ_SOURCE_TOPIC,
};
pub use judge::{judge_partition, Verdict};

use crate::kafka::client::producer::Producer;
use crate::kafka::relay::chain::{
    ConnectionInfo, LocalAnswer, Owing, Request, RequestAction, Stage, StageError, StageState,
};
use crate::kafka::wire::frame::{self, Frame, RequestHeaderPeek};
use crate::kafka::wire::produce_answer::{self, FailedPartition};
use crate::lfs::TopicFilter;
use crate::policy::{self, Policy, PolicyBook};

#[derive(Clone)]
pub struct RecordPolicy {
    book: Arc<PolicyBook>,
    /// Topics whose `LFS_BLOB` records the offload stage will store.
    lfs_topics: TopicFilter,
    /// Writes dead-lettered records.
    producer: Arc<Producer>,
}

impl RecordPolicy {
    pub fn new(book: Arc<PolicyBook>, lfs_topics: TopicFilter, producer: Arc<Producer>) -> Self {
        RecordPolicy {
            book,
            lfs_topics,
            producer,
        }
    }
}

impl Stage for RecordPolicy {
    fn name(&self) -> &'static str {
        "record_policy"
    }

    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        header.api_key == ApiKey::Produce as i16 && !self.book.current().is_empty()
    }

    fn on_request<'a>(
        &'a self,
        conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        mut request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        Box::pin(async move {
            let header = &request.header;
            let version = header.api_version;
            // v13+ names topics by id, which the proxy does not offer.
            let (3..=12) = version else {
                return Ok(RequestAction::Forward(request));
            };
            let Some(offset) = header.body_offset else {
                return Ok(RequestAction::Forward(request));
            };
            let set = self.book.current();
            let body = request.frame.body();
            // Records stay slices of the frame: decoding copies no value.
            let mut buf = body.slice(offset..);
            let Ok(mut produce) = ProduceRequest::decode(&mut buf, version) else {
                // The broker answers a request nobody can decode.
                return Ok(RequestAction::Forward(request));
            };
            if !produce
                .topic_data
                .iter()
                .any(|t| set.for_topic(t.name.0.as_str()).is_some())
            {
                return Ok(RequestAction::Forward(request));
            }
            let client_id = conn.client_id();
            let mut changed = false;
            let mut answers: Vec<FailedPartition> = Vec::new();
            for topic in &mut produce.topic_data {
                let name = topic.name.0.to_string();
                let Some(policy) = set.for_topic(&name) else {
                    continue;
                };
                let at = Where {
                    conn,
                    client_id: &client_id,
                    topic: &name,
                    policy,
                };
                let mut kept: Vec<PartitionProduceData> = Vec::new();
                for partition in std::mem::take(&mut topic.partition_data) {
                    match self.act_on(&at, partition).await {
                        Outcome::Unchanged(p) => kept.push(p),
                        Outcome::Rewritten(p) => {
                            changed = true;
                            kept.push(p);
                        }
                        Outcome::Answered(answer) => {
                            changed = true;
                            answers.push(answer);
                        }
                    }
                }
                topic.partition_data = kept;
            }
            if !changed {
                return Ok(RequestAction::Forward(request));
            }
            produce.topic_data.retain(|t| !t.partition_data.is_empty());
            if produce.topic_data.is_empty() {
                let frame =
                    produce_answer::local_response(header.correlation_id, version, &answers)
                        .map_err(|e| StageError::new(self.name(), e))?;
                return Ok(RequestAction::Answer(LocalAnswer {
                    frame,
                    api_version: version,
                }));
            }
            request.frame = frame::encode_after_header(&body[..offset], &produce, version)
                .map_err(|e| StageError::new(self.name(), e.to_string()))?;
            if !answers.is_empty() && request.expects_response() {
                request.owing.push(Box::new(PolicyAnswers(answers)));
            }
            Ok(RequestAction::Forward(request))
        })
    }
}

/// Where a partition's records were sent, for its logs and answers.
struct Where<'a> {
    conn: &'a ConnectionInfo,
    client_id: &'a str,
    topic: &'a str,
    policy: &'a Policy,
}

/// What becomes of one partition of the request.
enum Outcome {
    /// Forwarded as it came.
    Unchanged(PartitionProduceData),
    /// Forwarded without its dead-lettered records.
    Rewritten(PartitionProduceData),
    /// Answered by the proxy (refused, or every record dead-lettered).
    Answered(FailedPartition),
}

impl RecordPolicy {
    /// Judges one partition and acts on the verdict.
    async fn act_on(&self, at: &Where<'_>, mut partition: PartitionProduceData) -> Outcome {
        let Some(records) = partition.records.as_ref() else {
            return Outcome::Unchanged(partition);
        };
        let policy = at.policy;
        let verdict = judge_partition(policy, records, self.lfs_topics.allows(at.topic));
        let answer = |error_code: i16, message: String, record_errors| FailedPartition {
            topic: at.topic.to_owned(),
            partition: partition.index,
            error_code,
            message,
            record_errors,
        };
        match verdict {
            Verdict::Pass { checked } => {
                policy::count_checked(&policy.name, "kafka", checked as u64);
                Outcome::Unchanged(partition)
            }
            Verdict::Refuse {
                checked,
                error_code,
                message,
                bad,
            } => {
                policy::count_checked(&policy.name, "kafka", checked as u64);
                bad.iter()
                    .for_each(|b| policy::count_rejected(&b.violation, "kafka"));
                tracing::warn!(
                    connection = at.conn.id,
                    client_id = %at.client_id,
                    topic = %at.topic,
                    partition = partition.index,
                    policy = %policy.name,
                    error_code,
                    reason = %message,
                    "partition refused by its topic policy"
                );
                let record_errors = bad
                    .iter()
                    .map(|b| (b.index, b.violation.to_string()))
                    .collect();
                Outcome::Answered(answer(error_code, message, record_errors))
            }
            Verdict::DeadLetter {
                checked,
                topic: dlq,
                kept,
                bad,
            } => {
                policy::count_checked(&policy.name, "kafka", checked as u64);
                let written = dead_letter::write(
                    &self.producer,
                    &dlq,
                    at.topic,
                    partition.index,
                    at.client_id,
                    &bad,
                )
                .await;
                if let Err(failure) = written {
                    tracing::warn!(
                        connection = at.conn.id,
                        topic = %at.topic,
                        partition = partition.index,
                        error_code = failure.error_code,
                        reason = %failure.message,
                        "dead-letter write failed; partition refused"
                    );
                    return Outcome::Answered(answer(
                        failure.error_code,
                        failure.message,
                        Vec::new(),
                    ));
                }
                bad.iter()
                    .for_each(|b| policy::count_dead_lettered(&b.violation));
                tracing::info!(
                    connection = at.conn.id,
                    client_id = %at.client_id,
                    topic = %at.topic,
                    partition = partition.index,
                    policy = %policy.name,
                    dead_letter_topic = %dlq,
                    records = bad.len(),
                    first_reason = %bad.first().map(|b| b.violation.to_string()).unwrap_or_default(),
                    "records dead-lettered by their topic policy"
                );
                match kept {
                    Some(rest) => {
                        partition.records = Some(rest);
                        Outcome::Rewritten(partition)
                    }
                    None => Outcome::Answered(answer(
                        0,
                        "every record dead-lettered".into(),
                        Vec::new(),
                    )),
                }
            }
        }
    }
}

/// The partitions the policy answered, merged into the broker's response.
struct PolicyAnswers(Vec<FailedPartition>);

impl Owing for PolicyAnswers {
    fn settle(
        self: Box<Self>,
        response: Frame,
        api_version: i16,
    ) -> BoxFuture<'static, Result<Frame, StageError>> {
        let merged = produce_answer::merge_answers(&response, api_version, &self.0)
            .map_err(|e| StageError::new("record_policy", format!("Produce response: {e}")));
        Box::pin(async move { merged })
    }

    fn abandon(self: Box<Self>) {}
}
