//! The reply listener: every partition of every reply topic, assigned (not
//! subscribed: no consumer group, so every replica reads every reply), and
//! read into the [`ReplyBook`].
//!
//! Ordering rule that makes replies impossible to miss: a topic is
//! positioned at its log end *before* any request naming it as reply
//! topic is produced, so every reply to that request lies after the
//! position. `/readyz` waits for the configured reply topics; a topic
//! first named by a request (header route) is positioned before that
//! request is produced. A topic that does not exist yet is watched and
//! read from its start when it appears (everything in it is new).
//!
//! Partitions added to a topic later are found by a periodic metadata
//! refresh and read from their start.

use crate::backoff::Backoff;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::replies::ReplyBook;
use super::wire;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::consumer::{PartitionConsumer, StartAt};
use crate::metrics as m;

const REFRESH_EVERY: Duration = Duration::from_secs(30);
const MISSING_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Delay before positioning is retried after the first failure; it doubles
/// with each further failure, up to `POSITION_RETRY_MAX`.
const POSITION_RETRY_FIRST: Duration = Duration::from_millis(100);
const POSITION_RETRY_MAX: Duration = Duration::from_secs(5);

/// When a failed step may run again: a delay that grows with each failure
/// in a row and is forgotten on success, so an outage costs a few dials
/// rather than one per fetch wait.
#[derive(Debug)]
struct RetryDelay {
    /// The nominal delay of the latest failure; `None` after a success.
    delay: Option<Duration>,
    not_before: Option<Instant>,
    backoff: Backoff,
}

impl Default for RetryDelay {
    fn default() -> Self {
        RetryDelay {
            delay: None,
            not_before: None,
            backoff: Backoff::new(POSITION_RETRY_FIRST, POSITION_RETRY_MAX),
        }
    }
}

impl RetryDelay {
    fn due(&self) -> bool {
        self.not_before.is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&mut self) {
        self.delay = Some(self.backoff.nominal());
        self.not_before = Some(Instant::now() + self.backoff.next_wait());
    }

    fn succeeded(&mut self) {
        *self = RetryDelay::default();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("the reply listener is not running")]
    Stopped,
    #[error("cannot position on reply topic {topic}: {reason}")]
    Position { topic: String, reason: String },
    #[error("already listening to {0} reply topics; not adding more")]
    TooMany(usize),
}

struct Listen {
    topic: String,
    start: StartAt,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct ReplyListener {
    commands: mpsc::Sender<Listen>,
    listening: Mutex<HashSet<String>>,
    ready: AtomicBool,
    max_topics: usize,
}

impl ReplyListener {
    /// Starts the listener task on `topics`.
    pub fn start(
        cluster: Arc<Cluster>,
        book: Arc<ReplyBook>,
        topics: BTreeSet<String>,
        max_topics: usize,
        max_fetch_bytes: usize,
        fetch_wait: Duration,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(64);
        let listener = Arc::new(ReplyListener {
            commands: tx,
            listening: Mutex::new(HashSet::new()),
            ready: AtomicBool::new(false),
            max_topics,
        });
        let consumer = PartitionConsumer::new(cluster, fetch_wait, max_fetch_bytes);
        tokio::spawn(run(Arc::downgrade(&listener), consumer, book, topics, rx));
        listener
    }

