//! The policy file: YAML (or JSON, by its `.json` extension), a list of
//! policies, each for topics named exactly or by a `*` pattern. The first
//! policy whose pattern matches a topic is that topic's policy.
//!
//! ```yaml
//! policies:
//!   - name: documents
//!     topics: ["documents", "documents.*"]
//!     action: reject                 # or dead_letter (needs dead_letter_topic)
//!     headers:
//!       required: [Security-Label]
//!       values:
//!         Content-Type: { pattern: "^[a-z]+/[-+.a-zA-Z0-9]+$" }
//!         Exec-Path: { allowed: [ingester, crawler] }
//!     key: { presence: optional, format: uuid, uuid_binary: false }
//!     max_value_bytes: 1048576       # values not offloaded
//!     lfs_required_above: 716800     # larger values must carry LFS_BLOB
//!     value:
//!       json:
//!         required: [uri, content]
//!         properties:
//!           uri: { type: string }
//!           content: { type: string, format: base64 }
//! ```
//!
//! Unknown fields are errors (a misspelt rule must not silently check
//! nothing), and every error names its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use super::json::{JsonRule, JsonType, PropertyRule, StringFormat, DEFAULT_MAX_JSON_BYTES};
use super::rules::{Action, HeaderRule, KeyPresence, KeyRule, Policy};
use crate::kafka::wire::topic::{check_topic_name, MAX_TOPIC_NAME_LENGTH};

#[derive(Debug, thiserror::Error)]
#[error("policy file {}: {message}", path.display())]
pub struct PolicyFileError {
    pub path: PathBuf,
    pub message: String,
}

/// The policies of one file, in file order.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<(Vec<TopicPattern>, Policy)>,
}

impl PolicySet {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyFileError> {
        let error = |message: String| PolicyFileError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let json = path.extension().is_some_and(|e| e == "json");
        Self::parse(&text, json).map_err(error)
    }

    /// Parses a policy file's text (`json`: as JSON, else YAML).
    pub fn parse(text: &str, json: bool) -> Result<Self, String> {
        let file: RawFile = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        let mut names = std::collections::HashSet::new();
        for compiled in &file.policies {
            if !names.insert(compiled.policy.name.as_str()) {
                return Err(format!(
                    "policy name {} is used twice (names label the metrics)",
                    compiled.policy.name
                ));
            }
        }
        Ok(PolicySet {
            policies: file
                .policies
                .into_iter()
                .map(|c| (c.topics, c.policy))
                .collect(),
        })
    }

    /// The policy of `topic`: the first whose pattern matches.
    pub fn for_topic(&self, topic: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .find(|(patterns, _)| patterns.iter().any(|p| p.matches(topic)))
            .map(|(_, policy)| policy)
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.policies.iter().map(|(_, p)| p.name.as_str()).collect()
    }
}

/// A topic name, or a pattern where `*` stands for any characters.
#[derive(Debug, Clone)]
struct TopicPattern(String);

