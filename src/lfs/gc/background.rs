//! The proxy's background collection (`GC_INTERVAL_SEC`, off by default):
//! every interval, every topic with objects in the store is collected and
//! what no record references is deleted, with the counters on `/metrics`.
//! Replicas that all run it are safe (see the module's argument), only
//! redundant: turning it on in one replica is enough.

use std::time::Duration;

use super::{topics_in_store, Collector};
use crate::shutdown::Shutdown;

/// Collects every `interval` until shutdown.
pub async fn collect_every(collector: Collector, interval: Duration, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        let topics = match topics_in_store(&collector.store, &collector.namespace).await {
            Ok(t) => t,
            Err(error) => {
                tracing::warn!(%error, "gc: cannot list the store's topics; next time");
                continue;
            }
        };
        for topic in topics {
            if shutdown.is_shutdown() {
                return;
            }
            let outcome = collector
                .collect(&topic, |key, size, outcome| match outcome {
                    Ok(()) => tracing::info!(key, size, "gc: deleted an unreferenced object"),
                    Err(error) => tracing::warn!(key, size, %error, "gc: delete failed"),
                })
                .await;
            match outcome {
                Ok(report) => tracing::info!(
                    topic,
                    records = report.records_read,
                    scanned = report.counts.scanned,
                    referenced = report.counts.referenced,
                    young = report.counts.young,
                    deleted = report.counts.deleted,
                    bytes = report.counts.deleted_bytes,
                    topic_missing = report.topic_missing,
                    "gc: topic collected"
                ),
                Err(error) => tracing::warn!(topic, %error, "gc: topic not collected"),
            }
        }
    }
}