    /// Whether the configured reply topics are positioned.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The topics read now (a poisoned lock still holds a usable set).
    fn listening(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.listening.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once `topic` is read from `start` on (at once when it is
    /// already). Call before producing a request that names it.
    pub async fn ensure(&self, topic: &str, start: StartAt) -> Result<(), ListenError> {
        let count = {
            let listening = self.listening();
            if listening.contains(topic) {
                return Ok(());
            }
            listening.len()
        };
        if count >= self.max_topics {
            return Err(ListenError::TooMany(count));
        }
        let (done, answer) = oneshot::channel();
        self.commands
            .send(Listen {
                topic: topic.to_owned(),
                start,
                done,
            })
            .await
            .map_err(|_| ListenError::Stopped)?;
        answer
            .await
            .map_err(|_| ListenError::Stopped)?
            .map_err(|reason| ListenError::Position {
                topic: topic.to_owned(),
                reason,
            })
    }
}

async fn run(
    listener: std::sync::Weak<ReplyListener>,
    mut consumer: PartitionConsumer,
    book: Arc<ReplyBook>,
    initial: BTreeSet<String>,
    mut commands: mpsc::Receiver<Listen>,
) {
    // Topics listened to but without partitions yet (not created).
    let mut missing: BTreeSet<String> = BTreeSet::new();
    let mut unpositioned: BTreeSet<String> = initial;
    let mut last_refresh = Instant::now();
    let mut last_sweep = Instant::now();
    let mut position_retry = RetryDelay::default();
    loop {
        let Some(this) = listener.upgrade() else {
            return;
        };
        // 1. The configured topics, until all are positioned.
        if !unpositioned.is_empty() && position_retry.due() {
            let topics: Vec<&str> = unpositioned.iter().map(String::as_str).collect();
            match consumer.assign_topics(&topics, StartAt::Latest, true).await {
                Ok(added) => {
                    for (topic, count) in added {
                        if count == 0 {
                            missing.insert(topic.clone());
                        }
                        this.listening().insert(topic);
                    }
                    unpositioned.clear();
                    position_retry.succeeded();
                }
                Err(error) => {
                    if position_retry.delay.is_none() {
                        tracing::warn!(%error, topics = ?topics, "cannot position on the reply topics; retrying with back-off");
                    }
                    position_retry.failed();
                }
            }
            if unpositioned.is_empty() && !this.ready.swap(true, Ordering::AcqRel) {
                tracing::info!("reply listener positioned on every configured reply topic");
                metrics::gauge!(m::RR_LISTENER_READY).set(1.0);
            }
        }
        // 2. Topics asked for by requests.
        while let Ok(Listen { topic, start, done }) = commands.try_recv() {
            let outcome = match consumer.assign_topics(&[&topic], start, true).await {
                Ok(added) => {
                    if added.get(&topic) == Some(&0) {
                        missing.insert(topic.clone());
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            if outcome.is_ok() {
                this.listening().insert(topic.clone());
                tracing::info!(topic, ?start, "listening to reply topic");
            }
            let _ = done.send(outcome);
        }
        // 3. New partitions, and topics that did not exist.
        let due = if missing.is_empty() {
            REFRESH_EVERY
        } else {
            MISSING_REFRESH_EVERY
        };
        if last_refresh.elapsed() >= due {
            last_refresh = Instant::now();
            let known: Vec<String> = this.listening().iter().cloned().collect();
            let topics: Vec<&str> = known.iter().map(String::as_str).collect();
            match consumer
                .assign_topics(&topics, StartAt::Earliest, false)
                .await
            {
                Ok(added) => {
                    for (topic, added) in added.into_iter().filter(|(_, n)| *n > 0) {
                        tracing::info!(
                            topic,
                            added,
                            "reading new reply partitions from their start"
                        );
                        missing.remove(&topic);
                    }
                }
                Err(error) => tracing::debug!(%error, "reply topic refresh failed"),
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            book.sweep();
            let (count, bytes) = book.held();
            metrics::gauge!(m::RR_REPLIES_HELD).set(count as f64);
            metrics::gauge!(m::RR_REPLY_BYTES_HELD).set(bytes as f64);
        }
        drop(this);
        // 4. Replies.
        match consumer.poll().await {
            Ok(records) => {
                for record in records {
                    match wire::parse_reply(&record) {
                        Ok((id, reply)) => {
                            metrics::counter!(m::RR_REPLIES_READ, "outcome" => "ok").increment(1);
                            book.complete(id, reply);
                        }
                        Err(error) => {
                            metrics::counter!(m::RR_REPLIES_READ, "outcome" => "unusable")
                                .increment(1);
                            tracing::warn!(%error, topic = %record.topic, partition = record.partition, offset = record.offset, "record on a reply topic is not a reply; ignored");
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reply fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_to_its_cap_and_resets_on_success() {
        let mut retry = RetryDelay::default();
        assert!(retry.due());
        let mut delays = Vec::new();
        for _ in 0..8 {
            retry.failed();
            delays.push(retry.delay.unwrap().as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(!retry.due());
        retry.succeeded();
        assert!(retry.due());
        retry.failed();
        assert_eq!(retry.delay, Some(POSITION_RETRY_FIRST));
    }
}