impl TopicPattern {
    fn matches(&self, topic: &str) -> bool {
        glob(self.0.as_bytes(), topic.as_bytes())
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    policies: Vec<CompiledPolicy>,
}

#[derive(Deserialize)]
#[serde(try_from = "RawPolicy")]
struct CompiledPolicy {
    topics: Vec<TopicPattern>,
    policy: Policy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    topics: Vec<String>,
    #[serde(default)]
    action: RawAction,
    dead_letter_topic: Option<String>,
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    key: RawKey,
    max_value_bytes: Option<u64>,
    lfs_required_above: Option<u64>,
    value: Option<RawValue>,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    #[default]
    Reject,
    DeadLetter,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    values: BTreeMap<String, RawHeaderRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRule {
    allowed: Option<Vec<String>>,
    pattern: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    presence: RawPresence,
    #[serde(default)]
    format: RawKeyFormat,
    #[serde(default)]
    uuid_binary: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawPresence {
    #[default]
    Optional,
    Required,
    Forbidden,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum RawKeyFormat {
    #[default]
    Any,
    Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValue {
    json: RawJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJson {
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    properties: BTreeMap<String, RawProperty>,
    #[serde(default = "yes")]
    additional_properties: bool,
    max_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProperty {
    #[serde(rename = "type")]
    kind: Option<JsonType>,
    pattern: Option<String>,
    format: Option<StringFormat>,
}

fn regex(pattern: &str, what: &str) -> Result<Regex, String> {
    Regex::new(pattern)
        .map_err(|e| format!("{what}: pattern {pattern:?} is not a regular expression: {e}"))
}

impl TryFrom<RawPolicy> for CompiledPolicy {
    type Error = String;

    fn try_from(raw: RawPolicy) -> Result<Self, String> {
        let name = raw.name.trim().to_owned();
        if name.is_empty() || name.len() > 64 {
            return Err("a policy needs a name of 1 to 64 characters".into());
        }
        let at = |m: String| format!("policy {name}: {m}");
        if raw.topics.is_empty() {
            return Err(at("topics is empty".into()));
        }
        let action = match (raw.action, raw.dead_letter_topic) {
            (RawAction::Reject, None) => Action::Reject,
            (RawAction::Reject, Some(_)) => {
                return Err(at("dead_letter_topic is set but action is reject".into()))
            }
            (RawAction::DeadLetter, None) => {
                return Err(at("action dead_letter needs dead_letter_topic".into()))
            }
            (RawAction::DeadLetter, Some(topic)) => {
                check_topic_name(&topic, MAX_TOPIC_NAME_LENGTH)
                    .map_err(|e| at(format!("dead_letter_topic: {e}")))?;
                if raw
                    .topics
                    .iter()
                    .any(|p| glob(p.as_bytes(), topic.as_bytes()))
                {
                    return Err(at(format!(
                        "dead_letter_topic {topic} is one of the policy's own topics"
                    )));
                }
                Action::DeadLetter { topic }
            }
        };
        let mut header_rules = Vec::new();
        for (header, rule) in raw.headers.values {
            if rule.allowed.is_none() && rule.pattern.is_none() {
                return Err(at(format!("header {header}: give allowed or pattern")));
            }
            header_rules.push(HeaderRule {
                pattern: rule
                    .pattern
                    .map(|p| regex(&p, &format!("header {header}")))
                    .transpose()
                    .map_err(at)?,
                allowed: rule.allowed,
                name: header,
            });
        }
        if raw.key.uuid_binary && raw.key.format != RawKeyFormat::Uuid {
            return Err(at("key.uuid_binary needs key.format: uuid".into()));
        }
        let key = KeyRule {
            presence: match raw.key.presence {
                RawPresence::Optional => KeyPresence::Optional,
                RawPresence::Required => KeyPresence::Required,
                RawPresence::Forbidden => KeyPresence::Forbidden,
            },
            uuid: raw.key.format == RawKeyFormat::Uuid,
            uuid_binary: raw.key.uuid_binary,
        };
        let value = match raw.value {
            None => None,
            Some(RawValue { json }) => {
                let mut properties = Vec::new();
                for (field, p) in json.properties {
                    if p.format.is_some() && !matches!(p.kind, None | Some(JsonType::String)) {
                        return Err(at(format!("field {field}: format needs type string")));
                    }
                    properties.push(PropertyRule {
                        pattern: p
                            .pattern
                            .map(|r| regex(&r, &format!("field {field}")))
                            .transpose()
                            .map_err(at)?,
                        kind: p.kind,
                        format: p.format,
                        name: field,
                    });
                }
                if !json.additional_properties {
                    if let Some(f) = json
                        .required
                        .iter()
                        .find(|f| !properties.iter().any(|p| &p.name == *f))
                    {
                        return Err(at(format!("required field {f} is not among the properties, and additional_properties is false")));
                    }
                }
                Some(JsonRule {
                    required: json.required,
                    properties,
                    additional_properties: json.additional_properties,
                    max_bytes: json.max_bytes.unwrap_or(DEFAULT_MAX_JSON_BYTES),
                })
            }
        };
        Ok(CompiledPolicy {
            topics: raw.topics.into_iter().map(TopicPattern).collect(),
            policy: Policy {
                name,
                action,
                required_headers: raw.headers.required,
                header_rules,
                key,
                max_value_bytes: raw.max_value_bytes,
                lfs_required_above: raw.lfs_required_above,
                value,
            },
        })
    }
}
