//! The request header, peeked without decoding the request:
//!
//! ```text
//! api_key: i16, api_version: i16, correlation_id: i32,
//! client_id: nullable string (i16 length, -1 = null)      header v1 and v2
//! tagged fields: unsigned varint count, then fields        header v2 only
//! ```
//!
//! Everything the proxy needs to route a request (and to know whether a
//! response will come back at all) is read from that header and, for
//! Produce, from the first field or two of the body.

use bytes::Buf;
use kafka_protocol::messages::ApiKey;

use super::frame::FrameError;

/// The fields of a request header the proxy routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderPeek {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// Offset in the frame body where the request body starts, when the
    /// header version is known (it is for every key `kafka-protocol` knows).
    pub body_offset: Option<usize>,
}

impl RequestHeaderPeek {
    pub fn known_api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }

    /// The client id for log lines; `-` when the client sent none.
    pub fn client(&self) -> &str {
        self.client_id.as_deref().unwrap_or("-")
    }
}

/// Reads the request header from a frame body without decoding the request.
pub fn peek_request_header(body: &[u8]) -> Result<RequestHeaderPeek, FrameError> {
    if body.len() < 8 {
        return Err(FrameError::TruncatedHeader(body.len()));
    }
    let mut buf = body;
    let api_key = buf.get_i16();
    let api_version = buf.get_i16();
    let correlation_id = buf.get_i32();
    let header_version = ApiKey::try_from(api_key)
        .ok()
        .map(|k| k.request_header_version(api_version));
    // Header v0 (only ControlledShutdown v0, which nobody sends to a proxy)
    // has no client id; every other request carries one.
    if header_version == Some(0) {
        return Ok(RequestHeaderPeek {
            api_key,
            api_version,
            correlation_id,
            client_id: None,
            body_offset: Some(8),
        });
    }
    let client_id = read_nullable_string(&mut buf)?;
    let mut offset = body.len() - buf.len();
    let body_offset = match header_version {
        Some(2) => {
            skip_tagged_fields(&mut buf)?;
            offset = body.len() - buf.len();
            Some(offset)
        }
        Some(_) => Some(offset),
        None => None,
    };
    Ok(RequestHeaderPeek {
        api_key,
        api_version,
        correlation_id,
        client_id,
        body_offset,
    })
}

/// Whether the broker will answer this request.
///
/// Only Produce with `acks = 0` goes unanswered. `acks` is the first body
/// field in Produce v0–v2 and follows the nullable `transactional_id` from
/// v3 on (a compact string from v9, where the request became flexible).
pub fn expects_response(header: &RequestHeaderPeek, body: &[u8]) -> Result<bool, FrameError> {
    if header.api_key != ApiKey::Produce as i16 {
        return Ok(true);
    }
    let offset = header
        .body_offset
        .ok_or(FrameError::MalformedHeader("produce header"))?;
    let mut buf = body
        .get(offset..)
        .ok_or(FrameError::MalformedHeader("produce body"))?;
    if header.api_version >= 9 {
        let len = read_unsigned_varint(&mut buf)?;
        skip(&mut buf, (len as usize).saturating_sub(1))?;
    } else if header.api_version >= 3 {
        let len = read_i16(&mut buf)?;
        if len > 0 {
            skip(&mut buf, len as usize)?;
        }
    }
    Ok(read_i16(&mut buf)? != 0)
}

fn read_i16(buf: &mut &[u8]) -> Result<i16, FrameError> {
    if buf.len() < 2 {
        return Err(FrameError::MalformedHeader("truncated field"));
    }
    Ok(buf.get_i16())
}

fn skip(buf: &mut &[u8], n: usize) -> Result<(), FrameError> {
    if buf.len() < n {
        return Err(FrameError::MalformedHeader("field longer than frame"));
    }
    buf.advance(n);
    Ok(())
}

fn read_nullable_string(buf: &mut &[u8]) -> Result<Option<String>, FrameError> {
    let len = read_i16(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if buf.len() < len {
        return Err(FrameError::MalformedHeader("client id longer than frame"));
    }
    let s = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.advance(len);
    Ok(Some(s))
}

fn read_unsigned_varint(buf: &mut &[u8]) -> Result<u32, FrameError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        if buf.is_empty() {
            return Err(FrameError::MalformedHeader("truncated varint"));
        }
        let b = buf.get_u8();
        value |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(FrameError::MalformedHeader("varint longer than 5 bytes"))
}

fn skip_tagged_fields(buf: &mut &[u8]) -> Result<(), FrameError> {
    let count = read_unsigned_varint(buf)?;
    for _ in 0..count {
        read_unsigned_varint(buf)?;
        let size = read_unsigned_varint(buf)?;
        skip(buf, size as usize)?;
    }
    Ok(())
}

/// Reads the correlation id at the start of a response frame body.
pub fn peek_correlation_id(body: &[u8]) -> Result<i32, FrameError> {
    if body.len() < 4 {
        return Err(FrameError::TruncatedHeader(body.len()));
    }
    Ok(i32::from_be_bytes([body[0], body[1], body[2], body[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::{ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn encode_request(header: &RequestHeader, req: &ProduceRequest, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, ApiKey::Produce.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    #[test]
    fn peeks_header_and_acks_for_every_produce_version() {
        for version in 3..=13 {
            for acks in [0i16, 1, -1] {
                for txn in [None, Some("txn-a")] {
                    let header = RequestHeader::default()
                        .with_request_api_key(0)
                        .with_request_api_version(version)
                        .with_correlation_id(77)
                        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
                    let req = ProduceRequest::default()
                        .with_acks(acks)
                        .with_timeout_ms(1000)
                        .with_transactional_id(txn.map(|t| StrBytes::from_string(t.into()).into()));
                    let body = encode_request(&header, &req, version);
                    let peek = peek_request_header(&body).unwrap();
                    assert_eq!(peek.api_key, 0);
                    assert_eq!(peek.api_version, version);
                    assert_eq!(peek.correlation_id, 77);
                    assert_eq!(peek.client(), "rdkafka");
                    assert_eq!(
                        expects_response(&peek, &body).unwrap(),
                        acks != 0,
                        "v{version}"
                    );
                }
            }
        }
    }

    #[test]
    fn produce_v0_to_v2_acks_is_first_field() {
        for version in 0..=2i16 {
            let mut body = BytesMut::new();
            body.put_i16(0);
            body.put_i16(version);
            body.put_i32(5);
            body.put_i16(-1); // null client id
            body.put_i16(0); // acks
            body.put_i32(100);
            let peek = peek_request_header(&body).unwrap();
            assert_eq!(peek.client_id, None);
            assert!(!expects_response(&peek, &body).unwrap());
        }
    }

    #[test]
    fn truncated_headers_never_panic() {
        let header = RequestHeader::default()
            .with_request_api_key(0)
            .with_request_api_version(9)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("c")));
        let req = ProduceRequest::default().with_acks(1);
        let body = encode_request(&header, &req, 9);
        for n in 0..body.len() {
            if let Ok(peek) = peek_request_header(&body[..n]) {
                let _ = expects_response(&peek, &body[..n]);
            }
        }
    }
}
