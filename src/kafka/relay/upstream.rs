//! Dialing upstream brokers: TCP with a connect timeout and `TCP_NODELAY`
//! (Kafka requests are small and latency-bound), then TLS when configured,
//! then a SASL login with the proxy's own credentials when configured. The
//! whole dial shares one timeout, so a broker that stalls a handshake
//! cannot hold a client forever.

use std::io;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::kafka::auth::sasl::{self, SaslCredentials, SaslError};
use crate::tls::MaybeTlsStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {address} timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("connect to {address} failed: {source}")]
    Connect { address: String, source: io::Error },
    #[error("TLS handshake with {address} failed: {source}")]
    Tls { address: String, source: io::Error },
    #[error("SASL login to {address} failed: {source}")]
    Sasl { address: String, source: SaslError },
    #[error("no bootstrap server reachable ({0})")]
    NoBootstrap(String),
    #[error("upstream node {0} is unknown: no Metadata response has named it yet")]
    UnknownNode(i32),
}

impl UpstreamError {
    /// The broker refused the proxy's login (a wrong credential or
    /// mechanism), rather than a network or TLS problem. A connection lost
    /// in the middle of the exchange is not a refusal.
    pub fn is_auth(&self) -> bool {
        matches!(self, UpstreamError::Sasl { source, .. } if !matches!(source, SaslError::Io(_)))
    }
}

/// A connection to a broker, plain or TLS.
pub type BrokerStream = MaybeTlsStream;

/// A fresh upstream connection, logged in when SASL is configured.
pub struct Connected {
    pub stream: BrokerStream,
    /// When the broker limits the SASL session (KIP-368), the connection
    /// must log in again within this time or be closed by the broker.
    pub session_lifetime: Option<Duration>,
}

/// TLS towards brokers.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// Name checked against the broker's certificate instead of the host
    /// the broker advertises.
    pub server_name: Option<String>,
}

/// How every upstream connection is secured: the bootstrap and broker
/// connections of relayed clients, health checks, the HTTP API's producer.
#[derive(Clone, Default)]
pub struct UpstreamSecurity {
    pub tls: Option<UpstreamTls>,
    pub sasl: Option<SaslCredentials>,
    pub max_frame_size: usize,
}

impl std::fmt::Debug for UpstreamSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl UpstreamSecurity {
    /// Connects to one `host:port`, then TLS and SASL as configured.
    pub async fn dial(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<BrokerStream, UpstreamError> {
        Ok(self.dial_session(address, timeout).await?.stream)
    }

    /// `dial`, also returning the SASL session lifetime the broker set.
    pub async fn dial_session(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<Connected, UpstreamError> {
        tokio::time::timeout(timeout, self.connect(address))
            .await
            .map_err(|_| UpstreamError::Timeout {
                address: address.to_owned(),
                timeout,
            })?
    }

    async fn connect(&self, address: &str) -> Result<Connected, UpstreamError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| UpstreamError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(tls) => {
                let host = tls.server_name.clone().unwrap_or_else(|| host_of(address));
                let tls_error = |source| UpstreamError::Tls {
                    address: address.to_owned(),
                    source,
                };
                let name = ServerName::try_from(host.clone()).map_err(|e| {
                    tls_error(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{host}` is not a TLS server name: {e}"),
                    ))
                })?;
                let stream = tls.connector.connect(name, tcp).await.map_err(tls_error)?;
                MaybeTlsStream::Tls(Box::new(tokio_rustls::TlsStream::Client(stream)))
            }
        };
        let mut session_lifetime = None;
        if let Some(credentials) = &self.sasl {
            let mut exchange = sasl::DirectExchange {
                stream: &mut stream,
                next_id: 0,
                max_frame_size: self.max_frame_size,
            };
            session_lifetime = sasl::authenticate(&mut exchange, credentials)
                .await
                .map_err(|source| UpstreamError::Sasl {
                    address: address.to_owned(),
                    source,
                })?;
            if let Some(lifetime) = session_lifetime {
                tracing::debug!(address, ?lifetime, "broker set a SASL session lifetime");
            }
        }
        Ok(Connected {
            stream,
            session_lifetime,
        })
    }

    /// Connects to the first reachable bootstrap server, in order. A login
    /// refused by one server is not tried on the next: it would be refused
    /// there too, and the caller must see why.
    pub async fn dial_bootstrap(
        &self,
        servers: &[String],
        timeout: Duration,
    ) -> Result<(BrokerStream, String), UpstreamError> {
        let (connected, server) = self.dial_bootstrap_session(servers, timeout).await?;
        Ok((connected.stream, server))
    }

    /// `dial_bootstrap`, also returning the SASL session lifetime.
    pub async fn dial_bootstrap_session(
        &self,
        servers: &[String],
        timeout: Duration,
    ) -> Result<(Connected, String), UpstreamError> {
        let mut failures = Vec::new();
        for server in servers {
            match self.dial_session(server, timeout).await {
                Ok(connected) => return Ok((connected, server.clone())),
                Err(e) if e.is_auth() => return Err(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(UpstreamError::NoBootstrap(failures.join("; ")))
    }
}

/// The host part of `host:port` (IPv6 brackets removed).
fn host_of(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_address() {
        assert_eq!(host_of("broker-1.example:9093"), "broker-1.example");
        assert_eq!(host_of("[::1]:9093"), "::1");
        assert_eq!(host_of("10.0.0.1:9092"), "10.0.0.1");
    }
}
