//! Settings: every one is a command-line flag and a `KAFSCALE_LFS_PROXY_*`
//! environment variable (the flag wins). `--help` lists them with defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Kafka's own default for `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 100 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "kafka-lfs-proxy",
    version,
    about = "Kafka wire-protocol proxy that moves large record values to object storage",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode frames written with --capture-dir and report every broker
    /// address a client was shown (exit 1 if a forbidden one appears).
    InspectCapture(InspectCaptureArgs),
    /// Add or replace a user in a client credentials file (salted SCRAM
    /// keys for SCRAM-SHA-256 and SCRAM-SHA-512; no password is stored).
    /// The password is read from standard input.
    Credentials(CredentialsArgs),
    /// Request-reply worker: read request topics in a consumer group, call
    /// the HTTP backend for each request, produce the reply. Kafka
    /// connection settings (KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS,
    /// _BACKEND_TLS_*, _BACKEND_SASL_*) come from the environment.
    Processor(ProcessorArgs),
}

#[derive(Debug, Args)]
pub struct ProcessorArgs {
    /// Processor file (YAML or JSON; kafka-http-proxy's processor_config.yaml format).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Topics in kafka-http-proxy's KAFKA_TOPICS format, instead of --config:
    /// `name:request_topic,response_topic,backend_url[,timeout[,max_retries[,rate_limit]]]`, `;` between topics.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_PROCESSOR_TOPICS",
        conflicts_with = "config"
    )]
    pub topics: Option<String>,
    /// Overrides the file's max_concurrent_requests.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_MAX_CONCURRENT", value_parser = parse_positive::<usize>)]
    pub max_concurrent: Option<usize>,
    /// Overrides the file's dead_letter_topic.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Address of the processor's /livez, /readyz and /metrics.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_PROCESSOR_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub addr: std::net::SocketAddr,
    /// Longest a request Fetch waits at the broker, in milliseconds (see
    /// KAFSCALE_LFS_PROXY_RR_FETCH_WAIT_MS).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_FETCH_WAIT_MS", default_value_t = 25, value_parser = parse_positive::<u64>)]
    pub fetch_wait_ms: u64,
    /// Consumer-group session timeout, in milliseconds (heartbeats every third of it).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PROCESSOR_SESSION_TIMEOUT_MS", default_value_t = 10_000, value_parser = parse_positive::<u64>)]
    pub session_timeout_ms: u64,
}

/// The settings as the environment alone gives them (for subcommands
/// that need the Kafka connection settings).
#[derive(Debug, Parser)]
pub struct EnvSettings {
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The credentials file (created when missing, written with mode 0600).
    #[arg(long)]
    pub file: PathBuf,
    /// User name.
    #[arg(long)]
    pub user: String,
    /// PBKDF2 iterations (4096 to 1000000).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(4096..=1_000_000))]
    pub iterations: u32,
    /// Remove the user instead.
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct InspectCaptureArgs {
    /// Directory written by --capture-dir.
    pub dir: PathBuf,
    /// `host:port` (or `host:*`, or `*:port`) that must not appear in any
    /// response sent to a client. Repeatable.
    #[arg(long = "forbid")]
    pub forbid: Vec<String>,
}

/// The proxy's settings.
#[derive(Debug, Clone, Args)]
pub struct Settings {
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

