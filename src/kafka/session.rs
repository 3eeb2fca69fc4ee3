//! One client connection relayed over one upstream connection.
//!
//! Kafka's rules that shape this file:
//!
//! * A client may pipeline many requests on one connection; the broker
//!   answers them in the order it received them, each response carrying the
//!   request's correlation id. The proxy forwards requests in order and keeps
//!   a queue of what it expects back, so each response is matched with its
//!   request (API key and version are needed to decode it) without a map.
//! * A Produce request with `acks = 0` gets no response at all. It is
//!   forwarded but never queued, or the queue would wait forever.
//! * The queue is bounded (`max_in_flight`): when it is full the proxy stops
//!   reading from the client, which pushes back through TCP.
//! * Some answers come from the proxy itself (an ApiVersions version it does
//!   not know); they take their place in the same queue so order holds.
//!
//! When the upstream connection ends, the client connection is closed at
//! once, even if the client is idle, so the client reconnects rather than
//! hangs. On shutdown the proxy stops reading new requests, lets the
//! responses already owed arrive, then closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::addresses::{carries_addresses, rewrite_response};
use super::client_sasl::{self, SaslDecision};
use super::fetch_relay;
use super::frame::{self, Frame, FrameError};
use super::outstanding::Outstanding;
use super::reauth::{self, InternalReply, RelayExchange};
use super::sasl;
use super::sasl_server::ClientLogin;
use super::server::Proxy;
use super::upstream::{BrokerStream, Connected, UpstreamError};
use super::versions;
use crate::capture::Direction;
use crate::lfs::response::LfsOwed;
use crate::metrics as m;
use crate::tls::MaybeTlsStream;

/// Which upstream broker a client connection is relayed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The bootstrap listener: any reachable bootstrap server.
    Bootstrap,
    /// A broker listener: the upstream node with this id.
    Node(i32),
}

/// A response the client is owed, in request order.
#[derive(Debug)]
enum Owed {
    Upstream {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
        /// Objects stored for a rewritten Produce, settled by its response.
        lfs: Option<Box<LfsOwed>>,
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

impl std::fmt::Debug for InternalReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InternalReply({})", self.correlation_id)
    }
}

impl Owed {
    /// Objects no response will settle any more (the connection is gone).
    fn abandon(self, proxy: &Arc<Proxy>) {
        if let Owed::Upstream {
            lfs: Some(owed), ..
        } = self
        {
            delete_orphans(proxy, owed.all_keys());
        }
    }
}

/// Deletes, in the background, objects no envelope points to.
fn delete_orphans(proxy: &Arc<Proxy>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    if let Some(lfs) = proxy.lfs.clone() {
        tracing::info!(
            count = keys.len(),
            "deleting LFS objects whose envelopes did not reach Kafka"
        );
        tokio::spawn(async move { crate::lfs::rewrite::delete_all(&lfs, &keys).await });
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client frame rejected: {0}")]
    ClientFrame(FrameError),
    #[error("upstream frame rejected: {0}")]
    UpstreamFrame(FrameError),
    #[error("client sent {api} v{version}, which the proxy does not offer")]
    NotOffered { api: String, version: i16 },
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
    #[error("client refused: {0}")]
    ClientAuth(String),
}

/// Per-connection context for logs and captures.
struct Conn {
    id: u64,
    peer: SocketAddr,
    client_id: std::sync::Mutex<Option<String>>,
}

impl Conn {
    fn client_id(&self) -> String {
        self.client_id
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| "-".into())
    }
}

