//! Process settings shared by every subcommand that runs: logging, the
//! shutdown deadline, the health-check interval.

use std::time::Duration;

use clap::Args;

use super::values::{parse_positive, SettingError};

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Process")]
pub struct ProcessSettings {
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

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,kafka_lfs_proxy=debug`).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format: `text` for people, `json` for log pipelines (one
    /// object per line: timestamp, level, target, message and every field).
    #[arg(long, env = "KAFSCALE_LFS_PROXY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ProcessSettings {
    pub fn validate(&self) -> Result<(), SettingError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(SettingError {
                name: "KAFSCALE_LFS_PROXY_LOG_LEVEL",
                reason: format!("`{}` is not a log filter", self.log_level),
            });
        }
        Ok(())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
}
