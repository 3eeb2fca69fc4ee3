//! Where an HTTP upload goes in Kafka: topic, key, partition, record
//! headers and content type, validated with KafScale's error codes.

use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;

use super::error::ApiError;
use crate::kafka::wire::topic::{check_topic_name, TopicNameError};
use crate::lfs::checksum::ChecksumAlg;
use crate::lfs::envelope::DEFAULT_CONTENT_TYPE;

pub const HEADER_TOPIC: &str = "x-kafka-topic";
pub const HEADER_KEY: &str = "x-kafka-key";
pub const HEADER_PARTITION: &str = "x-kafka-partition";
pub const HEADER_CHECKSUM: &str = "x-lfs-checksum";
pub const HEADER_CHECKSUM_ALG: &str = "x-lfs-checksum-alg";
/// Prefix of request headers copied onto the Kafka record.
pub const RECORD_HEADER_PREFIX: &str = "x-kafka-header-";

#[derive(Debug, Clone)]
pub struct ProduceTarget {
    pub topic: String,
    pub key: Option<Bytes>,
    pub partition: Option<i32>,
    pub headers: Vec<(String, Bytes)>,
    pub content_type: String,
}

/// A checksum the uploader expects the payload to have.
#[derive(Debug, Clone)]
pub struct ExpectedChecksum {
    pub alg: ChecksumAlg,
    pub value: Option<String>,
}

/// Kafka's legal topic characters; `.` and `..` alone are not topics.
pub fn topic(value: Option<&str>, max_length: usize) -> Result<String, ApiError> {
    match check_topic_name(value.unwrap_or(""), max_length) {
        Ok(topic) => Ok(topic.to_owned()),
        Err(e @ TopicNameError::Missing) => {
            Err(ApiError::bad_request("missing_topic", e.to_string()))
        }
        Err(e @ TopicNameError::Illegal { .. }) => {
            Err(ApiError::bad_request("invalid_topic", e.to_string()))
        }
    }
}

/// A key is sent base64-encoded (standard alphabet), so it may hold any bytes.
pub fn key(value: Option<&str>) -> Result<Option<Bytes>, ApiError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map(|k| Some(Bytes::from(k)))
        .map_err(|_| ApiError::bad_request("invalid_key", "the key must be base64"))
}

pub fn partition(value: Option<&str>) -> Result<Option<i32>, ApiError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.parse::<i32>() {
        Ok(p) if p >= 0 => Ok(Some(p)),
        _ => Err(ApiError::bad_request(
            "invalid_partition",
            "partition must be an integer from 0 to 2147483647",
        )),
    }
}

/// The checksum algorithm (default: the proxy's `CHECKSUM_ALGO`) and the
/// expected digest, when given.
pub fn checksum(
    value: Option<&str>,
    alg: Option<&str>,
    default_alg: ChecksumAlg,
) -> Result<ExpectedChecksum, ApiError> {
    let alg = match alg.map(str::trim).filter(|a| !a.is_empty()) {
        None => default_alg,
        Some(name) => ChecksumAlg::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_checksum",
                format!("unsupported checksum algorithm `{name}` (sha256, md5, crc32)"),
            )
        })?,
    };
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    if let Some(v) = value {
        let digits = match alg {
            ChecksumAlg::Sha256 => 64,
            ChecksumAlg::Md5 => 32,
            ChecksumAlg::Crc32 => 8,
        };
        if v.len() != digits || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "invalid_checksum",
                format!("a {} checksum is {digits} hex digits", alg.name()),
            ));
        }
    }
    Ok(ExpectedChecksum {
        alg,
        value: value.map(str::to_ascii_lowercase),
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("invalid_request", format!("header {name} is not text"))
        }),
    }
}

/// Reads the target of `POST /lfs/produce` from its headers. Record
/// headers come from `X-Kafka-Header-<name>`; HTTP lowercases names, so
/// `<name>` arrives in lowercase.
pub fn from_headers(
    headers: &HeaderMap,
    topic_max_length: usize,
) -> Result<ProduceTarget, ApiError> {
    let topic = topic(header(headers, HEADER_TOPIC)?, topic_max_length)?;
    let key = key(header(headers, HEADER_KEY)?)?;
    let partition = partition(header(headers, HEADER_PARTITION)?)?;
    let content_type = header(headers, "content-type")?
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    let record_headers = record_headers(headers);
    Ok(ProduceTarget {
        topic,
        key,
        partition,
        headers: record_headers,
        content_type,
    })
}

/// The record headers a request names: `X-Kafka-Header-<name>: value`
/// (the name as HTTP delivers it, in lowercase).
pub fn record_headers(headers: &HeaderMap) -> Vec<(String, Bytes)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix(RECORD_HEADER_PREFIX)?;
            (!name.is_empty()).then(|| (name.to_owned(), Bytes::copy_from_slice(value.as_bytes())))
        })
        .collect()
}

pub fn checksum_from_headers(
    headers: &HeaderMap,
    default_alg: ChecksumAlg,
) -> Result<ExpectedChecksum, ApiError> {
    checksum(
        header(headers, HEADER_CHECKSUM)?,
        header(headers, HEADER_CHECKSUM_ALG)?,
        default_alg,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::wire::topic::MAX_TOPIC_NAME_LENGTH;

    #[test]
    fn topics() {
        assert_eq!(
            topic(Some("a.b_c-1"), MAX_TOPIC_NAME_LENGTH).unwrap(),
            "a.b_c-1"
        );
        assert_eq!(
            topic(None, MAX_TOPIC_NAME_LENGTH).unwrap_err().code,
            "missing_topic"
        );
        assert_eq!(
            topic(Some(""), MAX_TOPIC_NAME_LENGTH).unwrap_err().code,
            "missing_topic"
        );
        for bad in ["a/b", "..", ".", "a b", "ü"] {
            assert_eq!(
                topic(Some(bad), MAX_TOPIC_NAME_LENGTH).unwrap_err().code,
                "invalid_topic",
                "{bad}"
            );
        }
        assert_eq!(topic(Some("abcd"), 3).unwrap_err().code, "invalid_topic");
    }

    #[test]
    fn keys_partitions_checksums() {
        assert_eq!(
            key(Some("aGk=")).unwrap().unwrap(),
            Bytes::from_static(b"hi")
        );
        assert_eq!(key(Some("not base64!")).unwrap_err().code, "invalid_key");
        assert_eq!(partition(Some("3")).unwrap(), Some(3));
        assert_eq!(partition(Some("-1")).unwrap_err().code, "invalid_partition");
        assert_eq!(partition(Some("x")).unwrap_err().code, "invalid_partition");
        let c = checksum(Some("CBF43926"), Some("crc32"), ChecksumAlg::Sha256).unwrap();
        assert_eq!(c.value.as_deref(), Some("cbf43926"));
        assert_eq!(
            checksum(Some("abc"), None, ChecksumAlg::Sha256)
                .unwrap_err()
                .code,
            "invalid_checksum"
        );
        assert_eq!(
            checksum(None, Some("sha1"), ChecksumAlg::Sha256)
                .unwrap_err()
                .code,
            "invalid_checksum"
        );
    }
}
