//! Server-sent events: a stream route (`streams:` in the routes file)
//! serves its topic to `EventSource` clients as `text/event-stream`.
//!
//! - `GET` opens a stream. Without `Last-Event-ID` it starts at the
//!   route's `start` (latest by default); with one, exactly after the
//!   event that carried it, on any replica (see `position`). A position
//!   that retention has deleted resumes at the earliest record still kept,
//!   after a `gap` event naming the partition and both offsets; the same
//!   happens when retention overtakes an open stream, or for a position
//!   past the log end (the broker answers OFFSET_OUT_OF_RANGE).
//! - `POST` with `Content-Type: application/x-challenge-response` and a
//!   fresh bearer JWT renews the caller's open streams (see `registry`).
//! - Each stream is its own Kafka consumer (its own broker connections,
//!   no consumer group, nothing committed): the client holds the position.

pub mod delivery;
pub mod frame;
pub mod position;
pub mod pump;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::ApiError;
use super::middleware;
use super::Sidecar;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::consumer::{PartitionConsumer, PositionReset, StartAt};
use crate::rr::stream_routes::{StreamRoute, StreamTarget};
use delivery::Objects;
use position::StreamPosition;
use pump::{Pump, PumpSettings, EVENTS_QUEUED};
use registry::StreamRegistry;

/// The content type of a challenge response.
pub const CHALLENGE_RESPONSE: &str = "application/x-challenge-response";

/// Makes the Kafka connections of one stream.
pub type ConnectCluster = Arc<dyn Fn() -> Cluster + Send + Sync>;

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub keep_alive: Duration,
    /// Longest a stream's Fetch waits at the broker.
    pub fetch_wait: Duration,
    pub partition_max_bytes: usize,
    pub challenge_before: Duration,
    pub stall_timeout: Duration,
    pub max_per_caller: usize,
    pub max_streams: usize,
}

/// The SSE side of the sidecar.
pub struct Streams {
    pub routes: Vec<StreamRoute>,
    settings: StreamSettings,
    registry: Arc<StreamRegistry>,
    connect: ConnectCluster,
    objects: Objects,
}

impl Streams {
    pub fn new(
        routes: Vec<StreamRoute>,
        settings: StreamSettings,
        connect: ConnectCluster,
        objects: Objects,
    ) -> Streams {
        Streams {
            registry: StreamRegistry::new(settings.max_per_caller, settings.max_streams),
            routes,
            settings,
            connect,
            objects,
        }
    }

