//! One policy and how it judges one record.
//!
//! Checks run in a fixed order and the first broken rule is the answer, so
//! a producer fixes one thing at a time and every message names exactly
//! one rule: required headers, header values, key, value size (or LFS
//! required), then the JSON value.
//!
//! Header names are matched exactly on Kafka records (Kafka headers are
//! case-sensitive, and so are the consumers that read them) and without
//! regard to ASCII case on HTTP requests, whose header names HTTP itself
//! lowercases.

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use regex::Regex;

use super::json::JsonRule;

/// Every rule a record can break; the label of the policy metrics and the
/// suffix of the HTTP error code (`policy_<rule>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    HeaderRequired,
    HeaderValue,
    KeyRequired,
    KeyForbidden,
    KeyUuid,
    ValueMaxBytes,
    LfsRequired,
    ValueJson,
}

impl Rule {
    pub fn label(self) -> &'static str {
        match self {
            Rule::HeaderRequired => "header_required",
            Rule::HeaderValue => "header_value",
            Rule::KeyRequired => "key_required",
            Rule::KeyForbidden => "key_forbidden",
            Rule::KeyUuid => "key_uuid",
            Rule::ValueMaxBytes => "value_max_bytes",
            Rule::LfsRequired => "lfs_required",
            Rule::ValueJson => "value_json",
        }
    }

    /// The `code` of the HTTP 400 answer.
    pub fn http_code(self) -> &'static str {
        match self {
            Rule::HeaderRequired => "policy_header_required",
            Rule::HeaderValue => "policy_header_value",
            Rule::KeyRequired => "policy_key_required",
            Rule::KeyForbidden => "policy_key_forbidden",
            Rule::KeyUuid => "policy_key_uuid",
            Rule::ValueMaxBytes => "policy_value_max_bytes",
            Rule::LfsRequired => "policy_lfs_required",
            Rule::ValueJson => "policy_value_json",
        }
    }
}

/// A broken rule: which, and a message that says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub policy: String,
    pub rule: Rule,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policy {} rule {}: {}",
            self.policy,
            self.rule.label(),
            self.message
        )
    }
}

/// What happens to a record that breaks the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Its partition fails with INVALID_RECORD, naming the record.
    Reject,
    /// It goes to this topic instead; the rest of its batch goes on.
    DeadLetter { topic: String },
}

/// Whether a record must, may or must not have a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyPresence {
    #[default]
    Optional,
    Required,
    Forbidden,
}

/// The key rule.
#[derive(Debug, Clone, Default)]
pub struct KeyRule {
    pub presence: KeyPresence,
    /// A present key must be a UUID as Kafka's `UUIDSerializer` writes it:
    /// the 36-character text form (any hex case).
    pub uuid: bool,
    /// Also accept the 16 raw bytes of a UUID (not Kafka's default form:
    /// `UUIDDeserializer` cannot read it).
    pub uuid_binary: bool,
}

/// What a header's value must be.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    pub name: String,
    /// One of these, exactly.
    pub allowed: Option<Vec<String>>,
    /// Matches this (UTF-8 values only).
    pub pattern: Option<Regex>,
}

/// One topic policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub action: Action,
    pub required_headers: Vec<String>,
    pub header_rules: Vec<HeaderRule>,
    pub key: KeyRule,
    /// Largest value not offloaded, in bytes.
    pub max_value_bytes: Option<u64>,
    /// A value larger than this must carry `LFS_BLOB`.
    pub lfs_required_above: Option<u64>,
    pub value: Option<JsonRule>,
}

/// Record headers by name.
pub trait HeaderLookup {
    /// `None`: no such header; `Some(None)`: present with a null value.
    fn header(&self, name: &str) -> Option<Option<&[u8]>>;
}

/// Kafka record headers: names match exactly.
impl HeaderLookup for IndexMap<StrBytes, Option<Bytes>> {
    fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_deref())
    }
}

/// Headers of an HTTP request, as they will go on the record: names match
/// without regard to ASCII case.
pub struct HttpHeaders<'a>(pub &'a [(String, Bytes)]);

impl HeaderLookup for HttpHeaders<'_> {
    fn header(&self, name: &str) -> Option<Option<&[u8]>> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Some(v.as_ref()))
    }
}

/// One record as its producer sent it.
pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    /// The value, when at hand (`None` is a null value).
    pub value: Option<&'a [u8]>,
    /// The value's size, also when it is not at hand (HTTP uploads).
    pub value_size: u64,
    pub headers: &'a dyn HeaderLookup,
    /// The proxy stores the value as an object (it carries `LFS_BLOB` on
    /// an LFS topic, or it came through the HTTP LFS API).
    pub offloaded: bool,
}

