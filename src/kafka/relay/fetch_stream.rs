//! Cut-through relay of large Fetch responses.
//!
//! A Fetch response is mostly record bytes that the proxy never changes. If
//! the proxy held each whole response before forwarding it, every fetch
//! would pay one extra store-and-forward delay, and each connection could
//! hold as much memory as the client's `fetch.max.bytes` (50 MiB by
//! default). So a large response is passed on while it arrives, in pieces.
//!
//! Only one part of a Fetch response names a broker. From v16 on (KIP-951),
//! top-level tagged field 0, `node_endpoints`, gives the addresses of new
//! partition leaders. It comes at the very end, after the frame length has
//! already gone to the client, so a streamed response cannot rewrite it to
//! the proxy's addresses. Instead the field's tag is changed to one no
//! version defines ([`HIDDEN_TAG`]) and its bytes are zeroed, so no
//! upstream address leaves the proxy. The field keeps its size, and clients
//! skip tags they do not know (KIP-482). A client then learns of the new
//! leader the way it did before KIP-951: from Metadata, through the proxy.
//! Small responses, where errors and leader changes show up, are still
//! decoded and rewritten whole.
//!
//! Finding that field means walking the v16+ layout (all flexible):
//!
//! ```text
//! header:  correlation_id i32 (read by the caller), tagged fields
//! body:    throttle_time_ms i32, error_code i16, session_id i32,
//!          responses: compact array of
//!            topic_id uuid, partitions: compact array of
//!              partition_index i32, error_code i16, high_watermark i64,
//!              last_stable_offset i64, log_start_offset i64,
//!              aborted_transactions: compact nullable array of
//!                { producer_id i64, first_offset i64, tagged fields },
//!              preferred_read_replica i32,
//!              records: compact nullable bytes,   <- streamed untouched
//!              tagged fields
//!            tagged fields
//!          tagged fields                          <- tag 0: node_endpoints
//! ```
//!
//! Older versions carry no address: their bytes pass through unchanged.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Responses at least this large (length prefix excluded) are streamed.
pub const STREAM_FROM: usize = 64 * 1024;

/// What `node_endpoints` (tag 0) is renamed to in a streamed response. No
/// Fetch version defines it, and it is one byte as a varint, like tag 0.
pub const HIDDEN_TAG: u8 = 0x7f;

/// Record bytes move in pieces of up to this size, read straight from the
/// socket into a buffer that lives only while a response streams.
const PIECE: usize = 256 * 1024;

/// The first Fetch version with `node_endpoints`.
const NODE_ENDPOINTS_FROM: i16 = 16;

/// Held bytes are written once they reach this size.
const FLUSH_AT: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("Fetch response ends inside a field ({0})")]
    Truncated(&'static str),
    #[error("Fetch response field is malformed ({0})")]
    Malformed(&'static str),
    #[error("upstream read failed: {0}")]
    Read(std::io::Error),
    #[error("client write failed: {0}")]
    Write(std::io::Error),
}

/// What a streamed response carried that the client was not shown.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// `node_endpoints` was present and renamed to [`HIDDEN_TAG`].
    pub hid_node_endpoints: bool,
}

/// Relays the rest of one Fetch response frame from `upstream` to
/// `client`. `head` is what was already read (length prefix and
/// correlation id) and `remaining` the bytes of the frame still to read.
pub async fn relay_fetch_response<R, W>(
    upstream: &mut BufReader<R>,
    client: &mut W,
    head: &[u8],
    remaining: usize,
    version: i16,
) -> Result<Relayed, RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut relay = Relay {
        from: upstream,
        to: client,
        remaining,
        held: head.to_vec(),
        piece: Vec::new(),
    };
    let mut relayed = Relayed::default();
    if version >= NODE_ENDPOINTS_FROM {
        relayed.hid_node_endpoints = relay.walk_v16().await?;
    }
    let rest = relay.remaining;
    relay.pass(rest).await?;
    relay.flush().await?;
    Ok(relayed)
}

struct Relay<'a, R, W> {
    from: &'a mut BufReader<R>,
    to: &'a mut W,
    /// Bytes of the frame not read yet.
    remaining: usize,
    /// Bytes read and parsed, not written yet.
    held: Vec<u8>,
    /// The buffer record bytes pass through.
    piece: Vec<u8>,
}

