//! Serving the router over plain TCP or TLS (rustls), one task per
//! connection: a slow TLS handshake or a stalled client holds only its own
//! connection. Request headers must arrive within `HEADER_TIMEOUT`
//! (slowloris); bodies have their own idle timeout in the handlers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::kafka::server::ShutdownSignal;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{setting}: cannot read {path}: {reason}")]
    File {
        setting: &'static str,
        path: String,
        reason: String,
    },
    #[error("{setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let file_error = |reason: String| TlsSetupError::File {
        setting,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the TLS acceptor: server certificate and key, and when a client
/// CA is given, client certificates verified against it (required unless
/// `require_client_cert` is false).
pub fn tls_acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    require_client_cert: bool,
) -> Result<TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = certificates("KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsSetupError::File {
        setting: "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE",
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid {
            setting: "KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED",
            reason: e.to_string(),
        })?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE", ca)? {
                roots.add(cert).map_err(|e| TlsSetupError::Invalid {
                    setting: "KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE",
                    reason: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsSetupError::Invalid {
                setting: "KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE",
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Invalid {
            setting: "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE",
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shutdown; each is served on its own task.
/// At shutdown, idle keep-alive connections close, requests in progress
/// finish (within `drain_timeout`), and then this returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut shutdown: ShutdownSignal,
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

async fn serve_connection<I>(io: I, app: Router, mut shutdown: ShutdownSignal)
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
