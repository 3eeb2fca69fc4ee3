//! Fetch rehydration: a Fetch response rewritten so that every record whose
//! value is an envelope this proxy resolves carries the original value
//! again, verified.
//!
//! Rules kept here:
//!
//! * **No unverified byte goes out.** Each object is read whole and checked
//!   against the envelope's size and SHA-256 (`resolve::read_verified`)
//!   before its batch is rebuilt.
//! * **Batches stay batches.** A batch with envelopes is rebuilt with its
//!   own codec and header (`batch::rebuild`); every other batch, control
//!   batches, old message sets and a partial batch at the end keep their
//!   bytes. A response with no envelope at all is forwarded as it came.
//! * **Failures stay in their partition.** When an object is missing or
//!   does not match, the records before its batch are delivered and the
//!   partition stops there; if it is the first batch, the partition gets
//!   `CORRUPT_MESSAGE` (the consumer reports it and fetches the same offset
//!   again: nothing is skipped). Storage unreachable gives
//!   `KAFKA_STORAGE_ERROR`, which clients retry without telling the
//!   application. Other partitions are delivered. Fetch responses have no
//!   per-partition `error_message`, so the reason and the object key go to
//!   the log and the metrics.
//! * **What the consumer asked for.** Rehydrated values make a response
//!   larger than the broker's. As a broker does (KIP-74), the first batch
//!   of the response is always delivered whatever its size; after it, a
//!   batch that would take the partition past `partition_max_bytes` or the
//!   response past `max_bytes` is left for the next fetch (those batches
//!   are not even read from storage).
//! * **Bounded memory.** Three times the bytes of the values a response
//!   carries (read, rebuilt, encoded) are reserved from a budget shared by
//!   every connection before any object is read, and stay reserved until
//!   the response has been written: a
//!   response waits for room instead of growing memory. One response
//!   larger than the whole budget waits for all of it. Objects recently
//!   served are shared between responses through [`VerifiedObjects`].

pub mod batch;
pub mod cache;
mod limits;
pub mod topic_ids;

pub use limits::FetchLimits;
use limits::{topic_ref, TopicRef};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use kafka_protocol::messages::{FetchResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion};
use kafka_protocol::records::{RecordBatchDecoder, RecordSet};

use self::cache::VerifiedObjects;
use self::topic_ids::TopicIds;
use super::resolve::{EnvelopeRef, EnvelopeScope, ResolveError};
use super::store::BlobStore;
use crate::kafka::wire::batches;
use crate::kafka::wire::codes::{CORRUPT_MESSAGE, KAFKA_STORAGE_ERROR, UNKNOWN_TOPIC_ID};
use crate::kafka::wire::frame::{self, Frame};
use crate::metrics as m;

/// How many times a value's bytes are held while its response is built.
const COPIES_HELD: usize = 3;

/// Objects of one batch read from storage at once.
const PARALLEL_READS: usize = 8;

/// Everything the rehydration shares across connections.
pub struct Rehydrator {
    store: BlobStore,
    scope: EnvelopeScope,
    cache: VerifiedObjects,
    budget: Arc<tokio::sync::Semaphore>,
    budget_total: usize,
    topic_ids: TopicIds,
}

#[derive(Debug, thiserror::Error)]
pub enum RehydrateError {
    #[error("cannot decode Fetch v{version} response: {source}")]
    Decode { version: i16, source: anyhow::Error },
    #[error("cannot encode Fetch v{version} response: {source}")]
    Encode { version: i16, source: anyhow::Error },
}

/// Who the response goes to, for logs.
pub struct Consumer<'a> {
    pub connection: u64,
    pub client_id: &'a str,
}

/// One batch of a partition, as planned.
enum Planned {
    Keep(Bytes),
    Rebuild {
        original: Bytes,
        set: RecordSet,
        /// (record index, its envelope)
        envelopes: Vec<(usize, EnvelopeRef)>,
    },
}

