//! Garbage collection in the proxy (`lfs::gc`): off by default; the
//! `kafka-lfs-proxy gc` command does the same once.

use std::time::Duration;

use clap::Args;

/// The grace period unless set: a day, far above any produce window.
pub const DEFAULT_GRACE_SEC: u64 = 86_400;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Garbage collection")]
pub struct GcSettings {
    /// Seconds between background collections of every topic with objects
    /// in the store (deleting what no record references); 0: off.
    #[arg(long, env = "KAFSCALE_LFS_PROXY_GC_INTERVAL_SEC", default_value_t = 0)]
    pub gc_interval_sec: u64,

    /// Unreferenced objects modified less than this many seconds before a
    /// collection are kept: it must exceed the longest time between an
    /// object's upload and its record's commit (PRODUCE_TIMEOUT_MS, the
    /// clients' delivery timeouts), so an object of a record in flight is
    /// never deleted.
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_GC_GRACE_SEC",
        default_value_t = DEFAULT_GRACE_SEC
    )]
    pub gc_grace_sec: u64,
}

impl GcSettings {
    /// The background interval, when on.
    pub fn interval(&self) -> Option<Duration> {
        (self.gc_interval_sec > 0).then(|| Duration::from_secs(self.gc_interval_sec))
    }

    pub fn grace(&self) -> chrono::Duration {
        grace(self.gc_grace_sec)
    }
}

/// A grace period in seconds as a duration (absurd values capped).
pub fn grace(seconds: u64) -> chrono::Duration {
    chrono::Duration::seconds(
        i64::try_from(seconds)
            .unwrap_or(i64::MAX)
            .min(i64::MAX / 1000),
    )
}
