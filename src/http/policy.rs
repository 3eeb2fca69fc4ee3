//! Record policies on the HTTP API: `/lfs/produce`, upload sessions and
//! request-reply calls are judged by the same topic policy as Kafka
//! producers, and a record that breaks it is answered 400 with the rule
//! as its code (`policy_<rule>`, e.g. `policy_header_required`) and a
//! message naming the policy, the rule and what to fix.
//!
//! What is known before the body (headers from `X-Kafka-Header-*` or the
//! session's `headers`, key, declared size) is judged before a byte is
//! stored. A JSON value rule needs the value: the body is held as it
//! streams to storage, up to the rule's `max_bytes` (a larger body breaks
//! the rule), and judged before the record is produced; a refused body's
//! object is deleted. LFS uploads are always offloaded, so the size rules
//! for values kept in Kafka do not apply to them.

use bytes::{Bytes, BytesMut};

use super::error::ApiError;
use crate::policy::rules::HttpHeaders;
use crate::policy::{self, Policy, RecordView, Violation};

/// The 400 answer for a broken rule (counted).
pub fn refused(violation: Violation) -> ApiError {
    policy::count_rejected(&violation, "http");
    ApiError::bad_request(violation.rule.http_code(), violation.to_string())
}

/// The policy of `topic` now, if any.
pub fn for_topic(book: &policy::PolicyBook, topic: &str) -> Option<Policy> {
    book.current().for_topic(topic).cloned()
}

/// Judges a record whose value is at hand (request-reply and one-way
/// produce bodies; `None`: a tombstone).
pub fn check_record(
    policy: Option<&Policy>,
    key: Option<&[u8]>,
    headers: &[(String, Bytes)],
    value: Option<&[u8]>,
) -> Result<(), ApiError> {
    let Some(policy) = policy else {
        return Ok(());
    };
    policy::count_checked(&policy.name, "http", 1);
    policy
        .check(&RecordView {
            key,
            value,
            value_size: value.map_or(0, |v| v.len() as u64),
            headers: &HttpHeaders(headers),
            offloaded: false,
        })
        .map_err(refused)
}

/// The value of an LFS upload, held while it streams when the policy
/// judges values.
pub struct ValueCheck {
    policy: Policy,
    held: Option<BytesMut>,
    limit: u64,
    size: u64,
}

impl ValueCheck {
    /// Judges what is known before the body of an LFS upload; returns the
    /// check the body still needs, when the policy judges values.
    pub fn begin(
        policy: Option<Policy>,
        key: Option<&[u8]>,
        headers: &[(String, Bytes)],
        declared_size: Option<u64>,
    ) -> Result<Option<ValueCheck>, ApiError> {
        let Some(policy) = policy else {
            return Ok(None);
        };
        policy::count_checked(&policy.name, "http", 1);
        policy
            .check_without_value(&RecordView {
                key,
                value: None,
                value_size: declared_size.unwrap_or(0),
                headers: &HttpHeaders(headers),
                offloaded: true,
            })
            .map_err(refused)?;
        let Some(limit) = policy.value.as_ref().map(|v| v.max_bytes) else {
            return Ok(None);
        };
        let mut check = ValueCheck {
            policy,
            held: Some(BytesMut::new()),
            limit,
            size: 0,
        };
        if let Some(size) = declared_size.filter(|s| *s > limit) {
            check.size = size;
            return Err(refused(check.too_large()));
        }
        Ok(Some(check))
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.size > self.limit {
            self.held = None;
        } else if let Some(held) = self.held.as_mut() {
            held.extend_from_slice(data);
        }
    }

    /// Judges the whole body.
    pub fn judge(&self) -> Result<(), ApiError> {
        let result = match &self.held {
            Some(held) => self.policy.check_value(Some(held)),
            None => Err(self.too_large()),
        };
        result.map_err(refused)
    }

    fn too_large(&self) -> Violation {
        Violation {
            policy: self.policy.name.clone(),
            rule: policy::Rule::ValueJson,
            message: policy::json::too_large(self.size, self.limit),
        }
    }
}