/// Relays one accepted client connection until either side ends.
pub async fn run(proxy: Arc<Proxy>, socket: TcpStream, peer: SocketAddr, target: Target) {
    let conn = Conn {
        id: proxy.next_connection_id(),
        peer,
        client_id: std::sync::Mutex::new(None),
    };
    let _ = socket.set_nodelay(true);
    let client = match &proxy.clients.tls {
        None => MaybeTlsStream::Plain(socket),
        Some(acceptor) => {
            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket)).await {
                Ok(Ok(tls)) => MaybeTlsStream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))),
                Ok(Err(error)) => {
                    m::frame_rejected("tls_handshake");
                    tracing::info!(connection = conn.id, %peer, %error, "client TLS handshake failed");
                    return;
                }
                Err(_) => {
                    m::frame_rejected("tls_handshake");
                    tracing::info!(connection = conn.id, %peer, "client TLS handshake timed out");
                    return;
                }
            }
        }
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
            match &error {
                SessionError::ClientFrame(e) => m::frame_rejected(e.reason()),
                SessionError::NotOffered { .. } => m::frame_rejected("not_offered"),
                SessionError::UpstreamClosed => m::upstream_error("closed"),
                SessionError::UpstreamFrame(_)
                | SessionError::CorrelationMismatch { .. }
                | SessionError::Unsolicited
                | SessionError::Rewrite(_) => m::upstream_error("protocol"),
                SessionError::UpstreamWrite(_) => m::upstream_error("write"),
                SessionError::Upstream(_) => m::upstream_error("connect"),
                SessionError::Reauthentication(_) => m::upstream_error("auth"),
                SessionError::ClientAuth(_) => m::frame_rejected("unauthenticated"),
                SessionError::ClientWrite(_) => {}
            }
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

/// Answers the client's first request, when it is ApiVersions (as every
/// current client's is), with SASL_AUTHENTICATION_FAILED, then closes: the
/// client reports an authentication failure instead of retrying blindly.
async fn refuse_after_login_failure(proxy: &Arc<Proxy>, mut client: MaybeTlsStream) {
    const SASL_AUTHENTICATION_FAILED: i16 = 58;
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        frame::read_frame(&mut client, proxy.settings.max_frame_size),
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
            SASL_AUTHENTICATION_FAILED,
        );
        let _ = client.write_all(answer.wire()).await;
        let _ = client.shutdown().await;
    }
}

async fn relay(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    client: MaybeTlsStream,
    upstream: Connected,
) -> Result<(), SessionError> {
    let (client_read, client_write) = tokio::io::split(client);
    let session_lifetime = upstream.session_lifetime;
    let (upstream_read, upstream_write) = tokio::io::split(upstream.stream);
    let in_flight = Outstanding::default();
    let (owed_tx, mut owed_rx) = mpsc::channel(proxy.settings.max_in_flight);

    // Dropping a write half sends FIN, and a broker closes the whole
    // connection on EOF, so the upstream write half must outlive the
    // responses still owed: the request loop only borrows it.
    let mut upstream_write = upstream_write;
    let unanswered = UnansweredProduces::default();
    let requests = forward_requests(
        proxy,
        conn,
        BufReader::new(client_read),
        &mut upstream_write,
        owed_tx,
        Pending {
            unanswered: &unanswered,
            in_flight: &in_flight,
        },
        session_lifetime,
    );
    let responses = forward_responses(
        proxy,
        conn,
        BufReader::new(upstream_read),
        client_write,
        &mut owed_rx,
        Pending {
            unanswered: &unanswered,
            in_flight: &in_flight,
        },
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
        entry.abandon(proxy);
    }
    result
}

