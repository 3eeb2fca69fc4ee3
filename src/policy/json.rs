//! The JSON value rule: a small subset of JSON Schema, enough for the
//! contracts of event pipelines ("a JSON object with `uri` and `content`,
//! `content` base64"): the value is an object; `required` fields are
//! present; each listed property has its `type` (string, number, integer,
//! boolean, object, array, null), its `pattern` (strings) and its `format`
//! (`base64`: standard alphabet, padded); unlisted fields are allowed
//! unless `additional_properties: false`.
//!
//! Why not a JSON Schema crate: the full validators bring a large
//! dependency tree (and remote `$ref` fetching) to the proxy's hot path
//! for keywords these contracts do not use; this subset says in one
//! message which field broke which rule, and is fuzzed with the rest.

use base64::Engine;
use regex::Regex;
use serde_json::Value;

/// JSON types a property may be required to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl JsonType {
    fn name(self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Null => "null",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match self {
            JsonType::String => value.is_string(),
            JsonType::Number => value.is_number(),
            JsonType::Integer => value.is_i64() || value.is_u64(),
            JsonType::Boolean => value.is_boolean(),
            JsonType::Object => value.is_object(),
            JsonType::Array => value.is_array(),
            JsonType::Null => value.is_null(),
        }
    }
}

/// String formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringFormat {
    Base64,
}

/// What one property must be.
#[derive(Debug, Clone, Default)]
pub struct PropertyRule {
    pub name: String,
    pub kind: Option<JsonType>,
    pub pattern: Option<Regex>,
    pub format: Option<StringFormat>,
}

/// The value must be a JSON object with these fields.
#[derive(Debug, Clone)]
pub struct JsonRule {
    pub required: Vec<String>,
    pub properties: Vec<PropertyRule>,
    pub additional_properties: bool,
    /// Largest value whose JSON is checked (parsing holds it); a larger
    /// value breaks the rule.
    pub max_bytes: u64,
}

/// The default of `max_bytes`.
pub const DEFAULT_MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

impl JsonRule {
    /// `Err`: what is wrong, for the producer.
    pub fn check(&self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = value else {
            return Err("the value is null; a JSON object is required".into());
        };
        if bytes.len() as u64 > self.max_bytes {
            return Err(format!(
                "the value is {} bytes; its JSON is checked up to {} (max_bytes)",
                bytes.len(),
                self.max_bytes
            ));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("the value is not JSON: {e}"))?;
        let Value::Object(object) = value else {
            return Err(format!(
                "the value is a JSON {}; a JSON object is required",
                type_name(&value)
            ));
        };
        for name in &self.required {
            if !object.contains_key(name) {
                return Err(format!("the value has no field {name}"));
            }
        }
        for rule in &self.properties {
            if let Some(field) = object.get(&rule.name) {
                rule.check(field)?;
            }
        }
        if !self.additional_properties {
            if let Some(extra) = object
                .keys()
                .find(|k| !self.properties.iter().any(|p| &p.name == *k))
            {
                return Err(format!("the value has field {extra}, which is not allowed"));
            }
        }
        Ok(())
    }
}

impl PropertyRule {
    fn check(&self, field: &Value) -> Result<(), String> {
        let name = &self.name;
        if let Some(kind) = self.kind {
            if !kind.matches(field) {
                return Err(format!(
                    "field {name} must be a JSON {}; got a {}",
                    kind.name(),
                    type_name(field)
                ));
            }
        }
        let Some(text) = field.as_str() else {
            return Ok(());
        };
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(text) {
                return Err(format!("field {name} must match {}", pattern.as_str()));
            }
        }
        if self.format == Some(StringFormat::Base64)
            && base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_err()
        {
            return Err(format!(
                "field {name} must be base64 (standard alphabet, padded)"
            ));
        }
        Ok(())
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
