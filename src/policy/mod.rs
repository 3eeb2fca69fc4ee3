//! Record policies: a contract for the records of a topic (required
//! headers, header values, key form, value size, JSON value fields, LFS
//! required above a size), checked once at the edge for every producer:
//! the Kafka produce path (`stages::record_policy`) and the HTTP API.
//!
//! - [`file`] reads the policy file (YAML or JSON) into a [`PolicySet`];
//!   every mistake is reported with its line.
//! - [`rules`] is one policy and how it judges one record ([`RecordView`]).
//! - [`json`] is the JSON value rule: a small subset of JSON Schema
//!   (required fields, their types, a pattern, base64 strings).
//! - [`book`] holds the policy in force and replaces it on SIGHUP or when
//!   the file changes; a file that does not load keeps the old policy.
//!
//! What a record is judged on is the record as its producer sent it,
//! knowing whether the proxy will offload its value: the document, never
//! the envelope that replaces it.

pub mod book;
pub mod file;
pub mod json;
pub mod rules;

pub use book::PolicyBook;
pub use file::{PolicyFileError, PolicySet};
pub use rules::{Action, Policy, RecordView, Rule, Violation};

use crate::metrics as m;

/// Counts `n` records judged by `policy` on `path` (`kafka`, `http`).
pub fn count_checked(policy: &str, path: &'static str, n: u64) {
    metrics::counter!(m::POLICY_RECORDS_CHECKED_TOTAL, "policy" => policy.to_owned(), "path" => path)
        .increment(n);
}

/// Counts a refused record.
pub fn count_rejected(violation: &Violation, path: &'static str) {
    metrics::counter!(
        m::POLICY_RECORDS_REJECTED_TOTAL,
        "policy" => violation.policy.clone(),
        "rule" => violation.rule.label(),
        "path" => path
    )
    .increment(1);
}

/// Counts a dead-lettered record.
pub fn count_dead_lettered(violation: &Violation) {
    metrics::counter!(
        m::POLICY_RECORDS_DEAD_LETTERED_TOTAL,
        "policy" => violation.policy.clone(),
        "rule" => violation.rule.label()
    )
    .increment(1);
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
