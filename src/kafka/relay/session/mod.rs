//! One client connection relayed over one upstream connection.
//!
//! Kafka's rules that shape the session:
//!
//! * A client may pipeline many requests on one connection; the broker
//!   answers them in the order it received them, each response carrying the
//!   request's correlation id. The proxy forwards requests in order and keeps
//!   a queue of what it expects back ([`Owed`]), so each response is matched
//!   with its request (API key and version are needed to decode it) without
//!   a map.
//! * A Produce request with `acks = 0` gets no response at all. It is
//!   forwarded but never queued, or the queue would wait forever.
//! * The queue is bounded (`max_in_flight`): when it is full the proxy stops
//!   reading from the client, which pushes back through TCP.
//! * Some answers come from the proxy itself (a stage of the chain answered);
//!   they take their place in the same queue so order holds.
//!
//! The session knows no feature: what happens to a request or response is
//! the [chain](super::chain)'s business. It owns the connection: TLS accept,
//! upstream dial, reading, queueing, order, back-pressure, re-authentication
//! and closing. When the upstream connection ends, the client connection is
//! closed at once, even if the client is idle, so the client reconnects
//! rather than hangs. On shutdown the proxy stops reading new requests, lets
//! the responses already owed arrive, then closes.

mod acks0;
mod reauth;
mod requests;
mod responses;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::chain::{ConnectionInfo, Owing, Refusal, StageError};
use super::listeners::ListenerTarget;
use super::outstanding::Outstanding;
use super::proxy::Proxy;
use super::upstream::{Connected, UpstreamError};
use crate::kafka::wire::codes;
use crate::kafka::wire::frame::{self, Frame, FrameError};
use crate::kafka::wire::versions;
use crate::metrics as m;
use crate::tls::MaybeTlsStream;
use acks0::UnansweredProduces;
use reauth::InternalReply;

/// A response the client is owed, in request order.
enum Owed {
    Upstream {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        /// What the chain left to settle with the response.
        owing: Vec<Box<dyn Owing>>,
    },
    /// An answer from the proxy itself, for this API and version.
    Local {
        frame: Frame,
        api_key: i16,
        api_version: i16,
    },
    /// The answer to the proxy's own request (a re-authentication step),
    /// handed back to it, never to the client.
    Internal(InternalReply),
}

