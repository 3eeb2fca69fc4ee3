//! A readiness flag kept current by a periodic check (upstream Kafka,
//! object storage); `/readyz` is the conjunction of them.

use std::sync::atomic::{AtomicBool, Ordering};

pub struct Readiness {
    /// What is checked, in log lines: "upstream", "storage".
    what: &'static str,
    /// Gauge set to 1 while ready, 0 otherwise.
    gauge: &'static str,
    ready: AtomicBool,
}

impl Readiness {
    /// Not ready until the first check succeeds.
    pub const fn new(what: &'static str, gauge: &'static str) -> Self {
        Readiness {
            what,
            gauge,
            ready: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Records one check: logs a failure and any change, sets the gauge.
    pub fn record(&self, outcome: Result<(), String>) {
        let ready = match outcome {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "{} health check failed", self.what);
                false
            }
        };
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            tracing::info!(ready, "{} readiness changed", self.what);
        }
        metrics::gauge!(self.gauge).set(if ready { 1.0 } else { 0.0 });
    }
}
