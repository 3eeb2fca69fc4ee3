//! Kafka listener settings: where clients connect, how they are secured,
//! and the relay's limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::tls_files::{ServerTlsFiles, TlsNames};
use super::values::{parse_positive, SettingError};

/// What happens to a client's SASL login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSaslMode {
    /// Relayed to the broker.
    Passthrough,
    /// Verified by the proxy against the credentials file.
    Terminate,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka listener")]
pub struct ListenerSettings {
    /// Kafka listen address for clients (the bootstrap address).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_ADDR", default_value = "0.0.0.0:9092")]
    pub addr: SocketAddr,

    /// Host name advertised to clients for every broker [default: the listen
    /// host, or this machine's hostname when listening on 0.0.0.0 / ::]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,

    /// Upstream broker with node id N is served at BASE + N on the advertised
    /// host [default: listen port + 1]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BROKER_PORT_BASE")]
    pub broker_port_base: Option<u16>,

    /// Serve the Kafka listeners (bootstrap and broker ports) over TLS.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TLS_ENABLED", default_value_t = false)]
    pub tls_enabled: bool,

    /// PEM certificate chain for the Kafka listeners.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key for the Kafka listeners.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA bundle that Kafka clients' certificates are verified against (mTLS).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Refuse Kafka clients without a certificate signed by the client CA
    /// [default: true when a client CA is set]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TLS_REQUIRE_CLIENT_CERT")]
    pub tls_require_client_cert: Option<bool>,

    /// What happens to a client's SASL login: `passthrough` relays it to the
    /// broker; `terminate` verifies it against CLIENT_SASL_CREDENTIALS_FILE
    /// and refuses every other request until it succeeds.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE",
        default_value = "passthrough"
    )]
    pub client_sasl_mode: String,

    /// JSON file of users and their salted SCRAM keys (made with
    /// `kafka-lfs-proxy credentials add`); read at start-up.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE")]
    pub client_sasl_credentials_file: Option<PathBuf>,

    /// Bytes of client requests held by the proxy at once, across all
    /// connections (LFS values included until they are stored); requests
    /// wait for room instead of exhausting memory.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_INFLIGHT_BYTES", default_value_t = 1024 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub inflight_bytes: usize,

    /// Requests in flight per client connection before the proxy stops
    /// reading from that client (back-pressure).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_IN_FLIGHT", default_value_t = 256, value_parser = parse_positive::<usize>)]
    pub max_in_flight: usize,

    /// Write every frame exchanged with clients to this directory (debugging
    /// and protocol fixtures; never in production: it holds record data).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CAPTURE_DIR")]
    pub capture_dir: Option<PathBuf>,
}

const TLS_NAMES: TlsNames = TlsNames {
    enabled: "KAFSCALE_LFS_PROXY_TLS_ENABLED",
    cert: "KAFSCALE_LFS_PROXY_TLS_CERT_FILE",
    key: "KAFSCALE_LFS_PROXY_TLS_KEY_FILE",
    ca: "KAFSCALE_LFS_PROXY_TLS_CLIENT_CA_FILE",
};

impl ListenerSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        if let Some(host) = &self.advertised_host {
            if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
                return Err(SettingError {
                    name: "KAFSCALE_LFS_PROXY_ADVERTISED_HOST",
                    reason: format!("`{host}` is not a host name"),
                });
            }
        }
        if self.broker_port_base() == 0 {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_BROKER_PORT_BASE",
                reason: "must be a port above 0".into(),
            });
        }
        if self.addr.port() == 0 {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_ADDR",
                reason: "needs a fixed port: broker ports are derived from it".into(),
            });
        }
        Ok(())
    }

    /// Checks the TLS and client SASL settings.
    pub fn validate_security(&self) -> Result<(), SettingError> {
        self.tls()?;
        match self.client_sasl_mode.trim() {
            "passthrough" => {}
            "terminate" => {
                if self.client_sasl_credentials_file.is_none() {
                    return Err(SettingError {
                        name: "KAFSCALE_LFS_PROXY_CLIENT_SASL_CREDENTIALS_FILE",
                        reason: "required with KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE=terminate"
                            .into(),
                    });
                }
            }
            other => {
                return Err(SettingError {
                    name: "KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE",
                    reason: format!("`{other}` is not passthrough or terminate"),
                })
            }
        }
        Ok(())
    }

    pub fn broker_port_base(&self) -> u16 {
        self.broker_port_base
            .unwrap_or_else(|| self.addr.port().wrapping_add(1))
    }

    pub fn advertised_host(&self) -> String {
        if let Some(host) = &self.advertised_host {
            return host.clone();
        }
        let ip = self.addr.ip();
        if ip.is_unspecified() {
            gethostname::gethostname().to_string_lossy().into_owned()
        } else {
            ip.to_string()
        }
    }

    /// The Kafka listeners' TLS files, when TLS is enabled.
    pub fn tls(&self) -> Result<Option<ServerTlsFiles>, SettingError> {
        ServerTlsFiles::from_settings(
            &TLS_NAMES,
            self.tls_enabled,
            self.tls_cert_file.as_ref(),
            self.tls_key_file.as_ref(),
            self.tls_client_ca_file.as_ref(),
            self.tls_require_client_cert,
        )
    }

    /// The client SASL mode (valid once `validate_security` passed).
    pub fn client_sasl_mode(&self) -> ClientSaslMode {
        if self.client_sasl_mode.trim() == "terminate" {
            ClientSaslMode::Terminate
        } else {
            ClientSaslMode::Passthrough
        }
    }
}
