//! `kafka-lfs-proxy processor`: the worker side of request-reply. It reads
//! request topics in a consumer group, calls the configured HTTP backend
//! for each request and produces the answer on the reply topic.
//!
//! - Many requests at once, bounded by `max_concurrent_requests` (shared
//!   by all topics); reading stops while every slot is taken.
//! - Offsets are committed once every record before them is finished, so
//!   a crash or rebalance repeats work rather than losing it
//!   (at least once; the reply's correlation id lets the gateway ignore a
//!   second reply).
//! - Connection errors, timeouts and 5xx answers are retried with
//!   exponential back-off, up to `max_retries` attempts and never past the
//!   request's deadline. When it gives up, the caller gets an error reply
//!   (502 `backend_unavailable`, 504 `backend_timeout`, or the backend's
//!   own last 5xx) at once instead of waiting for its timeout, and the
//!   request goes to the dead-letter topic.
//! - A request whose deadline has passed is dropped unsent and counted:
//!   its caller has already been told 504.
//! - An optional per-topic rate limit spaces backend calls evenly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

mod backend;
mod group_loop;
mod pacing;

pub use pacing::{OffsetTracker, RateLimit};

use super::processor_config::ProcessorConfig;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::producer::Producer;
use crate::kafka::relay::upstream::UpstreamSecurity;
use crate::shutdown::Shutdown;

/// How the processor reaches Kafka.
#[derive(Clone)]
pub struct KafkaAccess {
    pub upstream: Arc<UpstreamSecurity>,
    pub bootstrap: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_frame_size: usize,
    pub session_timeout: Duration,
    /// The reply producer's extra wait before sending a Produce.
    pub produce_linger: Duration,
    /// Longest a Fetch waits at the broker.
    pub fetch_wait: Duration,
}

impl KafkaAccess {
    fn new_cluster(&self) -> Cluster {
        Cluster::new(
            Arc::clone(&self.upstream),
            self.bootstrap.clone(),
            self.connect_timeout,
            self.request_timeout,
            self.max_frame_size,
        )
    }
}

pub struct Processor {
    config: ProcessorConfig,
    kafka: KafkaAccess,
    producer: Producer,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    rate: HashMap<String, Arc<RateLimit>>,
    groups_ready: AtomicUsize,
    group_count: usize,
}

impl Processor {
    pub fn new(config: ProcessorConfig, kafka: KafkaAccess) -> Result<Arc<Self>, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(config.max_concurrent_requests)
            .build()?;
        let rate = config
            .topics
            .iter()
            .filter_map(|t| {
                t.rate_limit
                    .map(|r| (t.request_topic.clone(), Arc::new(RateLimit::new(r))))
            })
            .collect();
        let group_count = config
            .topics
            .iter()
            .map(|t| &t.consumer_group)
            .collect::<BTreeSet<_>>()
            .len();
        Ok(Arc::new(Processor {
            producer: Producer::new(kafka.new_cluster()).with_linger(kafka.produce_linger),
            slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            kafka,
            http,
            rate,
            groups_ready: AtomicUsize::new(0),
            group_count,
        }))
    }

    /// Ready while every consumer group has this member in it.
    pub fn is_ready(&self) -> bool {
        self.groups_ready.load(Ordering::Acquire) >= self.group_count
    }

    /// Runs every group until `shutdown` turns true, then leaves them.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &self.config.topics {
            groups
                .entry(t.consumer_group.clone())
                .or_default()
                .push(t.request_topic.clone());
        }
        let tasks: Vec<_> = groups
            .into_iter()
            .map(|(group, topics)| {
                tokio::spawn(Arc::clone(&self).run_group(group, topics, shutdown.clone()))
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
