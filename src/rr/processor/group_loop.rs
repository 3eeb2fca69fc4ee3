//! The processor's consumer-group loop, generic over what is done with each
//! record: join, assign, fetch within the concurrency budget, commit what is
//! finished, heartbeat, rejoin after a rebalance, leave on shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pacing::OffsetTracker;
use super::Processor;
use crate::backoff::Backoff;
use crate::kafka::client::consumer::{PartitionConsumer, StartAt};
use crate::kafka::client::group::{GroupError, GroupMember, GroupTimeouts, Membership};
use crate::metrics as m;
use crate::shutdown::Shutdown;

impl Processor {
    pub(super) async fn run_group(
        self: Arc<Self>,
        group: String,
        topics: Vec<String>,
        mut shutdown: Shutdown,
    ) {
        let group_cluster = Arc::new(self.kafka.new_cluster());
        let timeouts = GroupTimeouts {
            session: self.kafka.session_timeout,
            rebalance: self.kafka.session_timeout,
        };
        let mut member = GroupMember::new(
            Arc::clone(&group_cluster),
            group.clone(),
            topics.clone(),
            timeouts,
        );
        let mut consumer = PartitionConsumer::new(
            Arc::new(self.kafka.new_cluster()),
            self.kafka.fetch_wait,
            (self.kafka.max_frame_size / 4).max(1 << 20),
        );
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while !shutdown.is_shutdown() {
            let generation = match member.join().await {
                Ok(g) => g,
                Err(error) => {
                    let level_error = !error.is_transient();
                    if level_error {
                        tracing::error!(%error, group, "cannot join the consumer group");
                    } else {
                        tracing::warn!(%error, group, "consumer group join failed; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        _ = shutdown.wait() => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            metrics::counter!(m::PROCESSOR_REBALANCES_TOTAL, "group" => group.clone()).increment(1);
            tracing::info!(
                group,
                generation = generation.generation_id,
                member = generation.member_id,
                assignment = ?generation.assignment,
                "joined consumer group"
            );
            let membership = Membership::new(Arc::clone(&group_cluster), &group, generation);
            if let Err(error) = self.assign(&membership, &mut consumer).await {
                tracing::warn!(%error, group, "cannot position on the assignment; joining again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            self.groups_ready.fetch_add(1, Ordering::AcqRel);
            let stop_heartbeat = Arc::new(AtomicBool::new(false));
            let rejoin = Arc::new(tokio::sync::Notify::new());
            let needs_rejoin = Arc::new(AtomicBool::new(false));
            tokio::spawn(heartbeat(
                membership.clone(),
                self.kafka.session_timeout / 3,
                Arc::clone(&stop_heartbeat),
                Arc::clone(&needs_rejoin),
                Arc::clone(&rejoin),
            ));
            let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
            self.consume(
                &membership,
                &mut consumer,
                &tracker,
                &needs_rejoin,
                &rejoin,
                &mut shutdown,
            )
            .await;
            self.groups_ready.fetch_sub(1, Ordering::AcqRel);
            // Let the requests in hand finish, then record them.
            let drain_until = Instant::now() + self.longest_request();
            while lock(&tracker).in_flight() > 0 && Instant::now() < drain_until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let offsets = lock(&tracker).committable();
            if let Err(error) = membership.commit(&offsets).await {
                tracing::warn!(%error, group, "final commit of the generation failed; its last requests may be handled again");
            }
            stop_heartbeat.store(true, Ordering::Release);
            if shutdown.is_shutdown() {
                member.leave(membership.generation()).await;
                tracing::info!(group, "left consumer group");
            }
        }
    }

    /// Longest a request can take: every attempt at its timeout plus
    /// back-off, over all topics.
    fn longest_request(&self) -> Duration {
        self.config
            .topics
            .iter()
            .map(|t| t.timeout * t.max_retries + Duration::from_secs(2) * t.max_retries)
            .max()
            .unwrap_or(Duration::from_secs(30))
    }

    async fn assign(
        &self,
        membership: &Membership,
        consumer: &mut PartitionConsumer,
    ) -> Result<(), GroupError> {
        consumer.unassign_all();
        let committed = membership.committed().await?;
        let wanted: Vec<(String, i32, Option<i64>)> = membership
            .generation()
            .assignment
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|p| {
                    let at = committed.get(&(topic.clone(), *p)).copied();
                    (topic.clone(), *p, at)
                })
            })
            .collect();
        if !wanted.is_empty() {
            consumer
                .assign_partitions(&wanted, StartAt::Earliest)
                .await?;
        }
        Ok(())
    }

    async fn consume(
        self: &Arc<Self>,
        membership: &Membership,
        consumer: &mut PartitionConsumer,
        tracker: &Arc<Mutex<OffsetTracker>>,
        needs_rejoin: &AtomicBool,
        rejoin: &tokio::sync::Notify,
        shutdown: &mut Shutdown,
    ) {
        let mut last_commit = Instant::now();
        let mut committed: Vec<(String, i32, i64)> = Vec::new();
        loop {
            if needs_rejoin.load(Ordering::Acquire) || shutdown.is_shutdown() {
                return;
            }
            let records = match consumer.poll().await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%error, group = membership.group(), "request fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for record in records {
                let permit = tokio::select! {
                    p = Arc::clone(&self.slots).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                    _ = rejoin.notified() => return,
                    _ = shutdown.wait() => return,
                };
                lock(tracker).start(&record);
                let this = Arc::clone(self);
                let tracker = Arc::clone(tracker);
                tokio::spawn(async move {
                    let (topic, partition, offset) =
                        (record.topic.clone(), record.partition, record.offset);
                    this.handle(record).await;
                    lock(&tracker).finish(&topic, partition, offset);
                    drop(permit);
                });
            }
            if last_commit.elapsed() >= Duration::from_millis(500) {
                last_commit = Instant::now();
                let offsets = lock(tracker).committable();
                if offsets != committed {
                    match membership.commit(&offsets).await {
                        Ok(()) => committed = offsets,
                        Err(error @ GroupError::Rejoin { .. }) => {
                            tracing::info!(%error, "commit refused; joining again");
                            return;
                        }
                        Err(error) => tracing::warn!(%error, "offset commit failed; will retry"),
                    }
                }
            }
        }
    }
}

fn lock(tracker: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

async fn heartbeat(
    membership: Membership,
    every: Duration,
    stop: Arc<AtomicBool>,
    needs_rejoin: Arc<AtomicBool>,
    rejoin: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::time::sleep(every).await;
        if stop.load(Ordering::Acquire) {
            return;
        }
        match membership.heartbeat().await {
            Ok(()) => {}
            Err(error @ (GroupError::Rejoin { .. } | GroupError::Coordinator(_))) => {
                tracing::info!(%error, "group changed; joining again");
                needs_rejoin.store(true, Ordering::Release);
                rejoin.notify_waiters();
                return;
            }
            Err(error) => tracing::warn!(%error, "heartbeat failed"),
        }
    }
}