/// Client → upstream: read, classify, queue what is owed, forward.
async fn forward_requests(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    mut client: BufReader<ReadHalf<MaybeTlsStream>>,
    upstream: &mut WriteHalf<BrokerStream>,
    owed: mpsc::Sender<Owed>,
    pending: Pending<'_>,
    session_lifetime: Option<Duration>,
) -> Result<(), SessionError> {
    let Pending {
        unanswered,
        in_flight,
    } = pending;
    let mut shutdown = proxy.shutdown_signal();
    let mut reauth_at = session_lifetime.map(|l| Instant::now() + reauth::due_after(l));
    let mut login = proxy.clients.credentials.clone().map(ClientLogin::new);
    loop {
        // Between requests only: a login must never cut a frame in half.
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep_until(reauth_at.unwrap_or_else(Instant::now)), if reauth_at.is_some() => {
                reauth_at = reauthenticate(proxy, conn, upstream, &owed, in_flight).await?;
                continue;
            }
            ready = client.fill_buf() => {
                if ready.is_err() {
                    return Ok(());
                }
            }
        }
        let frame = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            frame = frame::read_frame_within(&mut client, proxy.settings.max_frame_size, Some(&proxy.budget)) => frame,
        };
        // `_reserved` keeps the frame's bytes counted until it is forwarded.
        let Some((frame, _reserved)) = frame.map_err(SessionError::ClientFrame)? else {
            return Ok(());
        };
        let body = frame.body();
        let header = frame::peek_request_header(&body).map_err(SessionError::ClientFrame)?;
        if let Ok(mut id) = conn.client_id.lock() {
            if id.as_deref() != header.client_id.as_deref() {
                id.clone_from(&header.client_id);
            }
        }
        let api = m::api_label(header.api_key);
        metrics::counter!(m::REQUESTS_TOTAL, "api" => api).increment(1);
        metrics::counter!(m::BYTES_TOTAL, "direction" => "client_to_upstream")
            .increment(frame.len() as u64);
        if let Some(capture) = &proxy.capture {
            capture.record(
                conn.id,
                Direction::Request,
                header.api_key,
                header.api_version,
                &body,
            );
        }

        match client_sasl::decide(
            &header,
            &body,
            login.as_mut(),
            proxy.upstream.sasl.is_some(),
        ) {
            SaslDecision::Forward => {}
            SaslDecision::Answer(reply) => {
                in_flight.add();
                let entry = Owed::Local {
                    frame: reply,
                    api_key: header.api_key,
                    api_version: header.api_version,
                };
                if owed.send(entry).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            SaslDecision::AnswerAndClose(reply) => {
                // Delivered with whatever is still owed, then the session ends.
                in_flight.add();
                let _ = owed
                    .send(Owed::Local {
                        frame: reply,
                        api_key: header.api_key,
                        api_version: header.api_version,
                    })
                    .await;
                return Ok(());
            }
            SaslDecision::Refuse(reason) => return Err(SessionError::ClientAuth(reason)),
        }
        if header.api_key == ApiKey::ApiVersions as i16
            && header.api_version > versions::max_api_versions_version()
        {
            tracing::debug!(
                connection = conn.id,
                version = header.api_version,
                "answering ApiVersions with UNSUPPORTED_VERSION"
            );
            let reply = versions::unsupported_version_response(
                header.correlation_id,
                versions::max_api_versions_version(),
            );
            let entry = Owed::Local {
                frame: reply,
                api_key: header.api_key,
                // Encoded in v0 whatever was asked, as a broker does.
                api_version: 0,
            };
            in_flight.add();
            if owed.send(entry).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if !versions::is_offered(header.api_key, header.api_version) {
            return Err(SessionError::NotOffered {
                api: api.to_owned(),
                version: header.api_version,
            });
        }
        let expects_response =
            frame::expects_response(&header, &body).map_err(SessionError::ClientFrame)?;
        let (to_send, lfs) = offload_lfs(proxy, conn, &header, frame, expects_response).await;
        if expects_response {
            let entry = match (&to_send, lfs) {
                // Every partition failed in the proxy: it answers itself.
                (None, Some(owed)) => {
                    match crate::lfs::response::failed_response(
                        header.correlation_id,
                        header.api_version,
                        &owed.failed,
                    ) {
                        Ok(frame) => Owed::Local {
                            frame,
                            api_key: header.api_key,
                            api_version: header.api_version,
                        },
                        Err(e) => return Err(SessionError::Rewrite(e)),
                    }
                }
                (_, lfs) => Owed::Upstream {
                    api_key: header.api_key,
                    api_version: header.api_version,
                    correlation_id: header.correlation_id,
                    lfs,
                },
            };
            // Queue before writing, so the response can never arrive first.
            in_flight.add();
            if let Err(mpsc::error::SendError(entry)) = owed.send(entry).await {
                entry.abandon(proxy);
                return Ok(());
            }
        } else {
            unanswered.remember(header.correlation_id);
        }
        if let Some(frame) = to_send {
            upstream
                .write_all(frame.wire())
                .await
                .map_err(SessionError::UpstreamWrite)?;
        }
    }
}

