//! The request and reply records of request-reply over Kafka, so that a
//! worker in any language can answer. Header names follow Zilla's
//! http-kafka binding where it has one.
//!
//! Request record (on the route's request topic):
//! - key: the route's key template filled from the path (or none);
//! - value: the HTTP request body, byte for byte (empty when there is none);
//! - headers:
//!   - `:method`, `:path` (path with query, as received);
//!   - `zilla:correlation-id`: the id the reply must carry back;
//!   - `zilla:reply-to`: the topic to answer on;
//!   - `rr:deadline`: when the caller stops waiting, epoch milliseconds
//!     as decimal text; work finished later is wasted;
//!   - `rr:identity`: the subject (`sub`) of the caller's verified JWT,
//!     when it showed one (the processor passes it to the backend as
//!     `X-Authenticated-Subject`; a caller's own header of that name is
//!     dropped);
//!   - `rr:request-digest`: SHA-256 (hex) of method, path and body, sent
//!     with `Idempotency-Key` requests; echo it in the reply so that every
//!     proxy replica can tell a replay from a conflicting reuse;
//!   - `traceparent` / `tracestate`: W3C trace context, the gateway's span
//!     of the caller's trace (see `trace_context`);
//!   - every HTTP request header by its lower-case name, except hop-by-hop
//!     headers, `content-length`, `host`, the routing headers
//!     (`x-kafka-topic`, `x-kafka-reply-topic`) and the credential the
//!     proxy checked. A repeated header is joined with ", " (RFC 9110
//!     5.3), because a record holds each header name once here.
//!
//! Reply record (on the reply topic):
//! - headers: `zilla:correlation-id` (required), `:status` (decimal text,
//!   200 when absent), any HTTP response headers by name; names with a
//!   `:` and hop-by-hop names are not passed to the caller;
//! - value: the response body.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::kafka::client::records::ConsumedRecord;

pub const METHOD: &str = ":method";
pub const PATH: &str = ":path";
pub const STATUS: &str = ":status";
pub const CORRELATION_ID: &str = "zilla:correlation-id";
pub const REPLY_TO: &str = "zilla:reply-to";
pub const DEADLINE: &str = "rr:deadline";
pub const REQUEST_DIGEST: &str = "rr:request-digest";
pub const IDENTITY: &str = "rr:identity";
/// The HTTP header that carries `rr:identity` to the backend; a caller's
/// own is dropped, so it cannot be forged.
pub const SUBJECT_HEADER: &str = "x-authenticated-subject";
/// On error replies and dead letters: why the processor gave up.
pub const ERROR: &str = "rr:error";
/// On dead letters: where the request was read.
pub const SOURCE_TOPIC: &str = "rr:source-topic";
pub const SOURCE_PARTITION: &str = "rr:source-partition";
pub const SOURCE_OFFSET: &str = "rr:source-offset";

/// Connection-level headers (RFC 9110 7.6.1) and others that describe one
/// hop's message framing, never passed on.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Now as epoch milliseconds, the unit of `rr:deadline`.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Whether an HTTP header may travel in a record (either direction).
pub fn is_end_to_end(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name) && !name.contains(':')
}

/// HTTP headers as record headers: lower-case names, repeats joined.
pub fn http_headers_to_record(headers: &http::HeaderMap, skip: &[&str]) -> Vec<(String, Bytes)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        if !is_end_to_end(name) || skip.contains(&name) {
            continue;
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, joined)) => {
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(value.as_bytes());
            }
            None => out.push((name.to_owned(), value.as_bytes().to_vec())),
        }
    }
    out.into_iter().map(|(n, v)| (n, Bytes::from(v))).collect()
}

/// The digest that tells an idempotent replay from a conflicting reuse.
pub fn request_digest(method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path_and_query.as_bytes());
    h.update([0]);
    h.update(body);
    hex::encode(h.finalize())
}

/// A reply as the caller will get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    /// The request digest the worker echoed, if any.
    pub request_digest: Option<String>,
}

