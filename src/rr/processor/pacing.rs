//! Pacing for the processor: the per-topic rate limit, and the offsets
//! that may be committed (those before the first unfinished record).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kafka::client::records::ConsumedRecord;

/// Spaces calls `1 / rate` seconds apart.
pub struct RateLimit {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimit {
    pub fn new(per_second: f64) -> Self {
        RateLimit {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// Which offsets may be committed: per partition, the first record still
/// in hand, or the one after the last started when none is.
#[derive(Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<(Arc<str>, i32), (BTreeSet<i64>, i64)>,
}

impl OffsetTracker {
    pub fn start(&mut self, record: &ConsumedRecord) {
        let entry = self
            .partitions
            .entry((Arc::clone(&record.topic), record.partition))
            .or_insert_with(|| (BTreeSet::new(), record.offset));
        entry.0.insert(record.offset);
        entry.1 = entry.1.max(record.offset + 1);
    }

    pub fn finish(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        if let Some(entry) = self.partitions.get_mut(&(Arc::clone(topic), partition)) {
            entry.0.remove(&offset);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|(s, _)| s.len()).sum()
    }

    pub fn committable(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|((t, p), (busy, next))| {
                (t.to_string(), *p, busy.first().copied().unwrap_or(*next))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[test]
    fn commits_stop_at_the_first_unfinished_record() {
        let mut t = OffsetTracker::default();
        for o in 5..9 {
            t.start(&rec(o));
        }
        let topic: Arc<str> = Arc::from("t");
        t.finish(&topic, 0, 5);
        t.finish(&topic, 0, 7);
        assert_eq!(t.committable(), vec![("t".to_owned(), 0, 6)]);
        t.finish(&topic, 0, 6);
        t.finish(&topic, 0, 8);
        assert_eq!(t.committable(), vec![("t".to_owned(), 0, 9)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[tokio::test]
    async fn rate_limit_spaces_calls() {
        let limit = RateLimit::new(50.0);
        let start = Instant::now();
        for _ in 0..6 {
            limit.wait().await;
        }
        // Five intervals of 20 ms after the first call.
        assert!(
            start.elapsed() >= Duration::from_millis(95),
            "{:?}",
            start.elapsed()
        );
    }
}
