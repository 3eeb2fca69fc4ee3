//! Exponential back-off with jitter, for every retry loop in the proxy
//! (its own producer, the reply listener, the processor's group loop and
//! backend calls).
//!
//! The nominal delay starts at `first` and doubles after each failure up to
//! `max`. Each wait is a random point between half the nominal delay and the
//! whole of it ("equal jitter"): replicas that failed together, because the
//! broker or a backend went away for all of them, do not all come back in
//! the same millisecond, and no wait is shorter than half the plan.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    nominal: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            nominal: first,
        }
    }

    /// The nominal delay of the next wait (before jitter): what a caller
    /// compares with its deadline.
    pub fn nominal(&self) -> Duration {
        self.nominal
    }

    /// How long to wait now; the next nominal delay doubles, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.nominal);
        self.nominal = (self.nominal * 2).min(self.max);
        wait
    }

    /// Back to `first`, after a success.
    pub fn reset(&mut self) {
        self.nominal = self.first;
    }
}

/// A random duration in `[nominal / 2, nominal]`.
pub fn jitter(nominal: Duration) -> Duration {
    let half = nominal / 2;
    let span = (nominal - half).as_micros() as u64;
    if span == 0 {
        return nominal;
    }
    // RandomState is seeded randomly per process and per instance: enough
    // randomness to spread retries, without a random-number crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    half + Duration::from_micros(random % (span + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_its_cap_with_every_wait_within_half_and_whole() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut nominals = Vec::new();
        for _ in 0..7 {
            let nominal = backoff.nominal();
            let wait = backoff.next_wait();
            assert!(
                wait >= nominal / 2 && wait <= nominal,
                "{wait:?} of {nominal:?}"
            );
            nominals.push(nominal.as_millis());
        }
        assert_eq!(nominals, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.nominal(), Duration::from_millis(100));
    }

    #[test]
    fn waits_are_spread() {
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|_| jitter(Duration::from_secs(1))).collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
    }
}
