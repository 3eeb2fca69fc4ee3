//! Serving the router over plain TCP or TLS (rustls), one task per
//! connection: a slow TLS handshake or a stalled client holds only its own
//! connection. Request headers must arrive within `HEADER_TIMEOUT`
//! (slowloris); bodies have their own idle timeout in the handlers.
//!
//! HTTP/2 (on by default) is served beside HTTP/1.1 on the same port: on
//! plain TCP a connection that opens with the HTTP/2 preface is h2c with
//! prior knowledge (no `Upgrade: h2c` dance, as curl's
//! `--http2-prior-knowledge` and gRPC-style clients speak); over TLS the
//! protocol is the one ALPN agreed (`h2` or `http/1.1`). Many SSE streams
//! then share one connection. HTTP/2 settings: at most
//! `H2_MAX_STREAMS` concurrent streams per connection, and a keep-alive
//! PING every `H2_KEEPALIVE` that closes a connection whose peer stopped
//! answering.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::shutdown::Shutdown;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const H2_MAX_STREAMS: u32 = 256;
const H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// How the HTTP API is served.
pub struct ServeOptions {
    /// TLS, when enabled (its ALPN list decides what TLS clients may speak).
    pub tls: Option<TlsAcceptor>,
    /// HTTP/2 beside HTTP/1.1.
    pub http2: bool,
    /// How long requests in progress may finish at shutdown.
    pub drain_timeout: Duration,
}

/// Accepts connections until shutdown; each is served on its own task.
/// At shutdown, idle keep-alive connections close, requests in progress
/// finish (within `drain_timeout`), and then this returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    mut shutdown: Shutdown,
) {
    let ServeOptions {
        tls,
        http2,
        drain_timeout,
    } = options;
    // Every connection task holds a sender; when all are dropped, the
    // receiver sees the end: connections drained.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let alive = alive.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(socket), app, http2, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            // ALPN decides; without it (or with http/1.1), HTTP/1.1 only.
                            let h2 = http2 && stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_connection(TokioIo::new(stream), app, h2, stop).await
                        }
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "HTTP TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "HTTP TLS handshake timed out"),
                    }
                }
            }
            drop(alive);
        });
    }
    drop(alive);
    if tokio::time::timeout(drain_timeout, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running at the shutdown timeout");
    }
}

async fn serve_connection<I>(io: I, app: Router, http2: bool, mut shutdown: Shutdown)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(H2_KEEPALIVE);
    if !http2 {
        builder = builder.http1_only();
    }
    let connection = builder.serve_connection_with_upgrades(io, service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
}