    /// Upstream bootstrap brokers, `host:port,host:port`.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS",
        value_delimiter = ',',
        required = true
    )]
    pub bootstrap_servers: Vec<String>,

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

    /// HTTP address for /metrics, /livez, /readyz (and the LFS HTTP API).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,

    /// Largest Kafka frame accepted from a client or broker, in bytes; a
    /// larger one closes that connection.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_FRAME_SIZE", default_value_t = DEFAULT_MAX_FRAME_SIZE, value_parser = parse_positive::<usize>)]
    pub max_frame_size: usize,

    /// Bytes of client requests held by the proxy at once, across all
    /// connections (LFS values included until they are stored); requests
    /// wait for room instead of exhausting memory.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_INFLIGHT_BYTES", default_value_t = 1024 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub inflight_bytes: usize,

    /// Requests in flight per client connection before the proxy stops
    /// reading from that client (back-pressure).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_IN_FLIGHT", default_value_t = 256, value_parser = parse_positive::<usize>)]
    pub max_in_flight: usize,

    /// Timeout for connecting to an upstream broker, in milliseconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 10_000, value_parser = parse_positive::<u64>)]
    pub upstream_connect_timeout_ms: u64,

    /// How long a SIGTERM waits for in-flight requests to finish, in milliseconds.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub shutdown_timeout_ms: u64,

    /// How often /readyz re-checks that upstream answers, in milliseconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HEALTH_INTERVAL_MS", default_value_t = 5_000, value_parser = parse_positive::<u64>)]
    pub health_interval_ms: u64,

    /// Write every frame exchanged with clients to this directory (debugging
    /// and protocol fixtures; never in production: it holds record data).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CAPTURE_DIR")]
    pub capture_dir: Option<PathBuf>,

    /// S3 bucket for LFS blobs; when unset, blobs go to STORAGE_DIR.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// S3 region [default: us-east-1]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_REGION")]
    pub s3_region: Option<String>,

    /// S3 endpoint for non-AWS S3 (MinIO, SeaweedFS, ...).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Path-style S3 addressing [default: true when an endpoint is set]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: Option<bool>,

    /// S3 access key (else the AWS default credential chain).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_ACCESS_KEY", hide_env_values = true)]
    pub s3_access_key: Option<String>,

    /// S3 secret key.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<Secret>,

    /// S3 session token (STS).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_S3_SESSION_TOKEN",
        hide_env_values = true
    )]
    pub s3_session_token: Option<Secret>,

    /// S3 endpoint written into presigned download URLs, for clients that
    /// reach S3 by another address than the proxy does.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_S3_PUBLIC_ENDPOINT")]
    pub s3_public_endpoint: Option<String>,

    /// Create the S3 bucket at start-up when it does not exist.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_S3_ENSURE_BUCKET",
        default_value_t = false
    )]
    pub s3_ensure_bucket: bool,

    /// Local directory for LFS blobs when no S3 bucket is set.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_STORAGE_DIR",
        default_value = "./lfs-data"
    )]
    pub storage_dir: PathBuf,

    /// First segment of every object key.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub s3_namespace: String,

    /// Largest LFS value, in bytes; a larger one fails its partition with MESSAGE_TOO_LARGE.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_MAX_BLOB_SIZE", default_value_t = 5 * 1024 * 1024 * 1024, value_parser = parse_positive::<u64>)]
    pub max_blob_size: u64,

    /// Multipart upload part size, in bytes (S3 requires at least 5 MiB).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CHUNK_SIZE", default_value_t = 5 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub chunk_size: usize,

    /// Checksum algorithm for LFS_BLOB values when the record has no
    /// LFS_BLOB_ALG header: sha256, md5 or crc32.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_CHECKSUM_ALGO",
        default_value = "sha256"
    )]
    pub checksum_algo: String,

    /// This proxy's id, written into every envelope [default: the hostname]
    #[arg(long = "proxy-id", env = "KAFSCALE_LFS_PROXY_ID")]
    pub proxy_id: Option<String>,

    /// Topics whose LFS_BLOB records are offloaded, comma-separated
    /// [default: every topic]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TOPICS", value_delimiter = ',')]
    pub lfs_topics: Vec<String>,

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

    /// Longest topic name the HTTP API accepts.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_TOPIC_MAX_LENGTH", default_value_t = crate::kafka::wire::topic::MAX_TOPIC_NAME_LENGTH, value_parser = parse_positive::<usize>)]
    pub topic_max_length: usize,

    /// How long the HTTP API's producer waits for Kafka, in milliseconds
    /// (retries included).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_PRODUCE_TIMEOUT_MS", default_value_t = 30_000, value_parser = parse_positive::<u64>)]
    pub produce_timeout_ms: u64,

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

    /// Request-reply routes: a YAML or JSON file of path patterns and their
    /// request topic, reply topic, timeout and key template (see README).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_ROUTES_FILE")]
    pub rr_routes_file: Option<PathBuf>,

    /// Route requests no other route takes by `X-Kafka-Topic` and
    /// `X-Kafka-Reply-Topic`, as kafka-http-proxy does.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_HEADER_ROUTE", default_value_t = false, action = clap::ArgAction::Set)]
    pub rr_header_route: bool,

    /// Request topic of the header route when `X-Kafka-Topic` is absent.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_RR_DEFAULT_REQUEST_TOPIC",
        default_value = "common-requests"
    )]
    pub rr_default_request_topic: String,

    /// Reply topic of the header route when `X-Kafka-Reply-Topic` is absent.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_RR_DEFAULT_REPLY_TOPIC",
        default_value = "common-responses"
    )]
    pub rr_default_reply_topic: String,

    /// Seconds a request-reply caller waits, where its route names no timeout.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_TIMEOUT_SEC", default_value_t = 30, value_parser = parse_positive::<u64>)]
    pub rr_timeout_sec: u64,

    /// Reply topics read from start-up besides the routes' (comma-separated),
    /// e.g. those named by `X-Kafka-Reply-Topic`.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_RR_WARMUP_TOPICS",
        value_delimiter = ','
    )]
    pub rr_warmup_topics: Vec<String>,

    /// Seconds a finished reply is kept for `Location` polls and idempotent replays.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_REPLY_TTL_SEC", default_value_t = 300, value_parser = parse_positive::<u64>)]
    pub rr_reply_ttl_sec: u64,

    /// Bytes of finished replies kept; the oldest leave first.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_REPLY_CACHE_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = parse_positive::<usize>)]
    pub rr_reply_cache_bytes: usize,

    /// Largest request-reply request body, in bytes (it becomes one record).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_MAX_BODY_BYTES", default_value_t = 1_000_000, value_parser = parse_positive::<usize>)]
    pub rr_max_body_bytes: usize,

    /// Longest `Prefer: wait=N` honoured on a `Location` poll, in seconds.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_MAX_WAIT_SEC", default_value_t = 60, value_parser = parse_positive::<u64>)]
    pub rr_max_wait_sec: u64,

    /// Longest a reply Fetch waits at the broker, in milliseconds. Kafka
    /// answers as soon as a reply arrives, so a high value costs nothing
    /// there; brokers that hold every Fetch for the full wait (tansu) add
    /// about half of it to each call.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_FETCH_WAIT_MS", default_value_t = 25, value_parser = parse_positive::<u64>)]
    pub rr_fetch_wait_ms: u64,

    /// Most reply topics read at once (routes, warm-up and header-named).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_RR_MAX_REPLY_TOPICS", default_value_t = 64, value_parser = parse_positive::<usize>)]
    pub rr_max_reply_topics: usize,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,kafka_lfs_proxy=debug`).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// A setting that must not be shown: `Debug` prints `<redacted>`, so a
/// logged `Settings` never carries a password or key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A setting that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

/// Parses a number that must be above zero (sizes, counts, intervals).
fn parse_positive<T: std::str::FromStr<Err = std::num::ParseIntError> + PartialOrd + Default>(
    s: &str,
) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(v) if v > T::default() => Ok(v),
        Ok(_) => Err("must be greater than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Settings {
    /// Checks what clap cannot, so a bad setting stops start-up by name.
    pub fn validate(&self) -> Result<(), SettingError> {
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
        if let Some(host) = &self.advertised_host {
            if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
                return Err(SettingError {
                    name: "KAFSCALE_LFS_PROXY_ADVERTISED_HOST",
                    reason: format!("`{host}` is not a host name"),
                });
            }
        }
        let base = self.broker_port_base();
        if base == 0 {
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
        if crate::lfs::checksum::ChecksumAlg::parse(&self.checksum_algo).is_none() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_CHECKSUM_ALGO",
                reason: format!("`{}` is not one of sha256, md5, crc32", self.checksum_algo),
            });
        }
        // KafScale's example bucket names were registered by a third party
        // (their PR #139); writing blobs there would hand them the data.
        const BLOCKED_BUCKETS: [&str; 4] = [
            "kafscale-lfs",
            "kafscale-lfs-dev",
            "kafscale-lfs-staging",
            "kafscale-example",
        ];
        if let Some(bucket) = self
            .s3_bucket
            .as_deref()
            .filter(|b| BLOCKED_BUCKETS.contains(&b.trim()))
        {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
                reason: format!("`{bucket}` is a published example name owned by someone else; use your own bucket"),
            });
        }
        if self.s3_bucket.is_some() && self.chunk_size < 5 * 1024 * 1024 {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_CHUNK_SIZE",
                reason: "S3 multipart parts must be at least 5 MiB (5242880)".into(),
            });
        }
        if self
            .s3_bucket
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
                reason: "is empty".into(),
            });
        }
        if self.http_tls_enabled {
            for (name, file) in [
                (
                    "KAFSCALE_LFS_PROXY_HTTP_TLS_CERT_FILE",
                    &self.http_tls_cert_file,
                ),
                (
                    "KAFSCALE_LFS_PROXY_HTTP_TLS_KEY_FILE",
                    &self.http_tls_key_file,
                ),
            ] {
                if file.is_none() {
                    return Err(SettingError {
                        name,
                        reason: "required when KAFSCALE_LFS_PROXY_HTTP_TLS_ENABLED=true".into(),
                    });
                }
            }
        }
        if let Some(mechanism) = self
            .backend_sasl_mechanism
            .as_deref()
            .filter(|m| !m.trim().is_empty())
        {
            if crate::kafka::auth::sasl::Mechanism::parse(mechanism).is_none() {
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
        if self.tls_enabled {
            for (name, file) in [
                ("KAFSCALE_LFS_PROXY_TLS_CERT_FILE", &self.tls_cert_file),
                ("KAFSCALE_LFS_PROXY_TLS_KEY_FILE", &self.tls_key_file),
            ] {
                if file.is_none() {
                    return Err(SettingError {
                        name,
                        reason: "required when KAFSCALE_LFS_PROXY_TLS_ENABLED=true".into(),
                    });
                }
            }
        }
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
        if self.presign_enabled && self.s3_bucket.is_none() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_PRESIGN_ENABLED",
                reason: "presigned URLs need S3 (KAFSCALE_LFS_PROXY_S3_BUCKET); a local directory cannot sign".into(),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_LOG_LEVEL",
                reason: format!("`{}` is not a log filter", self.log_level),
            });
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

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }

    pub fn proxy_id(&self) -> String {
        self.proxy_id
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
    }

    /// Builds the LFS offload from the settings (S3 or the local directory).
    pub fn lfs(&self) -> Result<crate::lfs::rewrite::Lfs, SettingError> {
        use crate::lfs::rewrite::{Lfs, TopicFilter};
        use crate::lfs::store::{BlobStore, S3Settings};
        let store = match &self.s3_bucket {
            Some(bucket) => BlobStore::s3(
                &S3Settings {
                    bucket: bucket.clone(),
                    region: self.s3_region.clone(),
                    endpoint: self.s3_endpoint.clone(),
                    force_path_style: self.s3_force_path_style,
                    access_key: self.s3_access_key.clone(),
                    secret_key: self.s3_secret_key.as_ref().map(|s| s.expose().to_owned()),
                    session_token: self
                        .s3_session_token
                        .as_ref()
                        .map(|s| s.expose().to_owned()),
                    public_endpoint: self.s3_public_endpoint.clone(),
                },
                self.chunk_size,
            )
            .map_err(|e| SettingError {
                name: "KAFSCALE_LFS_PROXY_S3_BUCKET",
                reason: e.to_string(),
            })?,
            None => {
                BlobStore::local(&self.storage_dir, self.chunk_size).map_err(|e| SettingError {
                    name: "KAFSCALE_LFS_PROXY_STORAGE_DIR",
                    reason: e.to_string(),
                })?
            }
        };
        let topics: Vec<String> = self
            .lfs_topics
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(Lfs {
            store,
            namespace: self.s3_namespace.clone(),
            proxy_id: self.proxy_id(),
            max_blob_size: self.max_blob_size,
            default_alg: crate::lfs::checksum::ChecksumAlg::parse(&self.checksum_algo).ok_or(
                SettingError {
                    name: "KAFSCALE_LFS_PROXY_CHECKSUM_ALGO",
                    reason: "unknown algorithm".into(),
                },
            )?,
            topics: TopicFilter::new(Some(topics)),
        })
    }

    /// A `Cluster` for one of the proxy's own Kafka clients (the HTTP
    /// producer, the reply listener, the processor's consumers).
    pub fn own_cluster(
        &self,
        upstream: &std::sync::Arc<crate::kafka::relay::upstream::UpstreamSecurity>,
    ) -> crate::kafka::client::cluster::Cluster {
        crate::kafka::client::cluster::Cluster::new(
            std::sync::Arc::clone(upstream),
            self.bootstrap(),
            self.upstream_connect_timeout(),
            std::time::Duration::from_millis(self.produce_timeout_ms),
            self.max_frame_size,
        )
    }

    /// The bearer-JWT verifier, when a key or secret is configured.
    pub fn http_jwt(&self) -> Result<Option<crate::http::jwt::JwtVerifier>, SettingError> {
        use crate::http::jwt::JwtVerifier;
        let verifier = match (&self.http_jwt_public_key_file, &self.http_jwt_secret) {
            (Some(path), _) => {
                JwtVerifier::from_public_key_file(path).map_err(|e| SettingError {
                    name: "KAFSCALE_LFS_PROXY_HTTP_JWT_PUBLIC_KEY_FILE",
                    reason: e.to_string(),
                })?
            }
            (None, Some(secret)) if !secret.expose().is_empty() => {
                JwtVerifier::from_secret(secret.expose().as_bytes())
            }
            _ => return Ok(None),
        };
        let clean = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Ok(Some(
            verifier
                .require_issuer(&clean(&self.http_jwt_issuer))
                .require_audience(&clean(&self.http_jwt_audience)),
        ))
    }

    /// TLS and SASL for upstream connections, files read now so a missing
    /// one stops start-up naming its setting.
    pub fn upstream_security(
        &self,
    ) -> Result<crate::kafka::relay::upstream::UpstreamSecurity, crate::tls::TlsSetupError> {
        use crate::kafka::auth::sasl::{Mechanism, SaslCredentials};
        use crate::kafka::relay::upstream::{UpstreamSecurity, UpstreamTls};
        let tls = if self.backend_tls_enabled {
            let names = crate::tls::SettingNames {
                cert: "KAFSCALE_LFS_PROXY_BACKEND_TLS_CERT_FILE",
                key: "KAFSCALE_LFS_PROXY_BACKEND_TLS_KEY_FILE",
                ca: "KAFSCALE_LFS_PROXY_BACKEND_TLS_CA_FILE",
            };
            let client_cert = self
                .backend_tls_cert_file
                .as_deref()
                .zip(self.backend_tls_key_file.as_deref());
            let config = crate::tls::client_config(
                &names,
                self.backend_tls_ca_file.as_deref(),
                client_cert,
            )?;
            Some(UpstreamTls {
                connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                server_name: self
                    .backend_tls_server_name
                    .clone()
                    .filter(|n| !n.trim().is_empty()),
            })
        } else {
            None
        };
        let sasl = self
            .backend_sasl_mechanism
            .as_deref()
            .and_then(Mechanism::parse)
            .map(|mechanism| SaslCredentials {
                mechanism,
                username: self.backend_sasl_username.clone().unwrap_or_default(),
                password: self
                    .backend_sasl_password
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
            });
        Ok(UpstreamSecurity {
            tls,
            sasl,
            max_frame_size: self.max_frame_size,
        })
    }

    /// Whether the proxy verifies clients' SASL logins itself.
    pub fn client_sasl_terminates(&self) -> bool {
        self.client_sasl_mode.trim() == "terminate"
    }

    /// The Kafka listeners' TLS acceptor, when TLS is enabled.
    pub fn client_tls(
        &self,
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, crate::tls::TlsSetupError> {
        let (true, Some(cert), Some(key)) =
            (self.tls_enabled, &self.tls_cert_file, &self.tls_key_file)
        else {
            return Ok(None);
        };
        let names = crate::tls::SettingNames {
            cert: "KAFSCALE_LFS_PROXY_TLS_CERT_FILE",
            key: "KAFSCALE_LFS_PROXY_TLS_KEY_FILE",
            ca: "KAFSCALE_LFS_PROXY_TLS_CLIENT_CA_FILE",
        };
        let ca = self.tls_client_ca_file.as_deref();
        let require = self.tls_require_client_cert.unwrap_or(ca.is_some());
        let config = crate::tls::server_config(&names, cert, key, ca, require)?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(
            config,
        ))))
    }

    /// The HTTP API keys; empty entries (an empty variable) are ignored.
    pub fn http_api_keys(&self) -> Vec<String> {
        let keys: Vec<String> = self
            .http_api_key
            .iter()
            .map(|k| k.expose().to_owned())
            .collect();
        trimmed(&keys)
    }

    /// CORS origins; empty entries are ignored.
    pub fn http_cors_origins(&self) -> Vec<String> {
        trimmed(&self.http_cors_allowed_origins)
    }

    /// Bootstrap servers with whitespace trimmed, in the configured order.
    pub fn bootstrap(&self) -> Vec<String> {
        self.bootstrap_servers
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

fn trimmed(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["kafka-lfs-proxy"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.settings.validate().map_err(|e| e.to_string())?;
        Ok(cli.settings)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = parse(&["--bootstrap-servers", "b1:9092, b2:9093"]).unwrap();
        assert_eq!(s.addr.to_string(), "0.0.0.0:9092");
        assert_eq!(s.broker_port_base(), 9093);
        assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.bootstrap(), vec!["b1:9092", "b2:9093"]);
        assert_eq!(s.max_frame_size, DEFAULT_MAX_FRAME_SIZE);
        assert!(!s.advertised_host().is_empty());
        let s = parse(&["--bootstrap-servers", "b:1", "--addr", "127.0.0.2:7000"]).unwrap();
        assert_eq!(s.advertised_host(), "127.0.0.2");
        assert_eq!(s.broker_port_base(), 7001);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = parse(&[
            "--bootstrap-servers",
            "b:1",
            "--backend-sasl-mechanism",
            "PLAIN",
            "--backend-sasl-username",
            "u",
            "--backend-sasl-password",
            "hunter2-pw",
            "--s3-secret-key",
            "s3-secret-value",
            "--http-api-key",
            "api-key-value",
        ])
        .unwrap();
        let shown = format!("{s:?}");
        for secret in ["hunter2-pw", "s3-secret-value", "api-key-value"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(s.http_api_keys(), vec!["api-key-value"]);
        assert_eq!(
            s.upstream_security().unwrap().sasl.unwrap().password,
            "hunter2-pw"
        );
    }

    #[test]
    fn bad_settings_name_themselves() {
        let e = parse(&["--bootstrap-servers", "nohostport"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_BOOTSTRAP_SERVERS"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--max-frame-size", "0"]).unwrap_err();
        assert!(e.contains("--max-frame-size"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--addr", "nope"]).unwrap_err();
        assert!(e.contains("--addr"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--broker-port-base", "0"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_BROKER_PORT_BASE"), "{e}");
        let e = parse(&[]).unwrap_err();
        assert!(e.contains("--bootstrap-servers"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--s3-bucket", "kafscale-lfs"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_S3_BUCKET"), "{e}");
        let e = parse(&["--bootstrap-servers", "b:1", "--checksum-algo", "sha1"]).unwrap_err();
        assert!(e.contains("KAFSCALE_LFS_PROXY_CHECKSUM_ALGO"), "{e}");
    }
}
