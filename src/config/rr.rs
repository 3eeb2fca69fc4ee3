//! Request-reply settings: routes, the header route, reply keeping.

use std::path::PathBuf;

use clap::Args;

use super::values::parse_positive;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Request-reply")]
pub struct RrSettings {
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
}
