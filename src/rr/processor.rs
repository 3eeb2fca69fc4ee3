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

use crate::backoff::Backoff;
use crate::kafka::wire::topic::{check_topic_name, MAX_TOPIC_NAME_LENGTH};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::shutdown::Shutdown;

use super::processor_config::{ProcessorConfig, TopicConfig};
use super::wire;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::consumer::{ConsumedRecord, PartitionConsumer, StartAt};
use crate::kafka::client::group::{GroupError, GroupMember, GroupTimeouts, Membership};
use crate::kafka::client::producer::{OutgoingRecord, Producer};
use crate::kafka::relay::upstream::UpstreamSecurity;
use crate::metrics as m;

/// How the processor reaches Kafka.
#[derive(Clone)]
pub struct KafkaAccess {
    pub upstream: Arc<UpstreamSecurity>,
    pub bootstrap: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_frame_size: usize,
    pub session_timeout: Duration,
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
            producer: Producer::new(kafka.new_cluster()),
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

    async fn run_group(
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

    /// One request, from record to reply.
    async fn handle(&self, record: ConsumedRecord) {
        let started = Instant::now();
        let topic = record.topic.to_string();
        let Some(config) = self.config.topic(&topic) else {
            return;
        };
        let _busy = m::GaugeGuard::increment(m::PROCESSOR_IN_FLIGHT);
        let outcome = self.serve(config, &record).await;
        metrics::counter!(m::PROCESSOR_REQUESTS_TOTAL, "topic" => topic.clone(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!(m::PROCESSOR_SECONDS, "topic" => topic)
            .record(started.elapsed().as_secs_f64());
    }

    async fn serve(&self, config: &TopicConfig, record: &ConsumedRecord) -> &'static str {
        let Some(id) = record
            .header_str(wire::CORRELATION_ID)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
        else {
            tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, "request without a correlation id; dead-lettered");
            self.dead_letter(record, "no_correlation_id").await;
            return "invalid";
        };
        let reply_to = record
            .header_str(wire::REPLY_TO)
            .filter(|t| check_topic_name(t, MAX_TOPIC_NAME_LENGTH).is_ok())
            .unwrap_or(&config.response_topic)
            .to_owned();
        let deadline = record
            .header_str(wire::DEADLINE)
            .and_then(|d| d.trim().parse::<i64>().ok());
        if deadline.is_some_and(|d| wire::now_ms() >= d) {
            metrics::counter!(m::PROCESSOR_EXPIRED_TOTAL, "topic" => config.request_topic.clone())
                .increment(1);
            tracing::info!(correlation_id = id, topic = %record.topic, "request past its deadline; dropped unsent");
            return "expired";
        }
        let outcome = self.call_backend(config, record, &id, deadline).await;
        let (status, headers, body, failure) = match outcome {
            BackendOutcome::Answered {
                status,
                headers,
                body,
            } => {
                let failure = (status >= 500).then_some("backend_status");
                (status, headers, body, failure)
            }
            BackendOutcome::GaveUp {
                status,
                code,
                message,
            } => {
                let body = serde_json::json!({
                    "code": code,
                    "message": message,
                    "request_id": id,
                })
                .to_string();
                (
                    status,
                    vec![
                        (
                            "content-type".to_owned(),
                            Bytes::from_static(b"application/json"),
                        ),
                        (wire::ERROR.to_owned(), Bytes::from_static(code.as_bytes())),
                    ],
                    Bytes::from(body),
                    Some(code),
                )
            }
            BackendOutcome::Expired => {
                metrics::counter!(m::PROCESSOR_EXPIRED_TOTAL, "topic" => config.request_topic.clone())
                    .increment(1);
                self.dead_letter(record, "deadline_passed").await;
                return "expired";
            }
        };
        let mut reply_headers = vec![
            (wire::CORRELATION_ID.to_owned(), Bytes::from(id.clone())),
            (wire::STATUS.to_owned(), Bytes::from(status.to_string())),
        ];
        if let Some(d) = record.header(wire::REQUEST_DIGEST) {
            reply_headers.push((wire::REQUEST_DIGEST.to_owned(), Bytes::copy_from_slice(d)));
        }
        reply_headers.extend(headers);
        let reply = OutgoingRecord {
            topic: reply_to.clone(),
            partition: None,
            key: record.key.clone(),
            value: body,
            headers: reply_headers,
        };
        let replied = self.producer.produce(&reply).await;
        if let Err(error) = &replied {
            tracing::error!(%error, correlation_id = id, reply_to, "cannot produce the reply");
        }
        match (failure, replied) {
            (Some(code), _) => {
                self.dead_letter(record, code).await;
                "failed"
            }
            (None, Err(_)) => {
                self.dead_letter(record, "reply_not_produced").await;
                "failed"
            }
            (None, Ok(_)) => "ok",
        }
    }

    async fn call_backend(
        &self,
        config: &TopicConfig,
        record: &ConsumedRecord,
        id: &str,
        deadline: Option<i64>,
    ) -> BackendOutcome {
        let method = record
            .header_str(wire::METHOD)
            .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
            .unwrap_or(reqwest::Method::POST);
        let path = record
            .header_str(wire::PATH)
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let url = format!("{}{}", config.backend_url, path);
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &record.headers {
            let lower = name.to_ascii_lowercase();
            let Some(value) = value else { continue };
            if !wire::is_end_to_end(&lower)
                || lower == "idempotency-key"
                || lower == wire::SUBJECT_HEADER
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(lower.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        if let Ok(v) = reqwest::header::HeaderValue::from_str(id) {
            headers.insert("x-correlation-id", v);
        }
        if let Some(subject) = record
            .header(wire::IDENTITY)
            .and_then(|s| reqwest::header::HeaderValue::from_bytes(s).ok())
        {
            headers.insert(wire::SUBJECT_HEADER, subject);
        }
        let body = record.value.clone().unwrap_or_default();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut timeout = config.timeout;
            if let Some(d) = deadline {
                let left = d - wire::now_ms();
                if left <= 0 {
                    return BackendOutcome::Expired;
                }
                timeout = timeout.min(Duration::from_millis(left as u64));
            }
            if let Some(rate) = self.rate.get(&config.request_topic) {
                rate.wait().await;
            }
            let started = Instant::now();
            let result = self
                .http
                .request(method.clone(), &url)
                .headers(headers.clone())
                .body(body.clone())
                .timeout(timeout)
                .send()
                .await;
            let result = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response_headers(response.headers());
                    match read_body(response, self.kafka.max_frame_size).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            metrics::histogram!(m::PROCESSOR_BACKEND_SECONDS, "topic" => config.request_topic.clone())
                .record(started.elapsed().as_secs_f64());
            let give_up = attempt >= config.max_retries
                || deadline
                    .is_some_and(|d| wire::now_ms() + backoff.nominal().as_millis() as i64 >= d);
            match result {
                Ok((status, headers, body)) if status < 500 || give_up => {
                    return BackendOutcome::Answered {
                        status,
                        headers,
                        body,
                    }
                }
                Ok((status, ..)) => {
                    tracing::debug!(status, attempt, url, "backend 5xx; retrying");
                }
                Err(error) if give_up => {
                    tracing::warn!(%error, attempt, url, correlation_id = id, "backend call failed; giving up");
                    return if error.is_timeout() {
                        BackendOutcome::GaveUp {
                            status: 504,
                            code: "backend_timeout",
                            message: format!("the backend did not answer within {timeout:?} ({attempt} attempts)"),
                        }
                    } else {
                        BackendOutcome::GaveUp {
                            status: 502,
                            code: "backend_unavailable",
                            message: format!(
                                "the backend could not be reached ({attempt} attempts)"
                            ),
                        }
                    };
                }
                Err(error) => {
                    tracing::debug!(%error, attempt, url, "backend call failed; retrying");
                }
            }
            metrics::counter!(m::PROCESSOR_RETRIES_TOTAL, "topic" => config.request_topic.clone())
                .increment(1);
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    async fn dead_letter(&self, record: &ConsumedRecord, reason: &'static str) {
        let Some(topic) = &self.config.dead_letter_topic else {
            return;
        };
        let mut headers: Vec<(String, Bytes)> = record
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), v.clone()?)))
            .collect();
        headers.extend([
            (
                wire::ERROR.to_owned(),
                Bytes::from_static(reason.as_bytes()),
            ),
            (
                wire::SOURCE_TOPIC.to_owned(),
                Bytes::from(record.topic.to_string()),
            ),
            (
                wire::SOURCE_PARTITION.to_owned(),
                Bytes::from(record.partition.to_string()),
            ),
            (
                wire::SOURCE_OFFSET.to_owned(),
                Bytes::from(record.offset.to_string()),
            ),
        ]);
        let letter = OutgoingRecord {
            topic: topic.clone(),
            partition: None,
            key: record.key.clone(),
            value: record.value.clone().unwrap_or_default(),
            headers,
        };
        match self.producer.produce(&letter).await {
            Ok(_) => {
                metrics::counter!(m::PROCESSOR_DEAD_LETTERS_TOTAL, "reason" => reason).increment(1)
            }
            Err(error) => {
                tracing::error!(%error, topic, reason, source_topic = %record.topic, offset = record.offset, "cannot write the dead letter")
            }
        }
    }
}

enum BackendOutcome {
    Answered {
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
    },
    GaveUp {
        status: u16,
        code: &'static str,
        message: String,
    },
    Expired,
}

fn response_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, Bytes)> {
    let mut http = http::HeaderMap::new();
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n.as_str().as_bytes()),
            http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            http.append(n, v);
        }
    }
    wire::http_headers_to_record(&http, &[])
}

/// The body, up to `limit` bytes (a reply must fit in one record).
async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, reqwest::Error> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
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
