//! The event id of an SSE stream: the stream's position on every
//! partition of its topic, so any replica can resume it from
//! `Last-Event-ID` without keeping state.
//!
//! The id is the next offset to read on each partition, in partition
//! order, separated by commas: `15,7,0` means partition 0 resumes at 15,
//! partition 1 at 7, partition 2 at 0. An event's id is the position just
//! after that event's record, so resuming from it delivers exactly the
//! records after it. Partitions the id does not name (added to the topic
//! since) are read from their earliest record.

use std::fmt;

/// Why a `Last-Event-ID` cannot be resumed from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("Last-Event-ID is not a list of offsets (such as 15,7,0)")]
    Malformed,
    #[error("Last-Event-ID names {named} partitions; the topic has {partitions}")]
    TooManyPartitions { named: usize, partitions: usize },
}

/// Next offset per partition, indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition(Vec<i64>);

/// The most partitions an id may name (Kafka topics rarely have more than
/// a few hundred; the header stays a few KiB).
const MAX_PARTITIONS: usize = 10_000;

impl StreamPosition {
    pub fn parse(id: &str) -> Result<StreamPosition, PositionError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(PositionError::Malformed);
        }
        let offsets = id
            .split(',')
            .map(|o| o.trim().parse::<i64>().ok().filter(|o| *o >= 0))
            .collect::<Option<Vec<i64>>>()
            .ok_or(PositionError::Malformed)?;
        if offsets.len() > MAX_PARTITIONS {
            return Err(PositionError::Malformed);
        }
        Ok(StreamPosition(offsets))
    }

    pub fn new(offsets: Vec<i64>) -> StreamPosition {
        StreamPosition(offsets)
    }

    /// The position on `partition`, when the id names it.
    pub fn get(&self, partition: i32) -> Option<i64> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.0.get(p).copied())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the id against the topic's partition count.
    pub fn fits(&self, partitions: usize) -> Result<(), PositionError> {
        if self.0.len() > partitions {
            return Err(PositionError::TooManyPartitions {
                named: self.0.len(),
                partitions,
            });
        }
        Ok(())
    }

    /// Moves `partition` to `next` (growing the list for a new partition).
    pub fn set(&mut self, partition: i32, next: i64) {
        let Ok(p) = usize::try_from(partition) else {
            return;
        };
        if p >= self.0.len() {
            self.0.resize(p + 1, 0);
        }
        self.0[p] = next;
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_move_per_partition() {
        let mut p = StreamPosition::parse("15,7,0").unwrap();
        assert_eq!((p.get(0), p.get(2), p.get(3)), (Some(15), Some(0), None));
        p.set(1, 8);
        p.set(3, 2);
        assert_eq!(p.to_string(), "15,8,0,2");
        assert_eq!(StreamPosition::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in ["", "a", "1,,2", "-1", "1;2", "99999999999999999999"] {
            assert_eq!(
                StreamPosition::parse(bad),
                Err(PositionError::Malformed),
                "{bad}"
            );
        }
        let p = StreamPosition::parse("1,2,3").unwrap();
        assert!(p.fits(3).is_ok());
        assert_eq!(
            p.fits(2),
            Err(PositionError::TooManyPartitions {
                named: 3,
                partitions: 2
            })
        );
    }
}