impl Reply {
    /// Bytes this reply holds in memory (for the cache's bound).
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + 64
    }
}

/// Why a record on a reply topic is not a usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("no {CORRELATION_ID} header")]
    NoCorrelation,
    #[error("{STATUS} header {0:?} is not an HTTP status (100-599)")]
    BadStatus(String),
}

/// The correlation id and reply carried by a record on a reply topic.
pub fn parse_reply(record: &ConsumedRecord) -> Result<(String, Reply), ReplyError> {
    let id = record
        .header_str(CORRELATION_ID)
        .filter(|s| !s.is_empty())
        .ok_or(ReplyError::NoCorrelation)?
        .to_owned();
    let status = match record.header(STATUS) {
        None => 200,
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|s| (100..=599).contains(s))
            .ok_or_else(|| ReplyError::BadStatus(String::from_utf8_lossy(raw).into_owned()))?,
    };
    let headers = record
        .headers
        .iter()
        .filter(|(n, _)| is_end_to_end(&n.to_ascii_lowercase()))
        .filter_map(|(n, v)| Some((n.to_ascii_lowercase(), v.clone()?)))
        .collect();
    Ok((
        id,
        Reply {
            status,
            headers,
            body: record.value.clone().unwrap_or_default(),
            request_digest: record.header_str(REQUEST_DIGEST).map(str::to_owned),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(headers: &[(&str, &str)], value: &[u8]) -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::from("replies"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), Some(Bytes::copy_from_slice(v.as_bytes()))))
                .collect(),
        }
    }

    #[test]
    fn reply_carries_status_headers_and_body() {
        let (id, reply) = parse_reply(&record(
            &[
                (CORRELATION_ID, "c1"),
                (STATUS, "201"),
                ("Content-Type", "image/png"),
                ("transfer-encoding", "chunked"),
                (REQUEST_DIGEST, "ab"),
            ],
            &[0, 255, 1],
        ))
        .unwrap();
        assert_eq!(id, "c1");
        assert_eq!(reply.status, 201);
        assert_eq!(
            reply.headers,
            vec![("content-type".to_owned(), Bytes::from_static(b"image/png"))]
        );
        assert_eq!(&reply.body[..], &[0, 255, 1]);
        assert_eq!(reply.request_digest.as_deref(), Some("ab"));
    }

    #[test]
    fn reply_without_status_is_200_and_bad_status_is_refused() {
        let (_, reply) = parse_reply(&record(&[(CORRELATION_ID, "c")], b"")).unwrap();
        assert_eq!(reply.status, 200);
        for bad in ["abc", "99", "600", ""] {
            assert_eq!(
                parse_reply(&record(&[(CORRELATION_ID, "c"), (STATUS, bad)], b"")),
                Err(ReplyError::BadStatus(bad.to_owned()))
            );
        }
        assert_eq!(
            parse_reply(&record(&[(STATUS, "200")], b"")),
            Err(ReplyError::NoCorrelation)
        );
    }

    #[test]
    fn request_headers_drop_hop_by_hop_and_join_repeats() {
        let mut h = http::HeaderMap::new();
        h.append("accept", "a/b".parse().unwrap());
        h.append("accept", "c/d".parse().unwrap());
        h.append("connection", "close".parse().unwrap());
        h.append("host", "x".parse().unwrap());
        h.append("x-api-key", "secret".parse().unwrap());
        h.append("x-trace", "t".parse().unwrap());
        let out = http_headers_to_record(&h, &["x-api-key"]);
        assert_eq!(
            out,
            vec![
                ("accept".to_owned(), Bytes::from_static(b"a/b, c/d")),
                ("x-trace".to_owned(), Bytes::from_static(b"t")),
            ]
        );
    }

    #[test]
    fn digest_separates_fields() {
        assert_ne!(
            request_digest("GET", "/a", b"b"),
            request_digest("GET", "/ab", b"")
        );
        assert_eq!(request_digest("PUT", "/x", b"1").len(), 64);
    }
}