impl<R, W> Relay<'_, R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Walks a v16+ response; returns whether `node_endpoints` was hidden.
    async fn walk_v16(&mut self) -> Result<bool, RelayError> {
        self.tagged_fields(false).await?;
        self.take(4 + 2 + 4, "throttle, error, session").await?;
        let topics = self.compact_len("responses").await?.unwrap_or(0);
        for _ in 0..topics {
            self.take(16, "topic_id").await?;
            let partitions = self.compact_len("partitions").await?.unwrap_or(0);
            for _ in 0..partitions {
                self.take(4 + 2 + 8 + 8 + 8, "partition header").await?;
                let aborted = self.compact_len("aborted_transactions").await?;
                for _ in 0..aborted.unwrap_or(0) {
                    self.take(8 + 8, "aborted transaction").await?;
                    self.tagged_fields(false).await?;
                }
                self.take(4, "preferred_read_replica").await?;
                if let Some(records) = self.compact_len("records").await? {
                    self.pass(records).await?;
                }
                self.tagged_fields(false).await?;
            }
            self.tagged_fields(false).await?;
        }
        self.tagged_fields(true).await
    }

    /// Reads a tagged-field section. With `hide_node_endpoints`, tag 0 is
    /// renamed; returns whether it was.
    async fn tagged_fields(&mut self, hide_node_endpoints: bool) -> Result<bool, RelayError> {
        let mut hid = false;
        let count = self.varint("tagged field count").await?;
        for _ in 0..count {
            // `take` writes held bytes out only before it appends, so what
            // was just read is always at the end of `held`.
            let tag = self.varint("tag").await?;
            let hide = hide_node_endpoints && tag == 0;
            if hide {
                let at = self.held.len() - 1;
                self.held[at] = HIDDEN_TAG;
            }
            let size = self.varint("tagged field size").await? as usize;
            self.take(size, "tagged field").await?;
            if hide {
                // The upstream addresses never leave the proxy, even unread.
                let from = self.held.len() - size;
                self.held[from..].fill(0);
                hid = true;
            }
        }
        Ok(hid)
    }

    /// A compact array or bytes length: `None` for null.
    async fn compact_len(&mut self, field: &'static str) -> Result<Option<usize>, RelayError> {
        let n = self.varint(field).await?;
        Ok(n.checked_sub(1).map(|n| n as usize))
    }

    /// An unsigned varint (at most 5 bytes, as Kafka's are 32-bit).
    async fn varint(&mut self, field: &'static str) -> Result<u32, RelayError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1, field).await?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(RelayError::Malformed(field))
    }

    /// Reads `n` bytes of the frame into the held bytes and returns them.
    async fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], RelayError> {
        if n > self.remaining {
            return Err(RelayError::Truncated(field));
        }
        if self.held.len() + n > FLUSH_AT {
            self.flush().await?;
        }
        let start = self.held.len();
        let mut left = n;
        while left > 0 {
            let buf = self.from.fill_buf().await.map_err(RelayError::Read)?;
            if buf.is_empty() {
                return Err(RelayError::Truncated(field));
            }
            let k = left.min(buf.len());
            self.held.extend_from_slice(&buf[..k]);
            self.from.consume(k);
            left -= k;
        }
        self.remaining -= n;
        Ok(&self.held[start..])
    }

    /// Forwards the next `n` bytes of the frame as they arrive: first what
    /// the reader holds already, then straight from the socket.
    async fn pass(&mut self, n: usize) -> Result<(), RelayError> {
        if n > self.remaining {
            return Err(RelayError::Truncated("records"));
        }
        self.flush().await?;
        let buffered = self.from.buffer();
        let k = n.min(buffered.len());
        self.to
            .write_all(&buffered[..k])
            .await
            .map_err(RelayError::Write)?;
        self.from.consume(k);
        let mut left = n - k;
        if left > 0 && self.piece.is_empty() {
            self.piece = vec![0; left.min(PIECE)];
        }
        while left > 0 {
            let want = left.min(self.piece.len());
            let got = self
                .from
                .get_mut()
                .read(&mut self.piece[..want])
                .await
                .map_err(RelayError::Read)?;
            if got == 0 {
                return Err(RelayError::Truncated("records"));
            }
            self.to
                .write_all(&self.piece[..got])
                .await
                .map_err(RelayError::Write)?;
            left -= got;
        }
        self.remaining -= n;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RelayError> {
        if !self.held.is_empty() {
            self.to
                .write_all(&self.held)
                .await
                .map_err(RelayError::Write)?;
            self.held.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn response(version: i16, node_endpoints: bool) -> Vec<u8> {
        let records = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let partition = |index, records: Option<Bytes>| {
            PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(42)
                .with_records(records)
        };
        let mut body = FetchResponse::default()
            .with_session_id(7)
            .with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic_id(uuid::Uuid::from_u128(0xabc))
                    .with_partitions(vec![
                        partition(0, Some(records.clone())),
                        partition(1, None),
                        partition(2, Some(records.slice(..1000))),
                    ]),
                FetchableTopicResponse::default()
                    .with_topic_id(uuid::Uuid::from_u128(0xdef))
                    .with_partitions(vec![
                        partition(0, Some(records.slice(5..))).with_error_code(0)
                    ]),
            ]);
        if node_endpoints {
            body = body.with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("broker-3.internal"))
                .with_port(9092)]);
        }
        let header = ResponseHeader::default().with_correlation_id(99);
        let mut out = BytesMut::new();
        header.encode(&mut out, 1).unwrap();
        body.encode(&mut out, version).unwrap();
        let mut frame = (out.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&out);
        frame
    }

    /// Relays `frame` (its first 8 bytes already read, as the session
    /// does) with the upstream delivering `piece` bytes at a time.
    async fn relay(frame: &[u8], version: i16, piece: usize) -> (Vec<u8>, Relayed) {
        let mut upstream = BufReader::with_capacity(
            piece,
            Trickle {
                data: &frame[8..],
                piece,
            },
        );
        let mut out = Vec::new();
        let relayed = relay_fetch_response(
            &mut upstream,
            &mut out,
            &frame[..8],
            frame.len() - 8,
            version,
        )
        .await
        .unwrap();
        (out, relayed)
    }

    /// A socket that delivers at most `piece` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.piece.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn decode(frame: &[u8], version: i16) -> FetchResponse {
        let mut buf = Bytes::copy_from_slice(&frame[4..]);
        ResponseHeader::decode(&mut buf, 1).unwrap();
        FetchResponse::decode(&mut buf, version).unwrap()
    }

    #[tokio::test]
    async fn passes_bytes_unchanged_and_hides_node_endpoints_at_any_split() {
        for version in [12, 15, 16, 17] {
            for with_endpoints in [false, true] {
                if with_endpoints && version < 16 {
                    continue;
                }
                let frame = response(version, with_endpoints);
                for piece in [1, 7, 4096, 1 << 20] {
                    let (out, relayed) = relay(&frame, version, piece).await;
                    assert_eq!(relayed.hid_node_endpoints, with_endpoints, "v{version}");
                    if !with_endpoints {
                        assert_eq!(out, frame, "v{version} piece {piece}");
                        continue;
                    }
                    // Same size, only the tail differs (tag and zeroed
                    // field), the records and every other field decode as
                    // before, and the upstream host is nowhere in the bytes.
                    assert_eq!(out.len(), frame.len());
                    let first_difference =
                        out.iter().zip(&frame).position(|(a, b)| a != b).unwrap();
                    assert!(
                        frame.len() - first_difference < 64,
                        "v{version} piece {piece}"
                    );
                    let host = b"broker-3.internal";
                    assert!(frame.windows(host.len()).any(|w| w == host));
                    assert!(!out.windows(host.len()).any(|w| w == host));
                    let (got, sent) = (decode(&out, version), decode(&frame, version));
                    assert_eq!(got.responses, sent.responses);
                    assert!(got.node_endpoints.is_empty());
                    assert!(!sent.node_endpoints.is_empty());
                }
            }
        }
    }

    #[tokio::test]
    async fn node_endpoints_are_hidden_after_many_small_fields_were_written_out() {
        // 2000 partitions without records: the held bytes are written out
        // several times before the tail is reached.
        let partitions = (0..2000)
            .map(|i| PartitionData::default().with_partition_index(i))
            .collect();
        let body = FetchResponse::default()
            .with_responses(vec![
                FetchableTopicResponse::default().with_partitions(partitions)
            ])
            .with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("broker-3.internal"))
                .with_port(9092)]);
        let mut out = BytesMut::new();
        ResponseHeader::default().encode(&mut out, 1).unwrap();
        body.encode(&mut out, 16).unwrap();
        let mut frame = (out.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&out);
        assert!(frame.len() > 3 * FLUSH_AT);
        for piece in [1, 5000] {
            let (relayed, relayed_info) = relay(&frame, 16, piece).await;
            assert!(relayed_info.hid_node_endpoints);
            let got = decode(&relayed, 16);
            assert_eq!(got.responses, body.responses);
            assert!(got.node_endpoints.is_empty());
        }
    }

    #[tokio::test]
    async fn a_truncated_response_is_an_error() {
        let frame = response(16, false);
        let cut = &frame[..frame.len() - 10];
        let mut upstream = BufReader::new(&cut[8..]);
        let mut out = Vec::new();
        let result =
            relay_fetch_response(&mut upstream, &mut out, &frame[..8], frame.len() - 8, 16).await;
        assert!(
            matches!(result, Err(RelayError::Truncated(_))),
            "{result:?}"
        );
    }
}
