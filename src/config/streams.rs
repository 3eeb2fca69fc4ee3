//! HTTP stream settings: SSE streams of topics (the `streams:` routes),
//! cached reads (the `cached:` routes) and HTTP/2.

use std::time::Duration;

use clap::Args;

use super::values::parse_positive;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP streams")]
pub struct StreamSettings {
    /// Seconds between keep-alives on an idle SSE stream.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_KEEPALIVE_SEC", default_value_t = 15, value_parser = parse_positive::<u64>)]
    pub sse_keepalive_sec: u64,

    /// Longest an SSE stream's Fetch waits at the broker, in milliseconds
    /// (also how soon a stream notices its client left or its token
    /// expired).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_FETCH_WAIT_MS", default_value_t = 500, value_parser = parse_positive::<u64>)]
    pub sse_fetch_wait_ms: u64,

    /// Bytes an SSE stream fetches per partition at most (what a slow
    /// client can make the proxy hold, with 16 queued events).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_PARTITION_MAX_BYTES", default_value_t = 1 << 20, value_parser = parse_positive::<usize>)]
    pub sse_partition_max_bytes: usize,

    /// Seconds a client may take nothing before its stream is closed.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_STALL_TIMEOUT_SEC", default_value_t = 60, value_parser = parse_positive::<u64>)]
    pub sse_stall_timeout_sec: u64,

    /// Seconds before a stream's JWT expires that its `challenge` event is sent.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_CHALLENGE_SEC", default_value_t = 30, value_parser = parse_positive::<u64>)]
    pub sse_challenge_sec: u64,

    /// SSE streams one caller (API key or JWT subject) may have open on one proxy.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_MAX_STREAMS_PER_CALLER", default_value_t = 16, value_parser = parse_positive::<usize>)]
    pub sse_max_streams_per_caller: usize,

    /// SSE streams one proxy serves at once.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_SSE_MAX_STREAMS", default_value_t = 1000, value_parser = parse_positive::<usize>)]
    pub sse_max_streams: usize,

    /// Bytes of keys and latest values one cached-read view (one topic of
    /// the `cached:` routes) may hold; beyond, its reads are 503.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_CACHED_MAX_BYTES", default_value_t = 64 << 20, value_parser = parse_positive::<usize>)]
    pub cached_max_bytes: usize,

    /// Serve HTTP/2 besides HTTP/1.1: h2c with prior knowledge on plain
    /// TCP, ALPN `h2` over TLS.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_HTTP2_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub http2_enabled: bool,
}

impl StreamSettings {
    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive_sec)
    }
    pub fn fetch_wait(&self) -> Duration {
        Duration::from_millis(self.sse_fetch_wait_ms)
    }
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.sse_stall_timeout_sec)
    }
    pub fn challenge_before(&self) -> Duration {
        Duration::from_secs(self.sse_challenge_sec)
    }
}