impl Owed {
    /// No response will settle this any more (the connection is gone).
    fn abandon(self) {
        if let Owed::Upstream { owing, .. } = self {
            owing.into_iter().for_each(|o| o.abandon());
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client frame rejected: {0}")]
    ClientFrame(FrameError),
    #[error("upstream frame rejected: {0}")]
    UpstreamFrame(FrameError),
    #[error("{}", .0.message)]
    Refused(Refusal),
    #[error("upstream connection closed")]
    UpstreamClosed,
    #[error("upstream write failed: {0}")]
    UpstreamWrite(std::io::Error),
    #[error("client write failed: {0}")]
    ClientWrite(std::io::Error),
    #[error("upstream sent a response with correlation id {got}, expected {expected}")]
    CorrelationMismatch { expected: i32, got: i32 },
    #[error("upstream sent a response nobody asked for")]
    Unsolicited,
    #[error("cannot rewrite upstream response: {0}")]
    Rewrite(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("re-authentication with the broker failed: {0}")]
    Reauthentication(String),
}

impl From<StageError> for SessionError {
    fn from(error: StageError) -> Self {
        SessionError::Rewrite(error.message)
    }
}

impl SessionError {
    /// Counts the failure under the metric and label it belongs to.
    fn count(&self) {
        match self {
            SessionError::ClientFrame(e) => m::frame_rejected(e.reason()),
            SessionError::Refused(refusal) => m::frame_rejected(refusal.label),
            SessionError::UpstreamClosed => m::upstream_error("closed"),
            SessionError::UpstreamFrame(_)
            | SessionError::CorrelationMismatch { .. }
            | SessionError::Unsolicited
            | SessionError::Rewrite(_) => m::upstream_error("protocol"),
            SessionError::UpstreamWrite(_) => m::upstream_error("write"),
            SessionError::Upstream(_) => m::upstream_error("connect"),
            SessionError::Reauthentication(_) => m::upstream_error("auth"),
            SessionError::ClientWrite(_) => {}
        }
    }
}

/// Relays one accepted client connection until either side ends.
pub async fn run(proxy: Arc<Proxy>, socket: TcpStream, peer: SocketAddr, target: ListenerTarget) {
    let conn = ConnectionInfo::new(proxy.next_connection_id(), peer);
    let _ = socket.set_nodelay(true);
    let Some(client) = accept_client(&proxy, &conn, socket).await else {
        return;
    };
    let upstream = match proxy.dial(target).await {
        Ok(connected) => connected,
        Err(error) if error.is_auth() => {
            m::upstream_error("auth");
            tracing::error!(connection = conn.id, %peer, ?target, %error, "closing client: the proxy cannot log in to the broker");
            refuse_after_login_failure(&proxy, client).await;
            return;
        }
        Err(error) => {
            m::upstream_error("connect");
            tracing::warn!(connection = conn.id, %peer, ?target, %error, "closing client: upstream unreachable");
            return;
        }
    };
    match relay(&proxy, &conn, client, upstream).await {
        Ok(()) => tracing::debug!(connection = conn.id, %peer, "session ended"),
        Err(error) => {
            error.count();
            tracing::warn!(
                connection = conn.id,
                peer = %conn.peer,
                client_id = %conn.client_id(),
                ?target,
                %error,
                "closing client connection"
            );
        }
    }
}

/// The client's stream, after the TLS handshake when TLS is on.
async fn accept_client(
    proxy: &Proxy,
    conn: &ConnectionInfo,
    socket: TcpStream,
) -> Option<MaybeTlsStream> {
    let Some(acceptor) = &proxy.client_tls else {
        return Some(MaybeTlsStream::Plain(socket));
    };
    let peer = conn.peer;
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await {
        Ok(Ok(tls)) => Some(MaybeTlsStream::Tls(Box::new(
            tokio_rustls::TlsStream::Server(tls),
        ))),
        Ok(Err(error)) => {
            m::frame_rejected("tls_handshake");
            tracing::info!(connection = conn.id, %peer, %error, "client TLS handshake failed");
            None
        }
        Err(_) => {
            m::frame_rejected("tls_handshake");
            tracing::info!(connection = conn.id, %peer, "client TLS handshake timed out");
            None
        }
    }
}

/// Answers the client's first request, when it is ApiVersions (as every
/// current client's is), with SASL_AUTHENTICATION_FAILED, then closes: the
/// client reports an authentication failure instead of retrying blindly.
async fn refuse_after_login_failure(proxy: &Proxy, mut client: MaybeTlsStream) {
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        frame::read_frame(&mut client, proxy.config.max_frame_size),
    )
    .await;
    let Ok(Ok(Some(request))) = first else {
        return;
    };
    let Ok(header) = frame::peek_request_header(&request.body()) else {
        return;
    };
    if header.api_key == ApiKey::ApiVersions as i16 {
        let answer = versions::error_response(
            header.correlation_id,
            header.api_version,
            codes::SASL_AUTHENTICATION_FAILED,
        );
        let _ = client.write_all(answer.wire()).await;
        let _ = client.shutdown().await;
    }
}

/// What the two directions of a session share about outstanding requests.
#[derive(Clone, Copy)]
struct Pending<'a> {
    unanswered: &'a UnansweredProduces,
    in_flight: &'a Outstanding,
}

async fn relay(
    proxy: &Arc<Proxy>,
    conn: &ConnectionInfo,
    client: MaybeTlsStream,
    upstream: Connected,
) -> Result<(), SessionError> {
    let (client_read, client_write) = tokio::io::split(client);
    let session_lifetime = upstream.session_lifetime;
    let (upstream_read, upstream_write) = tokio::io::split(upstream.stream);
    let in_flight = Outstanding::default();
    let unanswered = UnansweredProduces::default();
    let pending = Pending {
        unanswered: &unanswered,
        in_flight: &in_flight,
    };
    let (owed_tx, mut owed_rx) = mpsc::channel(proxy.config.max_in_flight);

    // Dropping a write half sends FIN, and a broker closes the whole
    // connection on EOF, so the upstream write half must outlive the
    // responses still owed: the request loop only borrows it.
    let mut upstream_write = upstream_write;
    let requests = requests::forward_requests(
        proxy,
        conn,
        BufReader::new(client_read),
        &mut upstream_write,
        owed_tx,
        pending,
        session_lifetime,
    );
    let responses = responses::forward_responses(
        proxy,
        conn,
        BufReader::new(upstream_read),
        client_write,
        &mut owed_rx,
        pending,
    );
    let result = {
        tokio::pin!(requests, responses);
        tokio::select! {
            result = &mut requests => {
                // The client closed, or shutdown began: finish owed responses
                // (the owed queue closes when `requests` drops its sender). A
                // rejected client frame closes the connection at once.
                match result {
                    Ok(()) => responses.await,
                    Err(e) => Err(e),
                }
            }
            result = &mut responses => result,
        }
    };
    // Whatever is still owed will never be answered.
    owed_rx.close();
    while let Ok(entry) = owed_rx.try_recv() {
        entry.abandon();
    }
    result
}
