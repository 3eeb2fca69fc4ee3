//! `kafka-lfs-proxy gc`: the objects no record references any more, per
//! topic, listed (dry run) or deleted. See `lfs::gc` for the safety
//! argument.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;

use crate::config::GcArgs;
use crate::lfs::gc::{self, Collector, TopicReport};

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
    let scope = lfs.envelope_scope();
    let topics = if args.topics.is_empty() {
        gc::topics_in_store(&lfs.store, &scope.namespace)
            .await
            .context("listing the store's topics")?
    } else {
        args.topics.clone()
    };
    let collector = Collector {
        store: lfs.store.clone(),
        scope,
        cluster: Arc::new(super::own_cluster(&args.upstream, &security)),
        grace: crate::config::grace(args.grace_sec),
        delete: args.delete,
    };
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
                reclaimed += report.counts.unreferenced_bytes;
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

fn summary(report: &TopicReport, verb: &str) -> String {
    let c = &report.counts;
    format!(
        "topic {}: {} records read{}; {} objects: {} referenced, {} within the grace period, {} unreferenced ({verb} {} bytes){}",
        report.topic,
        report.records_read,
        if report.topic_missing { " (topic no longer exists)" } else { "" },
        c.scanned,
        c.referenced,
        c.young,
        c.unreferenced,
        c.unreferenced_bytes,
        if c.delete_failures > 0 { format!(", {} deletes failed", c.delete_failures) } else { String::new() },
    )
}
