//! The in-memory view of one compacted topic: the latest value of every
//! key, read from the log start by a task of its own.
//!
//! - A record with a value sets its key; a tombstone removes it; a record
//!   without a key is ignored (compaction keeps only keyed records).
//! - The view is ready once a poll comes back empty: every partition has
//!   been read to its end. Until then requests wait (the answer would be
//!   a mix of old and new values).
//! - Every change bumps a version that waiting requests watch.
//! - The view holds at most `max_bytes` of keys and values; beyond that it
//!   stops and every request on it is 503 (a view that silently dropped
//!   keys would answer wrong).
//! - Each replica builds its own view from Kafka, so ETags (partition and
//!   offset of the record, or the position of the whole view) agree across
//!   replicas once they have read the same records.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::kafka::client::consumer::{PartitionConsumer, StartAt};
use crate::kafka::client::records::ConsumedRecord;
use crate::shutdown::Shutdown;

const REASSIGN_EVERY: Duration = Duration::from_secs(30);

/// The latest record of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub partition: i32,
    pub offset: i64,
    pub content_type: Option<String>,
}

impl Entry {
    /// The same on every replica: where the record is in Kafka.
    pub fn etag(&self) -> String {
        format!("\"{}-{}\"", self.partition, self.offset)
    }
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<Bytes, Entry>,
    bytes: usize,
    /// Next offset per partition read so far.
    positions: BTreeMap<i32, i64>,
    ready: bool,
    failed: Option<String>,
}

/// What a view can say now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading<T> {
    Ready(T),
    NotReady,
    Failed(String),
}

pub struct TopicView {
    pub topic: String,
    max_bytes: usize,
    state: RwLock<State>,
    version: watch::Sender<u64>,
}

impl TopicView {
    /// Starts reading `topic` from its log start.
    pub fn start(
        topic: String,
        consumer: PartitionConsumer,
        max_bytes: usize,
        shutdown: Shutdown,
    ) -> Arc<TopicView> {
        let view = Arc::new(TopicView {
            topic,
            max_bytes,
            state: RwLock::new(State::default()),
            version: watch::channel(0).0,
        });
        tokio::spawn(Arc::clone(&view).run(consumer, shutdown));
        view
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes on every change (and when the view becomes ready or fails).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn reading<T>(&self, f: impl FnOnce(&State) -> T) -> Reading<T> {
        let state = self.read();
        match (&state.failed, state.ready) {
            (Some(e), _) => Reading::Failed(e.clone()),
            (None, false) => Reading::NotReady,
            (None, true) => Reading::Ready(f(&state)),
        }
    }

    /// The latest record of `key`, if it has one.
    pub fn get(&self, key: &[u8]) -> Reading<Option<Entry>> {
        self.reading(|s| s.entries.get(key).cloned())
    }

    /// Every key's latest value, in key order, and the view's position as
    /// its ETag.
    pub fn all(&self) -> Reading<(Vec<Entry>, String)> {
        self.reading(|s| {
            let position: Vec<String> = s
                .positions
                .iter()
                .map(|(p, o)| format!("{p}-{o}"))
                .collect();
            let etag = format!("\"{}\"", position.join("."));
            (s.entries.values().cloned().collect(), etag)
        })
    }

    async fn run(self: Arc<Self>, mut consumer: PartitionConsumer, mut shutdown: Shutdown) {
        let topic = self.topic.clone();
        let mut assigned_at: Option<tokio::time::Instant> = None;
        let mut failures = 0u32;
        loop {
            if shutdown.is_shutdown() {
                return;
            }
            let due = assigned_at.is_none_or(|at| at.elapsed() >= REASSIGN_EVERY);
            if due || consumer.topics().is_empty() {
                match consumer
                    .assign_topics(&[topic.as_str()], StartAt::Earliest, false)
                    .await
                {
                    Ok(_) => assigned_at = Some(tokio::time::Instant::now()),
                    Err(error) => tracing::warn!(%topic, %error, "cached view: metadata failed"),
                }
                if consumer.topics().is_empty() {
                    // No such topic yet: an empty view is the right answer.
                    self.mark_ready();
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
            match consumer.poll().await {
                Ok(records) if records.is_empty() => {
                    failures = 0;
                    self.mark_ready();
                }
                Ok(records) => {
                    failures = 0;
                    if let Err(message) = self.apply(&records) {
                        tracing::error!(%topic, %message, "cached view stopped");
                        return;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%topic, %error, failures, "cached view: fetch failed");
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    fn mark_ready(&self) {
        let mut state = self.write();
        if !state.ready {
            state.ready = true;
            drop(state);
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// Applies records in order; fails the view past `max_bytes`.
    fn apply(&self, records: &[ConsumedRecord]) -> Result<(), String> {
        let mut state = self.write();
        for record in records {
            state.positions.insert(record.partition, record.offset + 1);
            let Some(key) = &record.key else { continue };
            let old = match &record.value {
                None => state.entries.remove(key),
                Some(value) => state.entries.insert(
                    key.clone(),
                    Entry {
                        value: value.clone(),
                        partition: record.partition,
                        offset: record.offset,
                        content_type: record.header_str("content-type").map(str::to_owned),
                    },
                ),
            };
            let added = record.value.as_ref().map_or(0, |v| key.len() + v.len());
            let removed = old.map_or(0, |e| key.len() + e.value.len());
            state.bytes = state.bytes + added - removed.min(state.bytes + added);
            if state.bytes > self.max_bytes {
                let message = format!(
                    "topic {} holds over {} bytes of latest values (CACHED_MAX_BYTES)",
                    self.topic, self.max_bytes
                );
                state.failed = Some(message.clone());
                drop(state);
                self.version.send_modify(|v| *v += 1);
                return Err(message);
            }
        }
        drop(state);
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }
}
