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

use std::borrow::Cow;

use regex::Regex;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

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

/// What is wrong with a value of `size` bytes when JSON is checked up to
/// `max_bytes` (parsing holds the value, so a larger one breaks the rule).
pub fn too_large(size: u64, max_bytes: u64) -> String {
    format!("the value is {size} bytes; its JSON is checked up to {max_bytes} (max_bytes)")
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
            return Err(too_large(bytes.len() as u64, self.max_bytes));
        }
        let top: Field<'_> =
            serde_json::from_slice(bytes).map_err(|e| format!("the value is not JSON: {e}"))?;
        let Field::Object(object) = top else {
            return Err(format!(
                "the value is a JSON {}; a JSON object is required",
                top.type_name()
            ));
        };
        for name in &self.required {
            if !object.iter().any(|(k, _)| k == name) {
                return Err(format!("the value has no field {name}"));
            }
        }
        for rule in &self.properties {
            if let Some((_, field)) = object.iter().find(|(k, _)| *k == rule.name) {
                rule.check(field)?;
            }
        }
        if !self.additional_properties {
            if let Some((extra, _)) = object
                .iter()
                .find(|(k, _)| !self.properties.iter().any(|p| p.name == *k))
            {
                return Err(format!("the value has field {extra}, which is not allowed"));
            }
        }
        Ok(())
    }
}

impl PropertyRule {
    fn check(&self, field: &Field<'_>) -> Result<(), String> {
        let name = &self.name;
        if let Some(kind) = self.kind {
            if !kind.matches(field) {
                return Err(format!(
                    "field {name} must be a JSON {}; got a {}",
                    kind.name(),
                    field.type_name()
                ));
            }
        }
        let Field::String(text) = field else {
            return Ok(());
        };
        if let Some(pattern) = &self.pattern {
            if !pattern.is_match(text) {
                return Err(format!("field {name} must match {}", pattern.as_str()));
            }
        }
        if self.format == Some(StringFormat::Base64) && !is_base64(text.as_bytes()) {
            return Err(format!(
                "field {name} must be base64 (standard alphabet, padded)"
            ));
        }
        Ok(())
    }
}

/// Standard-alphabet base64 with padding, checked without decoding.
fn is_base64(text: &[u8]) -> bool {
    if !text.len().is_multiple_of(4) {
        return false;
    }
    let padding = text.iter().rev().take_while(|b| **b == b'=').count();
    if padding > 2 {
        return false;
    }
    let body = &text[..text.len() - padding];
    // One table lookup per byte, folded without early exit (the loop
    // vectorises; a base64 value is all valid in the common case).
    if body.iter().fold(0u8, |bad, b| bad | INVALID[*b as usize]) != 0 {
        return false;
    }
    // The unused bits before the padding must be zero (as decoders demand).
    match (padding, body.last()) {
        (0, _) | (_, None) => true,
        (p, Some(last)) => {
            let v = base64_value(*last);
            if p == 2 {
                v & 0x0f == 0
            } else {
                v & 0x03 == 0
            }
        }
    }
}

/// 1 for every byte outside the standard base64 alphabet.
static INVALID: [u8; 256] = {
    let mut table = [1u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
            table[b] = 0;
        }
        b += 1;
    }
    table
};

fn base64_value(b: u8) -> u8 {
    match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        _ => 63,
    }
}

/// One JSON value as far as the rule needs it: the top-level object's
/// fields, each one's type, and strings (borrowed from the value where
/// they have no escapes). Nested values are skipped, not built.
enum Field<'a> {
    Null,
    Bool,
    Integer,
    Number,
    String(Cow<'a, str>),
    Array,
    Object(Vec<(Cow<'a, str>, Field<'a>)>),
}

impl Field<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Field::Null => "null",
            Field::Bool => "boolean",
            Field::Integer | Field::Number => "number",
            Field::String(_) => "string",
            Field::Array => "array",
            Field::Object(_) => "object",
        }
    }
}

impl JsonType {
    fn matches(self, field: &Field<'_>) -> bool {
        matches!(
            (self, field),
            (JsonType::String, Field::String(_))
                | (JsonType::Number, Field::Integer | Field::Number)
                | (JsonType::Integer, Field::Integer)
                | (JsonType::Boolean, Field::Bool)
                | (JsonType::Object, Field::Object(_))
                | (JsonType::Array, Field::Array)
                | (JsonType::Null, Field::Null)
        )
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

/// The top level: an object's fields are read one level deep.
struct TopVisitor;
/// Below it: the type, and strings.
struct FieldVisitor;

macro_rules! scalar_visits {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
            Ok(Field::Null)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field<'de>, E> {
            Ok(Field::Bool)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field<'de>, E> {
            Ok(Field::Integer)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Field<'de>, E> {
            Ok(Field::Integer)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
            Ok(Field::Number)
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
            Ok(Field::String(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
            Ok(Field::String(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
            Ok(Field::String(Cow::Owned(v)))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Field::Array)
        }
    };
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    scalar_visits!();

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        let mut fields = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let value = map.next_value_seed(FieldSeed)?;
            fields.push((key, value));
        }
        Ok(Field::Object(fields))
    }
}

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    scalar_visits!();

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object(Vec::new()))
    }
}

struct FieldSeed;

impl<'de> de::DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field<'de>, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn base64_as_decoders_judge_it() {
        let engine = base64::engine::general_purpose::STANDARD;
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = engine.encode(&data);
            assert!(is_base64(text.as_bytes()), "{text}");
        }
        for bad in [
            "a", "abc", "ab=c", "a===", "ab c", "ab-_", "aGk", "aGl=", "aR==",
        ] {
            assert_eq!(
                is_base64(bad.as_bytes()),
                engine.decode(bad).is_ok(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fields_are_typed_and_nested_values_skipped() {
        let rule = JsonRule {
            required: vec!["a".into()],
            properties: vec![
                PropertyRule {
                    name: "a".into(),
                    kind: Some(JsonType::Integer),
                    ..Default::default()
                },
                PropertyRule {
                    name: "s".into(),
                    kind: Some(JsonType::String),
                    pattern: Some(Regex::new("^x").unwrap()),
                    ..Default::default()
                },
            ],
            additional_properties: true,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            rule.check(Some(
                br#"{"a": 1, "n": {"deep": [1, {"x": 2}]}, "s": "x\u00e9"}"#
            )),
            Ok(())
        );
        assert!(rule
            .check(Some(br#"{"a": 1.5}"#))
            .unwrap_err()
            .contains("must be a JSON integer; got a number"));
        assert!(rule
            .check(Some(br#"{"a": 1, "s": "y"}"#))
            .unwrap_err()
            .contains("field s must match ^x"));
        assert!(rule
            .check(Some(br#"{"a": 1"#))
            .unwrap_err()
            .starts_with("the value is not JSON"));
        assert!(rule
            .check(Some(b"\"x\""))
            .unwrap_err()
            .contains("a JSON string; a JSON object is required"));
        assert!(rule.check(None).unwrap_err().contains("null"));
    }
}
