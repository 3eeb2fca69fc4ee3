//! HTTP API settings: listener, TLS, authentication, CORS, downloads and
//! upload sessions.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::tls_files::{ServerTlsFiles, TlsNames};
use super::values::{parse_positive, Secret, SettingError};

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP API")]
pub struct HttpSettings {
    /// HTTP address for /metrics, /livez, /readyz (and the LFS HTTP API).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// API keys for the LFS HTTP API, comma-separated; when set, every
    /// /lfs/ request needs one as `X-API-Key` or `Authorization: Bearer`.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub http_api_key: Vec<Secret>,

    /// Origins allowed to call the HTTP API from a browser, comma-separated
    /// (`*` for any). Empty: no cross-origin access.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub http_cors_allowed_origins: Vec<String>,

    /// Longest pause while reading a request body, in seconds; a body that
    /// keeps arriving is never cut off, whatever its size.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP_READ_TIMEOUT_SEC", default_value_t = 30, value_parser = parse_positive::<u64>)]
    pub http_read_timeout_sec: u64,

    /// Serve the HTTP API over TLS.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED",
        default_value_t = false
    )]
    pub http_tls_enabled: bool,

    /// PEM certificate chain for the HTTP API.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE")]
    pub http_tls_cert_file: Option<PathBuf>,

    /// PEM private key for the HTTP API.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE")]
    pub http_tls_key_file: Option<PathBuf>,

    /// PEM CA bundle that HTTP client certificates are verified against.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE")]
    pub http_tls_client_ca_file: Option<PathBuf>,

    /// Refuse HTTP clients without a certificate signed by the client CA
    /// [default: true when a client CA is set]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP_TLS_REQUIRE_CLIENT_CERT")]
    pub http_tls_require_client_cert: Option<bool>,

    /// Allow `mode: presign` downloads (the client then fetches from S3
    /// directly, without the proxy's integrity check).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_PRESIGN_ENABLED",
        default_value_t = false
    )]
    pub presign_enabled: bool,

    /// Longest lifetime of a presigned download URL, in seconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_DOWNLOAD_TTL_SEC", default_value_t = 120, value_parser = parse_positive::<u64>)]
    pub download_ttl_sec: u64,

    /// Directory where downloads are held while their checksum is verified
    /// [default: the system temporary directory]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_DOWNLOAD_TEMP_DIR")]
    pub download_temp_dir: Option<PathBuf>,

    /// Lifetime of an upload session, in seconds; an expired session's
    /// multipart upload is aborted.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_UPLOAD_SESSION_TTL_SEC", default_value_t = 3600, value_parser = parse_positive::<u64>)]
    pub upload_session_ttl_sec: u64,

    /// Most upload sessions open at once, across callers; one more is 429
    /// `too_many_upload_sessions` (each holds a multipart upload, with the
    /// local store an open file).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_UPLOAD_SESSIONS_MAX", default_value_t = 1000, value_parser = parse_positive::<usize>)]
    pub upload_sessions_max: usize,

    /// Longest topic name the HTTP API accepts.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TOPIC_MAX_LENGTH", default_value_t = crate::kafka::wire::topic::MAX_TOPIC_NAME_LENGTH, value_parser = parse_positive::<usize>)]
    pub topic_max_length: usize,

    /// PEM public key (RSA, EC or Ed25519) that signs bearer JWTs accepted
    /// by the HTTP API, besides (or instead of) API keys.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_JWT_PUBLIC_KEY_FILE",
        conflicts_with = "http_jwt_secret"
    )]
    pub http_jwt_public_key_file: Option<PathBuf>,

    /// HMAC secret (HS256/384/512) for bearer JWTs, instead of a public key.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_JWT_SECRET",
        hide_env_values = true
    )]
    pub http_jwt_secret: Option<Secret>,

    /// Accepted JWT issuers (`iss`), comma-separated [default: any].
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_JWT_ISSUER",
        value_delimiter = ','
    )]
    pub http_jwt_issuer: Vec<String>,

    /// Accepted JWT audiences (`aud`), comma-separated [default: not checked].
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_JWT_AUDIENCE",
        value_delimiter = ','
    )]
    pub http_jwt_audience: Vec<String>,
}

pub const TLS_NAMES: TlsNames = TlsNames {
    enabled: "KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED",
    cert: "KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE",
    key: "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE",
    ca: "KAFSCALE_LFS_PROXY_HTTP_TLS_CLIENT_CA_FILE",
};

impl HttpSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        self.tls().map(drop)
    }

    /// The HTTP API's TLS files, when TLS is enabled.
    pub fn tls(&self) -> Result<Option<ServerTlsFiles>, SettingError> {
        ServerTlsFiles::from_settings(
            &TLS_NAMES,
            self.http_tls_enabled,
            self.http_tls_cert_file.as_ref(),
            self.http_tls_key_file.as_ref(),
            self.http_tls_client_ca_file.as_ref(),
            self.http_tls_require_client_cert,
        )
    }

    /// The HTTP API keys; empty entries (an empty variable) are ignored.
    pub fn http_api_keys(&self) -> Vec<String> {
        let keys: Vec<String> = self
            .http_api_key
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        super::values::trimmed(&keys)
    }

    /// CORS origins; empty entries are ignored.
    pub fn http_cors_origins(&self) -> Vec<String> {
        super::values::trimmed(&self.http_cors_allowed_origins)
    }
}
