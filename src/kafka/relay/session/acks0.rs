//! Correlation ids of recent acks=0 Produce requests.
//!
//! Kafka brokers never answer them, but some brokers (librdkafka's mock
//! cluster, for one) do. Such an answer is recognised by its id and dropped:
//! the client expects nothing. Bounded: with a broker that never answers,
//! old ids simply fall out.

use std::collections::VecDeque;
use std::sync::Mutex;

#[derive(Default)]
pub struct UnansweredProduces(Mutex<VecDeque<i32>>);

impl UnansweredProduces {
    const CAPACITY: usize = 1024;

    pub fn remember(&self, correlation_id: i32) {
        if let Ok(mut ids) = self.0.lock() {
            if ids.len() == Self::CAPACITY {
                ids.pop_front();
            }
            ids.push_back(correlation_id);
        }
    }

    /// Whether `correlation_id` was an acks=0 Produce; forgets it.
    pub fn forget(&self, correlation_id: i32) -> bool {
        let Ok(mut ids) = self.0.lock() else {
            return false;
        };
        match ids.iter().position(|&id| id == correlation_id) {
            Some(i) => {
                ids.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_number_of_ids() {
        let ids = UnansweredProduces::default();
        for id in 0..(UnansweredProduces::CAPACITY as i32 + 1) {
            ids.remember(id);
        }
        assert!(!ids.forget(0), "the oldest id fell out");
        assert!(ids.forget(1));
        assert!(!ids.forget(1), "forgotten once answered");
        assert!(ids.forget(UnansweredProduces::CAPACITY as i32));
    }
}
