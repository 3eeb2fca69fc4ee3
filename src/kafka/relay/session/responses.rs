//! Upstream → client: match each response with what is owed, settle it,
//! run it through the chain, forward in order. Large Fetch responses no
//! stage needs whole are streamed as they arrive (see `fetch_stream`).

use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::acks0::UnansweredProduces;
use super::reauth::InternalReply;
use super::{Owed, Pending, SessionError};
use crate::capture::Direction;
use crate::kafka::relay::chain::{ConnectionInfo, Owing};
use crate::kafka::relay::fetch_stream;
use crate::kafka::relay::proxy::Proxy;
use crate::kafka::relay::upstream::BrokerStream;
use crate::kafka::wire::frame::{self, Frame};
use crate::metrics as m;
use crate::tls::MaybeTlsStream;

type UpstreamReader = BufReader<ReadHalf<BrokerStream>>;

/// Longest a graceful close of the client's side may take.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn forward_responses(
    proxy: &Arc<Proxy>,
    conn: &ConnectionInfo,
    mut upstream: UpstreamReader,
    mut client: WriteHalf<MaybeTlsStream>,
    owed: &mut mpsc::Receiver<Owed>,
    pending: Pending<'_>,
) -> Result<(), SessionError> {
    let Pending {
        unanswered,
        in_flight,
    } = pending;
    let reader = Reader {
        proxy,
        conn,
        unanswered,
    };
    loop {
        let entry = match owed.try_recv() {
            Ok(entry) => entry,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                // Everything owed is written: close the client's side
                // gracefully (TLS close_notify, then FIN) rather than by
                // dropping it, so a client still reading the last answer
                // (a refused SASL login) gets it before the end.
                let _ = tokio::time::timeout(CLOSE_WAIT, client.shutdown()).await;
                return Ok(());
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing owed: wait for a request, but notice at once when
                // upstream closes so an idle client is not left hanging.
                tokio::select! {
                    biased;
                    entry = owed.recv() => match entry {
                        Some(entry) => entry,
                        None => return Ok(()),
                    },
                    ready = upstream.fill_buf() => {
                        match ready {
                            Ok([]) => return Err(SessionError::UpstreamClosed),
                            Ok(_) => match owed.try_recv() {
                                Ok(entry) => entry,
                                Err(_) => {
                                    // Nothing is owed: only an answer to an
                                    // acks=0 Produce may arrive; drop it.
                                    reader.discard_unanswered(&mut upstream).await?;
                                    continue;
                                }
                            },
                            Err(_) => return Err(SessionError::UpstreamClosed),
                        }
                    }
                }
            }
        };
        let (frame, api_key, api_version) = match entry {
            Owed::Internal(InternalReply {
                correlation_id,
                reply,
            }) => {
                let frame = reader.read_response(&mut upstream, correlation_id).await?;
                let _ = reply.send(frame);
                continue;
            }
            Owed::Local {
                frame,
                api_key,
                api_version,
            } => (frame, api_key, api_version),
            Owed::Upstream {
                api_key,
                api_version,
                correlation_id,
                owing,
            } => {
                let streamable = owing.is_empty()
                    && api_key == ApiKey::Fetch as i16
                    && proxy.capture.is_none()
                    && proxy.chain.lets_fetch_stream(api_version);
                let read = if streamable {
                    reader
                        .read_or_stream_fetch(
                            &mut upstream,
                            &mut client,
                            correlation_id,
                            api_version,
                        )
                        .await
                } else {
                    reader
                        .read_response(&mut upstream, correlation_id)
                        .await
                        .map(Some)
                };
                let frame = match read {
                    Ok(Some(frame)) => frame,
                    Ok(None) => {
                        // Streamed to the client already.
                        in_flight.done();
                        continue;
                    }
                    Err(e) => {
                        // Whatever went wrong, nothing of this request is
                        // known to have reached Kafka.
                        owing.into_iter().for_each(|o| o.abandon());
                        return Err(e);
                    }
                };
                let frame = settle(owing, frame, api_version).await?;
                let frame = through_chain(proxy, conn, api_key, api_version, frame).await?;
                (frame, api_key, api_version)
            }
        };
        if let Some(capture) = &proxy.capture {
            capture.record(
                conn.id,
                Direction::Response,
                api_key,
                api_version,
                &frame.body(),
            );
        }
        metrics::counter!(m::BYTES_TOTAL, "direction" => "upstream_to_client")
            .increment(frame.len() as u64);
        client
            .write_all(frame.wire())
            .await
            .map_err(SessionError::ClientWrite)?;
        in_flight.done();
    }
}

/// Lets each `Owing` of the request apply the response, in order; when one
/// fails, the rest are abandoned.
async fn settle(
    owing: Vec<Box<dyn Owing>>,
    mut frame: Frame,
    api_version: i16,
) -> Result<Frame, SessionError> {
    let mut owing = owing.into_iter();
    while let Some(next) = owing.next() {
        frame = match next.settle(frame, api_version).await {
            Ok(frame) => frame,
            Err(error) => {
                owing.for_each(|o| o.abandon());
                return Err(error.into());
            }
        };
    }
    Ok(frame)
}

