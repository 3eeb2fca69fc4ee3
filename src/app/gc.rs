//! `kafka-lfs-proxy gc`: the objects no record references any more, per
//! topic, listed (dry run) or deleted. See `lfs::gc` for the safety
//! argument.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{GcArgs, GcSettings, UpstreamSettings};
use crate::kafka::relay::upstream::UpstreamSecurity;
use crate::lfs::gc::{self, Collector, TopicReport};
use crate::lfs::Lfs;
use crate::shutdown::Shutdown;

/// Collects every topic asked for (or found in the store); fails when any
/// topic could not be collected or any delete failed, after trying all.
pub async fn collect_garbage(args: GcArgs) -> anyhow::Result<()> {
    args.storage.validate().context("storage settings")?;
    args.upstream.validate_servers().context("Kafka settings")?;
    args.upstream
        .validate_security()
        .context("Kafka settings")?;
    args.process.validate().context("process settings")?;
    super::init_logging(&args.process);
    let lfs = super::lfs(&args.storage)?;
    let security = Arc::new(super::parts::upstream_security(&args.upstream)?);
    let topics = if args.topics.is_empty() {
        gc::topics_in_store(&lfs.store, &lfs.namespace)
            .await
            .context("listing the store's topics")?
    } else {
        args.topics.clone()
    };
    let collector = collector(
        &lfs,
        &args.upstream,
        &security,
        crate::config::grace(args.grace_sec),
        args.delete,
    );
    let verb = if args.delete {
        "deleted"
    } else {
        "would delete"
    };
    let mut failed_topics = 0;
    let mut failed_deletes = 0;
    let mut reclaimed = 0u64;
    for topic in &topics {
        let report = collector
            .collect(topic, |key, size, outcome| {
                let mut out = std::io::stdout().lock();
                let _ = match outcome {
                    Ok(()) => writeln!(out, "{key} {size}"),
                    Err(error) => writeln!(out, "{key} {size} delete failed: {error}"),
                };
            })
            .await;
        match report {
            Ok(report) => {
                failed_deletes += report.counts.delete_failures;
                reclaimed += freed_bytes(&report, args.delete);
                eprintln!("{}", summary(&report, verb));
            }
            Err(error) => {
                failed_topics += 1;
                eprintln!("topic {topic}: not collected: {error}");
            }
        }
    }
    eprintln!(
        "{} topic(s); {verb} {reclaimed} bytes{}",
        topics.len(),
        if args.delete {
            ""
        } else {
            " (dry run: pass --delete to delete)"
        }
    );
    if failed_topics > 0 || failed_deletes > 0 {
        anyhow::bail!("{failed_topics} topic(s) not collected, {failed_deletes} delete(s) failed");
    }
    Ok(())
}

/// Starts the proxy's background collection when `GC_INTERVAL_SEC` is set.
pub fn spawn_background(
    gc: &GcSettings,
    lfs: &Lfs,
    upstream: &UpstreamSettings,
    security: &Arc<UpstreamSecurity>,
    shutdown: Shutdown,
) {
    let Some(every) = gc.interval() else {
        return;
    };
    tracing::info!(
        every_sec = every.as_secs(),
        grace_sec = gc.gc_grace_sec,
        "background gc on"
    );
    let collector = collector(lfs, upstream, security, gc.grace(), true);
    tokio::spawn(gc::collect_every(collector, every, shutdown));
}

fn collector(
    lfs: &Lfs,
    upstream: &UpstreamSettings,
    security: &Arc<UpstreamSecurity>,
    grace: chrono::Duration,
    delete: bool,
) -> Collector {
    Collector {
        store: lfs.store.clone(),
        namespace: lfs.namespace.clone(),
        cluster: Arc::new(super::own_cluster(upstream, security)),
        grace,
        delete,
    }
}

/// The bytes deleted, or in a dry run the bytes that would be.
fn freed_bytes(report: &TopicReport, deleting: bool) -> u64 {
    if deleting {
        report.counts.deleted_bytes
    } else {
        report.counts.unreferenced_bytes
    }
}

fn summary(report: &TopicReport, verb: &str) -> String {
    let c = &report.counts;
    format!(
        "topic {}: {} records read{}; {} objects: {} referenced, {} within the grace period, {} in upload sessions, {} unreferenced ({verb} {} bytes){}",
        report.topic,
        report.records_read,
        if report.topic_missing { " (topic no longer exists)" } else { "" },
        c.scanned,
        c.referenced,
        c.young,
        c.in_session,
        c.unreferenced,
        freed_bytes(report, verb == "deleted"),
        if c.delete_failures > 0 { format!(", {} deletes failed", c.delete_failures) } else { String::new() },
    )
}
