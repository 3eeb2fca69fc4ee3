//! TLS configuration from PEM files, for every leg: the HTTP API's server
//! side and the connections to brokers. rustls with the aws-lc-rs provider;
//! TLS 1.2 and 1.3. Every error names the setting whose file is at fault.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A TCP connection, plain or TLS (either side of the handshake).
pub enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn certificates(
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

/// The private key in a PEM file.
pub fn private_key(
    setting: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsSetupError::File {
        setting,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn roots_from(setting: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(setting, path)? {
        roots.add(cert).map_err(|e| TlsSetupError::Invalid {
            setting,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Names of the settings one TLS leg is configured by.
pub struct SettingNames {
    pub cert: &'static str,
    pub key: &'static str,
    pub ca: &'static str,
}

/// A server configuration: certificate and key, and when a client CA is
/// given, client certificates verified against it (required or optional).
pub fn server_config(
    names: &SettingNames,
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, TlsSetupError> {
    let certs = certificates(names.cert, cert_file)?;
    let key = private_key(names.key, key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid {
            setting: names.cert,
            reason: e.to_string(),
        })?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from(names.ca, ca)?),
                provider(),
            );
            let verifier = if require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsSetupError::Invalid {
                setting: names.ca,
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Invalid {
            setting: names.key,
            reason: e.to_string(),
        })
}

/// A client configuration: server certificates verified against the CA
/// file, or the system's roots when there is none; a client certificate
/// when both certificate and key are given (mTLS).
pub fn client_config(
    names: &SettingNames,
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let roots = match ca_file {
        Some(ca) => roots_from(names.ca, ca)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsSetupError::Invalid {
                    setting: names.ca,
                    reason: "no CA file set and no system root certificates found".into(),
                });
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid {
            setting: names.ca,
            reason: e.to_string(),
        })?
        .with_root_certificates(roots);
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates(names.cert, cert)?,
                private_key(names.key, key)?,
            )
            .map_err(|e| TlsSetupError::Invalid {
                setting: names.key,
                reason: e.to_string(),
            }),
    }
}