/// Runs a response through the chain, capturing what upstream sent when a
/// stage decodes it (the capture then shows both sides of every rewrite).
async fn through_chain(
    proxy: &Proxy,
    conn: &ConnectionInfo,
    api_key: i16,
    api_version: i16,
    frame: Frame,
) -> Result<Frame, SessionError> {
    if !proxy.chain.wants_response(api_key, api_version) {
        return Ok(frame);
    }
    if let Some(capture) = &proxy.capture {
        capture.record(
            conn.id,
            Direction::Upstream,
            api_key,
            api_version,
            &frame.body(),
        );
    }
    Ok(proxy
        .chain
        .on_response(conn, api_key, api_version, frame)
        .await?)
}

/// Reads responses for one session.
struct Reader<'a> {
    proxy: &'a Proxy,
    conn: &'a ConnectionInfo,
    unanswered: &'a UnansweredProduces,
}

impl Reader<'_> {
    async fn read_frame_with_id(
        &self,
        upstream: &mut UpstreamReader,
    ) -> Result<(Frame, i32), SessionError> {
        let frame = frame::read_frame(upstream, self.proxy.config.max_frame_size)
            .await
            .map_err(SessionError::UpstreamFrame)?
            .ok_or(SessionError::UpstreamClosed)?;
        with_correlation_id(frame)
    }

    /// Reads the response with `correlation_id`, dropping answers to acks=0
    /// Produce requests that some brokers send anyway.
    async fn read_response(
        &self,
        upstream: &mut UpstreamReader,
        correlation_id: i32,
    ) -> Result<Frame, SessionError> {
        loop {
            let (frame, got) = self.read_frame_with_id(upstream).await?;
            if self.is_wanted(correlation_id, got)? {
                return Ok(frame);
            }
        }
    }

    /// Whether a response with correlation id `got` is the one `expected`;
    /// `false` for an answer to an acks=0 Produce, which is to be dropped.
    fn is_wanted(&self, expected: i32, got: i32) -> Result<bool, SessionError> {
        if got == expected {
            return Ok(true);
        }
        if !self.unanswered.forget(got) {
            return Err(SessionError::CorrelationMismatch { expected, got });
        }
        tracing::debug!(
            connection = self.conn.id,
            correlation_id = got,
            "dropped a broker's answer to acks=0"
        );
        Ok(false)
    }

    /// Reads a frame nobody is owed; drops it if it answers an acks=0 Produce.
    async fn discard_unanswered(&self, upstream: &mut UpstreamReader) -> Result<(), SessionError> {
        let (_, got) = self.read_frame_with_id(upstream).await?;
        if self.unanswered.forget(got) {
            Ok(())
        } else {
            Err(SessionError::Unsolicited)
        }
    }

    /// Reads the Fetch response owed next. A small one is returned whole, to
    /// go through the chain like any other; a large one is streamed to the
    /// client as it arrives (see [`fetch_stream`]) and `None` is returned.
    async fn read_or_stream_fetch(
        &self,
        upstream: &mut UpstreamReader,
        client: &mut WriteHalf<MaybeTlsStream>,
        correlation_id: i32,
        api_version: i16,
    ) -> Result<Option<Frame>, SessionError> {
        loop {
            let size = frame::read_length(upstream, self.proxy.config.max_frame_size)
                .await
                .map_err(SessionError::UpstreamFrame)?
                .ok_or(SessionError::UpstreamClosed)?;
            if size < fetch_stream::STREAM_FROM {
                let body = frame::read_body(upstream, size)
                    .await
                    .map_err(SessionError::UpstreamFrame)?;
                let (frame, got) = with_correlation_id(body)?;
                if self.is_wanted(correlation_id, got)? {
                    return Ok(Some(frame));
                }
                continue;
            }
            let mut id = [0u8; 4];
            upstream
                .read_exact(&mut id)
                .await
                .map_err(|e| SessionError::UpstreamFrame(e.into()))?;
            let got = i32::from_be_bytes(id);
            let rest = size - id.len();
            if !self.is_wanted(correlation_id, got)? {
                tokio::io::copy(
                    &mut (&mut *upstream).take(rest as u64),
                    &mut tokio::io::sink(),
                )
                .await
                .map_err(|e| SessionError::UpstreamFrame(e.into()))?;
                continue;
            }
            let mut head = (size as i32).to_be_bytes().to_vec();
            head.extend_from_slice(&id);
            let relayed =
                fetch_stream::relay_fetch_response(upstream, client, &head, rest, api_version)
                    .await
                    .map_err(|e| match e {
                        fetch_stream::RelayError::Write(io) => SessionError::ClientWrite(io),
                        other => SessionError::Rewrite(format!("streamed Fetch response: {other}")),
                    })?;
            let hid = if relayed.hid_node_endpoints {
                "true"
            } else {
                "false"
            };
            metrics::counter!(m::FETCH_STREAMED_TOTAL, "hid_node_endpoints" => hid).increment(1);
            if relayed.hid_node_endpoints {
                tracing::debug!(
                    connection = self.conn.id,
                    "streamed Fetch response: node_endpoints hidden; the client will ask Metadata"
                );
            }
            metrics::counter!(m::BYTES_TOTAL, "direction" => "upstream_to_client")
                .increment((frame::LENGTH_PREFIX + size) as u64);
            return Ok(None);
        }
    }
}

/// A response frame and the correlation id it starts with.
fn with_correlation_id(frame: Frame) -> Result<(Frame, i32), SessionError> {
    let id = frame::peek_correlation_id(&frame.wire()[frame::LENGTH_PREFIX..])
        .map_err(SessionError::UpstreamFrame)?;
    Ok((frame, id))
}