    /// A request on a stream route's path.
    pub async fn handle(
        &self,
        sidecar: &Sidecar,
        target: StreamTarget<'_>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let who = middleware::authenticate(sidecar, headers)?;
        match *method {
            Method::GET => self.open(sidecar, who, target, headers).await,
            Method::POST if is_challenge_response(headers) => {
                let Some(expires_at) = who.expires_at else {
                    return Err(ApiError::bad_request(
                        "invalid_challenge_response",
                        "a challenge response must carry a bearer JWT",
                    ));
                };
                let renewed = self.registry.renew(who.caller, expires_at);
                if renewed == 0 {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "no_open_stream",
                        "this caller has no stream open on this replica",
                    ));
                }
                let mut response = StatusCode::NO_CONTENT.into_response();
                response
                    .headers_mut()
                    .insert("x-streams-renewed", HeaderValue::from(renewed));
                Ok(response)
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a stream takes GET, or POST with a challenge response",
            )),
        }
    }

    async fn open(
        &self,
        sidecar: &Sidecar,
        who: middleware::Authenticated,
        target: StreamTarget<'_>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let resume = match headers.get("last-event-id") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .map(StreamPosition::parse)
                    .unwrap_or(Err(position::PositionError::Malformed))
                    .map_err(|e| ApiError::bad_request("invalid_last_event_id", e.to_string()))?,
            ),
        };
        let ticket = self.registry.open(who.caller, who.expires_at)?;
        let route = target.route;
        let mut consumer = PartitionConsumer::new(
            Arc::new((self.connect)()),
            self.settings.fetch_wait,
            self.settings.partition_max_bytes,
        )
        .reporting_resets();
        let layout = consumer
            .partition_counts(&[route.topic.as_str()], false)
            .await
            .map_err(kafka_unavailable)?;
        let Some(partitions) = layout.get(&route.topic) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_topic",
                format!("topic {} does not exist", route.topic),
            ));
        };
        let count = partitions.len();
        if let Some(resume) = &resume {
            resume
                .fits(count)
                .map_err(|e| ApiError::bad_request("invalid_last_event_id", e.to_string()))?;
        }
        let mut gaps = Vec::new();
        let mut named = Vec::new();
        let mut fresh = Vec::new();
        for &(partition, leader) in partitions {
            let Some(at) = resume.as_ref().and_then(|r| r.get(partition)) else {
                fresh.push((route.topic.clone(), partition, None));
                continue;
            };
            let at = match out_of_log(&consumer, leader, &route.topic, partition, at).await? {
                Some(gap) => {
                    let to = gap.to;
                    gaps.push(gap);
                    to
                }
                None => at,
            };
            named.push((route.topic.clone(), partition, Some(at)));
        }
        // Named positions fall back to the earliest record when retention
        // deleted them; partitions an id does not name are newer than it.
        let fresh_start = match resume {
            Some(_) => StartAt::Earliest,
            None => route.start.start_at(),
        };
        for (wanted, reset) in [(named, StartAt::Earliest), (fresh, fresh_start)] {
            if !wanted.is_empty() {
                consumer
                    .assign_partitions(&wanted, reset)
                    .await
                    .map_err(kafka_unavailable)?;
            }
        }
        let mut position = StreamPosition::new(vec![0; count]);
        for (_, partition, next) in consumer.positions() {
            position.set(partition, next);
        }
        let (out, events) = tokio::sync::mpsc::channel::<Bytes>(EVENTS_QUEUED);
        tracing::info!(route = route.name(), topic = %route.topic, %position, resumed = headers.contains_key("last-event-id"), "SSE stream opened");
        tokio::spawn(
            Pump {
                route: route.clone(),
                filter: target.filter,
                consumer,
                position,
                objects: self.objects.clone(),
                ticket,
                settings: PumpSettings {
                    keep_alive: self.settings.keep_alive,
                    challenge_before: self.settings.challenge_before,
                    stall_timeout: self.settings.stall_timeout,
                },
                shutdown: sidecar.shutdown.clone(),
                gaps,
                out,
            }
            .run(),
        );
        let body = futures_util::stream::unfold(events, |mut events| async move {
            let frame = events.recv().await?;
            Some((Ok::<_, std::convert::Infallible>(frame), events))
        });
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // nginx and similar would otherwise hold events back.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

/// A gap when retention has deleted the record at `at`: the stream
/// resumes at the log start. (A position past the log end, from before the
/// topic was recreated, is left to the broker: Kafka answers the Fetch
/// with OFFSET_OUT_OF_RANGE and the consumer resets it to the log start,
/// with the same `gap` event. The log end is not checked here because
/// some brokers (tansu) report it short after multi-record batches.)
async fn out_of_log(
    consumer: &PartitionConsumer,
    leader: i32,
    topic: &str,
    partition: i32,
    at: i64,
) -> Result<Option<PositionReset>, ApiError> {
    let start = consumer
        .log_start(leader, topic, partition)
        .await
        .map_err(kafka_unavailable)?;
    Ok(deleted(at, start).then(|| PositionReset {
        topic: Arc::from(topic),
        partition,
        from: at,
        to: start,
    }))
}

/// Whether the record at `at` is gone: before the log start.
fn deleted(at: i64, log_start: i64) -> bool {
    at < log_start
}

fn is_challenge_response(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(CHALLENGE_RESPONSE))
}

fn kafka_unavailable(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
        "Kafka is unavailable; retry later",
    )
    .with_detail(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positions_before_the_log_start_are_gaps() {
        assert!(deleted(3, 10));
        assert!(!deleted(10, 10), "the log start itself is kept");
        assert!(!deleted(50, 10));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-Challenge-Response; charset=utf-8"),
        );
        assert!(is_challenge_response(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_challenge_response(&h));
    }
}
