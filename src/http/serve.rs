//! Serving the router over plain TCP or TLS (rustls), one task per
//! connection: a slow TLS handshake or a stalled client holds only its own
//! connection. Request headers must arrive within `HEADER_TIMEOUT`
//! (slowloris); bodies have their own idle timeout in the handlers.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::shutdown::Shutdown;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown; each is served on its own task.
/// At shutdown, idle keep-alive connections close, requests in progress
/// finish (within `drain_timeout`), and then this returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: Shutdown,
    drain_timeout: Duration,
) {
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
                None => serve_connection(TokioIo::new(socket), app, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), app, stop).await,
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

async fn serve_connection<I>(io: I, app: Router, mut shutdown: Shutdown)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
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
