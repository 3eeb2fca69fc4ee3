//! Judging the records of one partition of a Produce request against its
//! topic's policy.
//!
//! Every v2 batch is decoded (decompressed if need be) and each record
//! judged as its producer sent it; the record index is its position in
//! the partition's records, counted across batches from 0, which is what
//! KIP-467's `batch_index` names (a producer sends one batch per partition,
//! where it is the record's index in that batch).
//!
//! What cannot be judged is refused: a batch that does not decode, and the
//! old message formats (magic 0 and 1, which carry no headers and which
//! Produce v3+ does not allow). A policy that could be passed by sending
//! unreadable bytes would not be a policy.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::kafka::wire::batches;
use crate::kafka::wire::codes::{CORRUPT_MESSAGE, INVALID_RECORD};
use crate::lfs::rewrite;
use crate::policy::{Action, Policy, RecordView, Violation};

/// A record that broke the policy.
pub struct BadRecord {
    pub index: i32,
    pub record: Record,
    pub violation: Violation,
}

/// What becomes of one partition.
pub enum Verdict {
    /// Every record keeps the policy: forward the bytes as they are.
    Pass { checked: usize },
    /// The partition fails with this code and these per-record errors.
    Refuse {
        checked: usize,
        error_code: i16,
        message: String,
        bad: Vec<BadRecord>,
    },
    /// The bad records go to the dead-letter topic; `kept` (the rest,
    /// rebuilt; `None` when nothing is left) goes on.
    DeadLetter {
        checked: usize,
        /// The dead-letter topic.
        topic: String,
        kept: Option<Bytes>,
        bad: Vec<BadRecord>,
    },
}

/// Why dead-lettering is not done for idempotent and transactional
/// batches (the README explains it).
pub const IDEMPOTENT_REFUSAL: &str = "dead-lettering is not possible for idempotent or transactional producers (removing records would break the batch's sequence numbers); the records were refused instead";

/// Judges one partition's records. `offloads`: the LFS offload applies
/// to this topic (records with `LFS_BLOB` will be stored as objects).
pub fn judge_partition(policy: &Policy, records: &Bytes, offloads: bool) -> Verdict {
    let (whole, rest) = batches::split_whole(records);
    if !rest.is_empty() {
        return unreadable(format!(
            "{} bytes after the last whole record batch",
            rest.len()
        ));
    }
    let mut decoded = Vec::with_capacity(whole.len());
    for batch in &whole {
        if batches::magic(batch) != 2 {
            return unreadable(format!(
                "a message set of format v{} carries no headers and cannot be checked",
                batches::magic(batch)
            ));
        }
        match RecordBatchDecoder::decode(&mut batch.clone()) {
            Ok(set) => decoded.push(set),
            Err(e) => return unreadable(format!("a record batch does not decode: {e}")),
        }
    }
    let mut checked = 0;
    let mut bad = Vec::new();
    let mut bad_per_batch = vec![0usize; decoded.len()];
    let mut sequenced = false;
    for (b, set) in decoded.iter().enumerate() {
        for record in &set.records {
            let index = checked as i32;
            checked += 1;
            if record.control {
                continue;
            }
            sequenced |= record.producer_id >= 0 || record.transactional;
            let view = RecordView {
                key: record.key.as_deref(),
                value: record.value.as_deref(),
                value_size: record.value.as_ref().map_or(0, |v| v.len() as u64),
                headers: &record.headers,
                offloaded: offloads && rewrite::is_lfs(record),
            };
            if let Err(violation) = policy.check(&view) {
                bad_per_batch[b] += 1;
                bad.push(BadRecord {
                    index,
                    record: record.clone(),
                    violation,
                });
            }
        }
    }
    if bad.is_empty() {
        return Verdict::Pass { checked };
    }
    let refuse = |message: String, bad| Verdict::Refuse {
        checked,
        error_code: INVALID_RECORD,
        message,
        bad,
    };
    let summary = format!(
        "{} of {checked} records break their topic policy; first: record {}: {}",
        bad.len(),
        bad[0].index,
        bad[0].violation
    );
    match &policy.action {
        Action::Reject => refuse(summary, bad),
        Action::DeadLetter { .. } if sequenced => {
            refuse(format!("{summary}; {IDEMPOTENT_REFUSAL}"), bad)
        }
        Action::DeadLetter { topic } => {
            match rebuild_without(&whole, decoded, &bad_per_batch, &bad) {
                Ok(kept) => Verdict::DeadLetter {
                    checked,
                    topic: topic.clone(),
                    kept,
                    bad,
                },
                Err(e) => refuse(
                    format!("{summary}; the rest could not be rebuilt: {e}"),
                    bad,
                ),
            }
        }
    }
}

fn unreadable(message: String) -> Verdict {
    Verdict::Refuse {
        checked: 0,
        error_code: CORRUPT_MESSAGE,
        message: format!("records cannot be checked against the topic's policy: {message}"),
        bad: Vec::new(),
    }
}

/// The partition's records without the bad ones: batches without a bad
/// record stay as their bytes; the others are rebuilt with their codec,
/// offsets renumbered from the batch's base so they stay contiguous
/// (the broker assigns the real ones).
fn rebuild_without(
    whole: &[Bytes],
    decoded: Vec<kafka_protocol::records::RecordSet>,
    bad_per_batch: &[usize],
    bad: &[BadRecord],
) -> Result<Option<Bytes>, String> {
    let mut out = BytesMut::new();
    let mut index = 0i32;
    let mut bad_indexes = bad.iter().map(|b| b.index).peekable();
    for ((bytes, set), bad_here) in whole.iter().zip(decoded).zip(bad_per_batch) {
        let count = set.records.len() as i32;
        if *bad_here == 0 {
            out.extend_from_slice(bytes);
            index += count;
            continue;
        }
        // The encoder keeps a batch whole while offset minus sequence stays
        // the same (for a producer without id the sequence is the base's,
        // -1, plus the delta): both are renumbered together.
        let (base, base_sequence) = set
            .records
            .first()
            .map_or((0, -1), |r| (r.offset, r.sequence));
        let mut kept = Vec::with_capacity(set.records.len() - bad_here);
        for record in set.records {
            if bad_indexes.peek() == Some(&index) {
                bad_indexes.next();
            } else {
                kept.push(record);
            }
            index += 1;
        }
        for (i, record) in kept.iter_mut().enumerate() {
            record.offset = base + i as i64;
            record.sequence = base_sequence.wrapping_add(i as i32);
        }
        if kept.is_empty() {
            continue;
        }
        let options = RecordEncodeOptions {
            version: set.version,
            compression: set.compression,
        };
        RecordBatchEncoder::encode(&mut out, kept.iter(), &options).map_err(|e| e.to_string())?;
    }
    Ok((!out.is_empty()).then(|| out.freeze()))
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
