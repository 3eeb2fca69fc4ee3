//! Upstream Kafka settings: the brokers, and TLS and SASL towards them.
//! Shared by the proxy and the processor.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{parse_positive, Secret, SettingError, DEFAULT_MAX_FRAME_SIZE};
use crate::kafka::auth::sasl::Mechanism;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Upstream Kafka")]
pub struct UpstreamSettings {
    /// Upstream bootstrap brokers, `host:port,host:port`.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS",
        value_delimiter = ',',
        required = true
    )]
    pub bootstrap_servers: Vec<String>,

    /// Connect to the brokers over TLS.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_BACKEND_TLS_ENABLED",
        default_value_t = false
    )]
    pub backend_tls_enabled: bool,

    /// PEM CA bundle for broker certificates [default: the system roots]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_TLS_CA_FILE")]
    pub backend_tls_ca_file: Option<PathBuf>,

    /// PEM client certificate for brokers that require mTLS.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE")]
    pub backend_tls_cert_file: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE")]
    pub backend_tls_key_file: Option<PathBuf>,

    /// Name to verify broker certificates against, instead of the host each
    /// broker advertises.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_TLS_SERVER_NAME")]
    pub backend_tls_server_name: Option<String>,

    /// SASL mechanism for the proxy's own login to the brokers: PLAIN,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 [default: no SASL]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM")]
    pub backend_sasl_mechanism: Option<String>,

    /// SASL user name.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_BACKEND_SASL_USERNAME")]
    pub backend_sasl_username: Option<String>,

    /// SASL password.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub backend_sasl_password: Option<Secret>,

    /// Timeout for connecting to an upstream broker, in milliseconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 10_000, value_parser = parse_positive::<u64>)]
    pub upstream_connect_timeout_ms: u64,

    /// How long the HTTP API's producer waits for Kafka, in milliseconds
    /// (retries included).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PRODUCE_TIMEOUT_MS", default_value_t = 30_000, value_parser = parse_positive::<u64>)]
    pub produce_timeout_ms: u64,

    /// How long the proxy's own producer (HTTP API, request-reply gateway
    /// and processor, dead letters) waits after a record before sending its
    /// Produce, so more records share it, in milliseconds. 0: no wait;
    /// records that arrive while a Produce is in flight still share the next.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PRODUCE_LINGER_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub produce_linger_ms: u64,

    /// Largest Kafka frame accepted from a client or broker, in bytes; a
    /// larger one closes that connection.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE", default_value_t = DEFAULT_MAX_FRAME_SIZE, value_parser = parse_positive::<usize>)]
    pub max_frame_size: usize,
}

impl UpstreamSettings {
    /// Checks the bootstrap servers.
    pub fn validate_servers(&self) -> Result<(), SettingError> {
        if self.bootstrap_servers.iter().all(|s| s.trim().is_empty()) {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS",
                reason: "at least one upstream broker is required".into(),
            });
        }
        for server in &self.bootstrap_servers {
            let server = server.trim();
            let valid = server
                .rsplit_once(':')
                .map(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
                .unwrap_or(false);
            if !valid {
                return Err(SettingError {
                    name: "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS",
                    reason: format!("`{server}` is not host:port"),
                });
            }
        }
        Ok(())
    }

    /// Checks the SASL and TLS settings.
    pub fn validate_security(&self) -> Result<(), SettingError> {
        if let Some(mechanism) = self
            .backend_sasl_mechanism
            .as_deref()
            .filter(|m| !m.trim().is_empty())
        {
            if Mechanism::parse(mechanism).is_none() {
                return Err(SettingError {
                    name: "KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM",
                    reason: format!("`{mechanism}` is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                });
            }
            let password = self.backend_sasl_password.as_ref().map(Secret::expose);
            for (name, value) in [
                (
                    "KAFSCALE_LFS_PROXY_BACKEND_SASL_USERNAME",
                    self.backend_sasl_username.as_deref(),
                ),
                ("KAFSCALE_LFS_PROXY_BACKEND_SASL_PASSWORD", password),
            ] {
                if value.is_none_or(str::is_empty) {
                    return Err(SettingError {
                        name,
                        reason: "required with KAFSCALE_LFS_PROXY_BACKEND_SASL_MECHANISM".into(),
                    });
                }
            }
        }
        if self.backend_tls_cert_file.is_some() != self.backend_tls_key_file.is_some() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE",
                reason: "a client certificate needs both _BACKEND_TLS_CERT_FILE and _BACKEND_TLS_KEY_FILE".into(),
            });
        }
        Ok(())
    }

    /// Bootstrap servers with whitespace trimmed, in the configured order.
    pub fn bootstrap(&self) -> Vec<String> {
        super::values::trimmed(&self.bootstrap_servers)
    }

    /// The SASL mechanism for the proxy's own login, when one is set.
    pub fn sasl_mechanism(&self) -> Option<Mechanism> {
        self.backend_sasl_mechanism
            .as_deref()
            .and_then(Mechanism::parse)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }

    /// The own producer's extra wait before sending a Produce.
    pub fn produce_linger(&self) -> Duration {
        Duration::from_millis(self.produce_linger_ms)
    }

    /// How long the proxy's own clients wait for Kafka (retries included).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.produce_timeout_ms)
    }
}