impl Policy {
    /// Judges everything but the value's content: what HTTP knows before
    /// the body is read.
    pub fn check_without_value(&self, record: &RecordView<'_>) -> Result<(), Violation> {
        self.check_headers(record.headers)?;
        self.check_key(record.key)?;
        self.check_size(record.value_size, record.offloaded)
    }

    /// Judges a record whose value is at hand.
    pub fn check(&self, record: &RecordView<'_>) -> Result<(), Violation> {
        self.check_without_value(record)?;
        self.check_value(record.value)
    }

    /// Judges the value's content alone.
    pub fn check_value(&self, value: Option<&[u8]>) -> Result<(), Violation> {
        match &self.value {
            Some(rule) => rule
                .check(value)
                .map_err(|message| self.violation(Rule::ValueJson, message)),
            None => Ok(()),
        }
    }

    fn violation(&self, rule: Rule, message: String) -> Violation {
        Violation {
            policy: self.name.clone(),
            rule,
            message,
        }
    }

    fn check_headers(&self, headers: &dyn HeaderLookup) -> Result<(), Violation> {
        for name in &self.required_headers {
            if headers.header(name).is_none() {
                return Err(
                    self.violation(Rule::HeaderRequired, format!("header {name} is required"))
                );
            }
        }
        for rule in &self.header_rules {
            let Some(value) = headers.header(&rule.name) else {
                continue;
            };
            let text = value.and_then(|v| std::str::from_utf8(v).ok());
            if let Some(allowed) = &rule.allowed {
                if !text.is_some_and(|t| allowed.iter().any(|a| a == t)) {
                    return Err(self.violation(
                        Rule::HeaderValue,
                        format!(
                            "header {} must be one of {}; got {}",
                            rule.name,
                            allowed.join(", "),
                            shown(value)
                        ),
                    ));
                }
            }
            if let Some(pattern) = &rule.pattern {
                if !text.is_some_and(|t| pattern.is_match(t)) {
                    return Err(self.violation(
                        Rule::HeaderValue,
                        format!(
                            "header {} must match {}; got {}",
                            rule.name,
                            pattern.as_str(),
                            shown(value)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_key(&self, key: Option<&[u8]>) -> Result<(), Violation> {
        match (self.key.presence, key) {
            (KeyPresence::Required, None) => {
                return Err(self.violation(Rule::KeyRequired, "a key is required".into()))
            }
            (KeyPresence::Forbidden, Some(_)) => {
                return Err(self.violation(Rule::KeyForbidden, "records must not have a key".into()))
            }
            _ => {}
        }
        if let (true, Some(key)) = (self.key.uuid, key) {
            let binary = self.key.uuid_binary && key.len() == 16;
            if !binary && !is_uuid_text(key) {
                let accepted = if self.key.uuid_binary {
                    "the 36-character text form or 16 bytes"
                } else {
                    "the 36-character text form, as Kafka's UUIDSerializer writes it"
                };
                return Err(self.violation(
                    Rule::KeyUuid,
                    format!(
                        "the key must be a UUID in {accepted}; got {}",
                        shown(Some(key))
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_size(&self, size: u64, offloaded: bool) -> Result<(), Violation> {
        if offloaded {
            return Ok(());
        }
        if let Some(max) = self.lfs_required_above.filter(|max| size > *max) {
            return Err(self.violation(
                Rule::LfsRequired,
                format!(
                    "a value of {size} bytes (over {max}) must be sent with the LFS_BLOB header"
                ),
            ));
        }
        if let Some(max) = self.max_value_bytes.filter(|max| size > *max) {
            return Err(self.violation(
                Rule::ValueMaxBytes,
                format!("the value is {size} bytes; at most {max} are allowed"),
            ));
        }
        Ok(())
    }
}

/// Kafka's `UUIDSerializer` form: `8-4-4-4-12` hex digits.
pub fn is_uuid_text(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A header or key value for a message: text as it is (cut at 64
/// characters), else its length.
fn shown(value: Option<&[u8]>) -> String {
    match value {
        None => "null".into(),
        Some(v) => match std::str::from_utf8(v) {
            Ok(t) if t.chars().count() <= 64 => format!("{t:?}"),
            Ok(t) => format!("{:?}...", t.chars().take(64).collect::<String>()),
            Err(_) => format!("{} bytes that are not UTF-8", v.len()),
        },
    }
}