/// Upstream → client: match each response with what is owed, rewrite what
/// names brokers, forward in order.
async fn forward_responses(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    mut upstream: BufReader<ReadHalf<BrokerStream>>,
    mut client: WriteHalf<MaybeTlsStream>,
    owed: &mut mpsc::Receiver<Owed>,
    pending: Pending<'_>,
) -> Result<(), SessionError> {
    let Pending {
        unanswered,
        in_flight,
    } = pending;
    loop {
        let entry = match owed.try_recv() {
            Ok(entry) => entry,
            Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
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
                                    discard_unanswered(proxy, &mut upstream, unanswered).await?;
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
                let frame =
                    read_response(proxy, conn, &mut upstream, correlation_id, unanswered).await?;
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
                lfs,
            } => {
                let streamable =
                    lfs.is_none() && api_key == ApiKey::Fetch as i16 && proxy.capture.is_none();
                let read = if streamable {
                    let wanted = Wanted {
                        correlation_id,
                        api_version,
                    };
                    read_or_stream_fetch(
                        proxy,
                        conn,
                        &mut upstream,
                        &mut client,
                        wanted,
                        unanswered,
                    )
                    .await
                } else {
                    read_response(proxy, conn, &mut upstream, correlation_id, unanswered)
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
                        // Whatever went wrong, no envelope of this
                        // request is known to have reached Kafka.
                        if let Some(owed) = lfs {
                            delete_orphans(proxy, owed.all_keys());
                        }
                        return Err(e);
                    }
                };
                let frame = match lfs {
                    Some(owed) => {
                        let (merged, orphans) =
                            crate::lfs::response::merge_response(&frame, api_version, &owed)
                                .map_err(|e| {
                                    delete_orphans(proxy, owed.all_keys());
                                    SessionError::Rewrite(format!("Produce response: {e}"))
                                })?;
                        delete_orphans(proxy, orphans);
                        merged
                    }
                    None => frame,
                };
                (
                    rewrite(proxy, conn, api_key, api_version, frame).await?,
                    api_key,
                    api_version,
                )
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

/// What the two directions of a session share about outstanding requests.
#[derive(Clone, Copy)]
struct Pending<'a> {
    unanswered: &'a UnansweredProduces,
    in_flight: &'a Outstanding,
}

/// Logs in again on the relayed connection once every owed response has
/// been delivered; returns when the next login is due.
async fn reauthenticate(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    upstream: &mut WriteHalf<BrokerStream>,
    owed: &mpsc::Sender<Owed>,
    in_flight: &Outstanding,
) -> Result<Option<Instant>, SessionError> {
    let Some(credentials) = proxy.upstream.sasl.clone() else {
        return Ok(None);
    };
    in_flight.idle().await;
    let mut exchange = RelayExchange {
        upstream,
        owed,
        wrap: Owed::Internal,
        next_id: 0,
    };
    match sasl::authenticate(&mut exchange, &credentials).await {
        Ok(lifetime) => {
            metrics::counter!(m::UPSTREAM_REAUTH_TOTAL, "outcome" => "ok").increment(1);
            tracing::debug!(connection = conn.id, ?lifetime, "re-authenticated upstream");
            Ok(lifetime.map(|l| Instant::now() + reauth::due_after(l)))
        }
        Err(error) => {
            metrics::counter!(m::UPSTREAM_REAUTH_TOTAL, "outcome" => "failed").increment(1);
            Err(SessionError::Reauthentication(error.to_string()))
        }
    }
}

async fn read_upstream_frame(
    proxy: &Arc<Proxy>,
    upstream: &mut BufReader<ReadHalf<BrokerStream>>,
) -> Result<Frame, SessionError> {
    frame::read_frame(upstream, proxy.settings.max_frame_size)
        .await
        .map_err(SessionError::UpstreamFrame)?
        .ok_or(SessionError::UpstreamClosed)
}

/// Reads one upstream frame and its correlation id.
async fn read_upstream_frame_with_id(
    proxy: &Arc<Proxy>,
    upstream: &mut BufReader<ReadHalf<BrokerStream>>,
) -> Result<(Frame, i32), SessionError> {
    with_correlation_id(read_upstream_frame(proxy, upstream).await?)
}

/// A response frame and the correlation id it starts with.
fn with_correlation_id(frame: Frame) -> Result<(Frame, i32), SessionError> {
    let id = frame::peek_correlation_id(&frame.wire()[frame::LENGTH_PREFIX..])
        .map_err(SessionError::UpstreamFrame)?;
    Ok((frame, id))
}

/// Reads the response with `correlation_id`, dropping answers to acks=0
/// Produce requests that some brokers send anyway.
async fn read_response(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    upstream: &mut BufReader<ReadHalf<BrokerStream>>,
    correlation_id: i32,
    unanswered: &UnansweredProduces,
) -> Result<Frame, SessionError> {
    loop {
        let (frame, got) = read_upstream_frame_with_id(proxy, upstream).await?;
        if is_wanted(conn, correlation_id, got, unanswered)? {
            return Ok(frame);
        }
    }
}

/// Whether a response with correlation id `got` is the one `expected`;
/// `false` for an answer to an acks=0 Produce, which is to be dropped.
fn is_wanted(
    conn: &Conn,
    expected: i32,
    got: i32,
    unanswered: &UnansweredProduces,
) -> Result<bool, SessionError> {
    if got == expected {
        return Ok(true);
    }
    if !unanswered.forget(got) {
        return Err(SessionError::CorrelationMismatch { expected, got });
    }
    tracing::debug!(
        connection = conn.id,
        correlation_id = got,
        "dropped a broker's answer to acks=0"
    );
    Ok(false)
}

/// The Fetch response a client is owed.
struct Wanted {
    correlation_id: i32,
    api_version: i16,
}

/// Reads the Fetch response owed next. A small one is returned whole, to be
/// rewritten like any other; a large one is streamed to the client as it
/// arrives (see [`fetch_relay`]) and `None` is returned.
async fn read_or_stream_fetch(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    upstream: &mut BufReader<ReadHalf<BrokerStream>>,
    client: &mut WriteHalf<MaybeTlsStream>,
    wanted: Wanted,
    unanswered: &UnansweredProduces,
) -> Result<Option<Frame>, SessionError> {
    loop {
        let size = frame::read_length(upstream, proxy.settings.max_frame_size)
            .await
            .map_err(SessionError::UpstreamFrame)?
            .ok_or(SessionError::UpstreamClosed)?;
        if size < fetch_relay::STREAM_FROM {
            let body = frame::read_body(upstream, size)
                .await
                .map_err(SessionError::UpstreamFrame)?;
            let (frame, got) = with_correlation_id(body)?;
            if is_wanted(conn, wanted.correlation_id, got, unanswered)? {
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
        if !is_wanted(conn, wanted.correlation_id, got, unanswered)? {
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
            fetch_relay::relay_fetch_response(upstream, client, &head, rest, wanted.api_version)
                .await
                .map_err(|e| match e {
                    fetch_relay::RelayError::Write(io) => SessionError::ClientWrite(io),
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
                connection = conn.id,
                "streamed Fetch response: node_endpoints hidden; the client will ask Metadata"
            );
        }
        metrics::counter!(m::BYTES_TOTAL, "direction" => "upstream_to_client")
            .increment((frame::LENGTH_PREFIX + size) as u64);
        return Ok(None);
    }
}

/// Reads a frame nobody is owed; drops it if it answers an acks=0 Produce.
async fn discard_unanswered(
    proxy: &Arc<Proxy>,
    upstream: &mut BufReader<ReadHalf<BrokerStream>>,
    unanswered: &UnansweredProduces,
) -> Result<(), SessionError> {
    let (_, got) = read_upstream_frame_with_id(proxy, upstream).await?;
    if unanswered.forget(got) {
        Ok(())
    } else {
        Err(SessionError::Unsolicited)
    }
}

/// Correlation ids of recent acks=0 Produce requests.
///
/// Kafka brokers never answer them, but some brokers (librdkafka's mock
/// cluster, for one) do. Such an answer is recognised by its id and dropped:
/// the client expects nothing. Bounded: with a broker that never answers,
/// old ids simply fall out.
#[derive(Default)]
struct UnansweredProduces(std::sync::Mutex<std::collections::VecDeque<i32>>);

impl UnansweredProduces {
    const CAPACITY: usize = 1024;

    fn remember(&self, correlation_id: i32) {
        if let Ok(mut ids) = self.0.lock() {
            if ids.len() == Self::CAPACITY {
                ids.pop_front();
            }
            ids.push_back(correlation_id);
        }
    }

    fn forget(&self, correlation_id: i32) -> bool {
        let Ok(mut ids) = self.0.lock() else {
            return false;
        };
        match ids.iter().position(|&id| id == correlation_id) {
            Some(i) => {
                ids.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Runs the LFS rewrite on a Produce request. Returns what to forward
/// (`None`: nothing, every partition failed) and what its response settles.
async fn offload_lfs(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    header: &frame::RequestHeaderPeek,
    frame: Frame,
    expects_response: bool,
) -> (Option<Frame>, Option<Box<LfsOwed>>) {
    let Some(lfs) = &proxy.lfs else {
        return (Some(frame), None);
    };
    if header.api_key != ApiKey::Produce as i16 {
        return (Some(frame), None);
    }
    match crate::lfs::rewrite::rewrite_produce(lfs, header, &frame).await {
        Ok(None) => (Some(frame), None),
        Ok(Some(rewritten)) => {
            for f in &rewritten.failed {
                tracing::warn!(
                    connection = conn.id,
                    client_id = %conn.client_id(),
                    topic = %f.topic,
                    partition = f.partition,
                    error_code = f.error_code,
                    reason = %f.message,
                    acks0 = !expects_response,
                    "LFS partition refused"
                );
            }
            let owed = LfsOwed {
                uploads: rewritten.uploads,
                failed: rewritten.failed,
            };
            (rewritten.frame, Some(Box::new(owed)))
        }
        Err(error) => {
            // The broker will judge a request the proxy cannot decode.
            tracing::warn!(connection = conn.id, %error, "Produce not rewritten; forwarding as is");
            (Some(frame), None)
        }
    }
}

/// Applies the response rewrites this API needs; most responses pass as is.
async fn rewrite(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    api_key: i16,
    api_version: i16,
    frame: Frame,
) -> Result<Frame, SessionError> {
    let Ok(api) = ApiKey::try_from(api_key) else {
        return Ok(frame);
    };
    let decoded = api == ApiKey::ApiVersions || carries_addresses(api, api_version);
    if let (Some(capture), true) = (&proxy.capture, decoded) {
        capture.record(
            conn.id,
            Direction::Upstream,
            api_key,
            api_version,
            &frame.body(),
        );
    }
    if api == ApiKey::ApiVersions {
        let offer_sasl = proxy.clients.credentials.is_some();
        return versions::rewrite_api_versions_response(&frame.body(), api_version, offer_sasl)
            .map_err(|e| {
                SessionError::Rewrite(format!("{e} (frame starts {})", hex_prefix(&frame)))
            });
    }
    if !carries_addresses(api, api_version) {
        return Ok(frame);
    }
    let prefix = hex_prefix(&frame);
    let rewritten = rewrite_response(&proxy.addresses, api, api_version, frame)
        .map_err(|e| SessionError::Rewrite(format!("{e} (frame starts {prefix})")))?;
    if !rewritten.brokers.is_empty() {
        proxy.addresses.learn(&rewritten.brokers);
        // A client must never be told an address nobody listens on.
        for broker in &rewritten.brokers {
            proxy
                .ensure_broker_listener(broker.node_id)
                .await
                .map_err(|e| SessionError::Rewrite(e.to_string()))?;
        }
    }
    Ok(rewritten.frame)
}

/// The first bytes of a frame in hex, for error messages.
fn hex_prefix(frame: &Frame) -> String {
    frame
        .wire()
        .iter()
        .take(48)
        .map(|b| format!("{b:02x}"))
        .collect()
}
