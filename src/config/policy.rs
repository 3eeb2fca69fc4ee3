//! Record policy settings: the policy file and how often it is looked at.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Record policies")]
pub struct PolicySettings {
    /// Policy file (YAML, or JSON by its .json extension): per topic or
    /// topic pattern, required headers, header values, key, value size,
    /// JSON value fields, LFS above a size; reject or dead-letter
    /// [default: none, nothing is checked]
    #[arg(long, env = "KAFSCALE_LFS_PROXY_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// How often the policy file is checked for changes, in milliseconds
    /// (0: only on SIGHUP).
    #[arg(
        long,
        env = "KAFSCALE_LFS_PROXY_POLICY_RELOAD_INTERVAL_MS",
        default_value_t = 2000
    )]
    pub policy_reload_interval_ms: u64,
}

impl PolicySettings {
    pub fn reload_interval(&self) -> Option<Duration> {
        (self.policy_reload_interval_ms > 0)
            .then(|| Duration::from_millis(self.policy_reload_interval_ms))
    }
}
