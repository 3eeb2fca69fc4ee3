//! Dialing upstream brokers.
//!
//! Plain TCP with a connect timeout and `TCP_NODELAY` (Kafka requests are
//! small and latency-bound). TLS and SASL come in a later layer.

use std::time::Duration;

use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {address} timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("connect to {address} failed: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no bootstrap server reachable ({0})")]
    NoBootstrap(String),
    #[error("upstream node {0} is unknown: no Metadata response has named it yet")]
    UnknownNode(i32),
}

/// Connects to one `host:port`.
pub async fn dial(address: &str, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: address.to_owned(),
            timeout,
        })?
        .map_err(|source| UpstreamError::Connect {
            address: address.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connects to the first reachable bootstrap server, in order.
pub async fn dial_bootstrap(
    servers: &[String],
    timeout: Duration,
) -> Result<(TcpStream, String), UpstreamError> {
    let mut failures = Vec::new();
    for server in servers {
        match dial(server, timeout).await {
            Ok(stream) => return Ok((stream, server.clone())),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(UpstreamError::NoBootstrap(failures.join("; ")))
}