/// What will become of one partition's records.
struct PartitionPlan {
    topic: usize,
    partition: usize,
    topic_name: String,
    batches: Vec<Planned>,
    /// Bytes after the whole batches (a batch cut by the broker's limit);
    /// kept only when no batch was left out.
    rest: Option<Bytes>,
    /// The first batch needs a topic name the proxy has not learnt.
    unknown_topic: bool,
}

impl Rehydrator {
    /// `cache_bytes` bounds the objects kept for other consumers,
    /// `budget_bytes` the values held in responses being built or written.
    pub fn new(
        store: BlobStore,
        scope: EnvelopeScope,
        cache_bytes: usize,
        budget_bytes: usize,
    ) -> Self {
        let budget_total = budget_bytes.clamp(
            1,
            tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize),
        );
        Rehydrator {
            store,
            scope,
            cache: VerifiedObjects::new(cache_bytes),
            budget: Arc::new(tokio::sync::Semaphore::new(budget_total)),
            budget_total,
            topic_ids: TopicIds::default(),
        }
    }

    pub fn topic_ids(&self) -> &TopicIds {
        &self.topic_ids
    }

    pub fn cache(&self) -> &VerifiedObjects {
        &self.cache
    }

    /// Rewrites one Fetch response frame for an opted-in consumer.
    pub async fn rehydrate(
        &self,
        response: Frame,
        version: i16,
        limits: &FetchLimits,
        consumer: &Consumer<'_>,
    ) -> Result<Frame, RehydrateError> {
        let header_version = FetchResponse::header_version(version);
        let mut body = response.body();
        let decode_err = |source| RehydrateError::Decode { version, source };
        let header = ResponseHeader::decode(&mut body, header_version).map_err(decode_err)?;
        let mut fetch = FetchResponse::decode(&mut body, version).map_err(decode_err)?;

        let plans = self.plan(&fetch, version, limits);
        if plans.is_empty() {
            return Ok(response);
        }
        let needed: usize = plans
            .iter()
            .flat_map(|p| &p.batches)
            .map(|b| match b {
                Planned::Keep(_) => 0,
                Planned::Rebuild { envelopes, .. } => {
                    envelopes.iter().map(|(_, e)| e.size as usize).sum()
                }
            })
            .sum();
        // Each value is held three times at the peak: as read and verified
        // (or in the cache), in its rebuilt batch, and in the encoded
        // response; the first two go once the response is encoded.
        let reservation = self.reserve(needed.saturating_mul(COPIES_HELD)).await;
        for plan in plans {
            let records = self
                .apply(plan.batches, plan.rest, &plan.topic_name, consumer)
                .await;
            let partition = &mut fetch.responses[plan.topic].partitions[plan.partition];
            let (records, error) = match (plan.unknown_topic, records) {
                (true, _) => (Bytes::new(), Some(UNKNOWN_TOPIC_ID)),
                (false, Ok(records)) => (records, None),
                (false, Err(code)) => (Bytes::new(), Some(code)),
            };
            if let Some(code) = error {
                metrics::counter!(m::REHYDRATE_PARTITION_ERRORS_TOTAL, "error_code" => code.to_string())
                    .increment(1);
                partition.error_code = code;
            }
            partition.records = Some(records);
        }
        frame::encode_response(&header, header_version, &fetch, version)
            .map(|frame| frame.holding(reservation))
            .map_err(|source| RehydrateError::Encode { version, source })
    }

    /// Finds the partitions to change: those with envelopes, and those whose
    /// later batches must wait for the next fetch. Empty: nothing to do.
    fn plan(
        &self,
        fetch: &FetchResponse,
        version: i16,
        limits: &FetchLimits,
    ) -> Vec<PartitionPlan> {
        let mut plans = Vec::new();
        let mut total = 0usize;
        let mut first = true;
        for (ti, topic) in fetch.responses.iter().enumerate() {
            let topic_ref = topic_ref(version, &topic.topic.0, topic.topic_id);
            let name = match &topic_ref {
                TopicRef::Name(name) => Some(name.clone()),
                TopicRef::Id(id) => self.topic_ids.name(*id),
            };
            for (pi, partition) in topic.partitions.iter().enumerate() {
                let Some(records) = partition.records.as_ref().filter(|r| !r.is_empty()) else {
                    continue;
                };
                let limit = limits.partition(&topic_ref, partition.partition_index);
                let (whole, rest) = batches::split_whole(records);
                let mut planned = Vec::with_capacity(whole.len());
                let mut size = 0usize;
                let mut changes = false;
                let mut left_out = false;
                let mut unknown_topic = false;
                for batch in whole {
                    let plan = match name.as_deref() {
                        Some(name) => self.plan_batch(batch, name),
                        None if batches::records_mention(&batch, b"kfs_lfs") => {
                            // Cannot check its envelopes yet: the client
                            // refreshes its metadata (through the proxy,
                            // which learns the id) and fetches again.
                            if planned.is_empty() {
                                unknown_topic = true;
                            }
                            left_out = true;
                            changes = true;
                            break;
                        }
                        None => Planned::Keep(batch),
                    };
                    let bytes = planned_size(&plan);
                    if !first && (size + bytes > limit || total + bytes > limits.max_bytes) {
                        left_out = true;
                        changes = true;
                        break;
                    }
                    first = false;
                    size += bytes;
                    total += bytes;
                    changes |= matches!(plan, Planned::Rebuild { .. });
                    planned.push(plan);
                }
                if !left_out {
                    total += rest.len();
                }
                if changes {
                    plans.push(PartitionPlan {
                        topic: ti,
                        partition: pi,
                        topic_name: name.clone().unwrap_or_default(),
                        batches: planned,
                        rest: (!left_out).then_some(rest),
                        unknown_topic,
                    });
                }
            }
        }
        plans
    }

    /// A batch to rebuild when some record's value is an envelope.
    fn plan_batch(&self, batch: Bytes, topic: &str) -> Planned {
        if batches::magic(&batch) != 2
            || batches::is_control(&batch)
            || !batches::records_mention(&batch, b"kfs_lfs")
        {
            return Planned::Keep(batch);
        }
        let set = match RecordBatchDecoder::decode(&mut batch.clone()) {
            Ok(set) => set,
            Err(error) => {
                // The consumer's own CRC check will judge it.
                tracing::warn!(%error, topic, "fetched record batch does not decode; sent as it is");
                return Planned::Keep(batch);
            }
        };
        let envelopes: Vec<(usize, EnvelopeRef)> = set
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let value = r.value.as_ref()?;
                self.scope
                    .recognise(value, Some(topic))
                    .ok()
                    .map(|e| (i, e))
            })
            .collect();
        if envelopes.is_empty() {
            return Planned::Keep(batch);
        }
        Planned::Rebuild {
            original: batch,
            set,
            envelopes,
        }
    }

    /// Reserves room for `bytes` of values (all of the budget at most).
    async fn reserve(&self, bytes: usize) -> Reservation {
        let permits = bytes.min(self.budget_total) as u32;
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(permits)
            .await
            .expect("the rehydration budget is never closed");
        let reservation = Reservation {
            _permit: permit,
            budget: Arc::clone(&self.budget),
            total: self.budget_total,
        };
        reservation.report();
        reservation
    }

    /// Resolves and rebuilds one partition's batches. `Err(code)`: its
    /// first batch cannot be delivered.
    async fn apply(
        &self,
        planned: Vec<Planned>,
        rest: Option<Bytes>,
        topic: &str,
        consumer: &Consumer<'_>,
    ) -> Result<Bytes, i16> {
        let mut out = BytesMut::new();
        for (index, batch) in planned.into_iter().enumerate() {
            let bytes = match batch {
                Planned::Keep(bytes) => bytes,
                Planned::Rebuild {
                    original,
                    mut set,
                    envelopes,
                } => match self
                    .resolve_batch(&original, &mut set, envelopes, topic, consumer)
                    .await
                {
                    Ok(bytes) => bytes,
                    Err(code) if index == 0 => return Err(code),
                    // What came before is delivered; the next fetch starts
                    // at this batch and gets the error.
                    Err(_) => return Ok(out.freeze()),
                },
            };
            out.extend_from_slice(&bytes);
        }
        if let Some(rest) = rest {
            out.extend_from_slice(&rest);
        }
        Ok(out.freeze())
    }

    async fn resolve_batch(
        &self,
        original: &Bytes,
        set: &mut RecordSet,
        envelopes: Vec<(usize, EnvelopeRef)>,
        topic: &str,
        consumer: &Consumer<'_>,
    ) -> Result<Bytes, i16> {
        let count = envelopes.len();
        let reads = futures_util::stream::iter(
            envelopes
                .into_iter()
                .map(|(i, e)| read_one(&self.cache, &self.store, i, e)),
        )
        .buffered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await;
        let mut bytes_total = 0u64;
        for (index, envelope, read) in reads {
            let envelope = &envelope;
            match read {
                Ok(value) => {
                    bytes_total += value.len() as u64;
                    set.records[index].value = Some(value);
                }
                Err(error) => {
                    return Err(self.failed(&error, envelope, topic, set, index, consumer))
                }
            }
        }
        match batch::rebuild(original, set) {
            Ok(bytes) => {
                metrics::counter!(m::REHYDRATED_RECORDS_TOTAL).increment(count as u64);
                metrics::counter!(m::REHYDRATED_BYTES_TOTAL).increment(bytes_total);
                Ok(bytes)
            }
            Err(error) => {
                tracing::error!(%error, topic, "cannot rebuild a rehydrated record batch");
                Err(CORRUPT_MESSAGE)
            }
        }
    }

    /// Logs and counts a value that cannot be delivered; returns the
    /// partition's error code.
    fn failed(
        &self,
        error: &ResolveError,
        envelope: &EnvelopeRef,
        topic: &str,
        set: &RecordSet,
        index: usize,
        consumer: &Consumer<'_>,
    ) -> i16 {
        let offset = set.records[index].offset;
        if error.is_retriable() {
            metrics::counter!(m::REHYDRATE_STORAGE_ERRORS_TOTAL).increment(1);
            tracing::warn!(
                connection = consumer.connection,
                client_id = consumer.client_id,
                topic,
                offset,
                key = %envelope.key,
                %error,
                "object storage unavailable; partition answered KAFKA_STORAGE_ERROR"
            );
            KAFKA_STORAGE_ERROR
        } else {
            metrics::counter!(m::REHYDRATE_INTEGRITY_FAILURES_TOTAL, "reason" => error.reason())
                .increment(1);
            tracing::error!(
                connection = consumer.connection,
                client_id = consumer.client_id,
                topic,
                offset,
                key = %envelope.key,
                %error,
                "LFS object cannot be delivered; partition answered CORRUPT_MESSAGE"
            );
            CORRUPT_MESSAGE
        }
    }
}

async fn read_one(
    cache: &VerifiedObjects,
    store: &BlobStore,
    index: usize,
    envelope: EnvelopeRef,
) -> (usize, EnvelopeRef, Result<Bytes, ResolveError>) {
    let read = cache.get(store, &envelope).await;
    (index, envelope, read)
}

/// The size a planned batch will have once rebuilt (values replace
/// envelopes; compression ignored).
fn planned_size(plan: &Planned) -> usize {
    match plan {
        Planned::Keep(bytes) => bytes.len(),
        Planned::Rebuild {
            original,
            envelopes,
            ..
        } => {
            original.len()
                + envelopes
                    .iter()
                    .map(|(_, e)| e.size as usize)
                    .sum::<usize>()
        }
    }
}

/// Room in the rehydration budget, held by the response frame until it
/// has been written.
struct Reservation {
    _permit: tokio::sync::OwnedSemaphorePermit,
    budget: Arc<tokio::sync::Semaphore>,
    total: usize,
}

impl Reservation {
    fn report(&self) {
        let held = self.total - self.budget.available_permits();
        metrics::gauge!(m::REHYDRATE_BYTES_HELD).set(held as f64);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // The permit returns after this body; count it as returned.
        let held = self.total - self.budget.available_permits();
        let mine = self._permit.num_permits();
        metrics::gauge!(m::REHYDRATE_BYTES_HELD).set(held.saturating_sub(mine) as f64);
    }
}

#[cfg(test)]
#[path = "rehydrate_tests.rs"]
mod tests;
