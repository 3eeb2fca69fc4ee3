//! The task behind one open stream: poll the topic, turn records into
//! events, write them to the response body.
//!
//! Back-pressure: the body is a channel of `EVENTS_QUEUED` events; the
//! task waits for room before it polls again, so a slow client holds at
//! most one fetch (`partition_max_bytes` per partition) and the queued
//! events in memory, and the proxy reads no further from Kafka until the
//! client reads. A client that takes nothing for `stall_timeout` is cut
//! off (its position is in the last id it received: reconnecting loses
//! nothing).
//!
//! Between polls (each at most `fetch_wait`) the task sends a keep-alive
//! every `keep_alive` (as an `id:` line when filtered records moved the
//! position, so a reconnect does not rescan them), the `challenge` event
//! once the stream's JWT is within `challenge_before` of its expiry, and
//! ends the stream at that expiry, at shutdown, or when the client left.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::delivery::{deliver, Delivery, Objects};
use super::frame;
use super::position::StreamPosition;
use super::registry::OpenStream;
use crate::kafka::client::consumer::{PartitionConsumer, PositionReset};
use crate::metrics as m;
use crate::rr::stream_routes::{RecordFilter, StreamRoute};
use crate::shutdown::Shutdown;

/// Events queued for the client at most.
pub const EVENTS_QUEUED: usize = 16;

#[derive(Debug, Clone)]
pub struct PumpSettings {
    pub keep_alive: Duration,
    pub challenge_before: Duration,
    pub stall_timeout: Duration,
}

/// Everything one stream's task owns.
pub struct Pump {
    pub route: StreamRoute,
    pub filter: RecordFilter,
    pub consumer: PartitionConsumer,
    pub position: StreamPosition,
    pub objects: Objects,
    pub ticket: OpenStream,
    pub settings: PumpSettings,
    pub shutdown: Shutdown,
    /// Positions found outside the log when the stream opened.
    pub gaps: Vec<PositionReset>,
    pub out: mpsc::Sender<Bytes>,
}

/// Why a stream ended (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientGone,
    Stalled,
    Expired,
    Shutdown,
    Kafka,
    Storage,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::ClientGone => "client_gone",
            End::Stalled => "stalled",
            End::Expired => "token_expired",
            End::Shutdown => "shutdown",
            End::Kafka => "kafka_unavailable",
            End::Storage => "storage_unavailable",
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Pump {
    pub async fn run(mut self) {
        let _open = m::GaugeGuard::increment(m::SSE_STREAMS_OPEN);
        let end = self.serve().await;
        tracing::info!(route = self.route.name(), reason = end.label(), position = %self.position, "SSE stream ended");
        metrics::counter!(m::SSE_STREAMS_ENDED_TOTAL, "route" => self.route.name().to_owned(), "reason" => end.label())
            .increment(1);
    }

    async fn send(&self, frame: Bytes) -> Result<(), End> {
        match tokio::time::timeout(self.settings.stall_timeout, self.out.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::Stalled),
        }
    }

    async fn serve(&mut self) -> End {
        // The client knows where it stands before the first event.
        let mut sent_id = self.position.to_string();
        if let Err(end) = self.send(frame::progress(&sent_id)).await {
            return end;
        }
        for gap in std::mem::take(&mut self.gaps) {
            if let Err(end) = self.send(gap_event(&sent_id, &gap)).await {
                return end;
            }
        }
        let mut last_write = Instant::now();
        let mut challenged_for = None;
        let mut failures = 0u32;
        loop {
            if self.shutdown.is_shutdown() {
                return End::Shutdown;
            }
            if self.out.is_closed() {
                return End::ClientGone;
            }
            let deadline = *self.ticket.deadline.borrow();
            if let Some(expiry) = deadline {
                let now = now_secs();
                if now >= expiry {
                    let _ = self
                        .out
                        .try_send(Bytes::from_static(b": token expired\n\n"));
                    return End::Expired;
                }
                let lead = self.settings.challenge_before.as_secs();
                if now + lead >= expiry && challenged_for != Some(expiry) {
                    challenged_for = Some(expiry);
                    if let Err(end) = self.send(challenge(&sent_id, expiry)).await {
                        return end;
                    }
                    last_write = Instant::now();
                }
            }
            let records = match self.consumer.poll().await {
                Ok(records) => {
                    failures = 0;
                    records
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(route = self.route.name(), %error, failures, "SSE: fetch failed");
                    if failures >= 5 {
                        return End::Kafka;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                    continue;
                }
            };
            for reset in self.consumer.take_resets() {
                // Retention deleted records this stream had not read yet.
                self.position.set(reset.partition, reset.to);
                sent_id = self.position.to_string();
                if let Err(end) = self.send(gap_event(&sent_id, &reset)).await {
                    return end;
                }
                last_write = Instant::now();
            }
            for record in &records {
                let delivery = deliver(record, &self.route, &self.filter, &self.objects).await;
                let event = match delivery {
                    Delivery::Skip => {
                        self.position.set(record.partition, record.offset + 1);
                        continue;
                    }
                    Delivery::Unavailable(error) => {
                        tracing::warn!(route = self.route.name(), %error, "SSE: storage unreachable; ending the stream before the record");
                        return End::Storage;
                    }
                    Delivery::Send(event) => event,
                };
                self.position.set(record.partition, record.offset + 1);
                sent_id = self.position.to_string();
                let frame = frame::event(&sent_id, &event.event_type, &event.data);
                if let Err(end) = self.send(frame).await {
                    return end;
                }
                metrics::counter!(m::SSE_EVENTS_TOTAL, "route" => self.route.name().to_owned())
                    .increment(1);
                last_write = Instant::now();
            }
            // Past control batches and filtered records too.
            for (_, partition, next) in self.consumer.positions() {
                self.position.set(partition, next);
            }
            if last_write.elapsed() >= self.settings.keep_alive {
                let id = self.position.to_string();
                let frame = if id == sent_id {
                    Bytes::from_static(frame::KEEP_ALIVE)
                } else {
                    frame::progress(&id)
                };
                sent_id = id;
                if let Err(end) = self.send(frame).await {
                    return end;
                }
                last_write = Instant::now();
            }
        }
    }
}

/// The `gap` event: records between two offsets were not delivered.
fn gap_event(id: &str, gap: &PositionReset) -> Bytes {
    let data = serde_json::json!({
        "partition": gap.partition,
        "requested_offset": gap.from,
        "resumed_offset": gap.to,
    })
    .to_string();
    frame::event(id, "gap", &data)
}

/// The `challenge` event: how to present a fresh token before `expiry`.
fn challenge(id: &str, expiry: u64) -> Bytes {
    let data = serde_json::json!({
        "method": "POST",
        "headers": {"content-type": super::CHALLENGE_RESPONSE},
        "expires_at": expiry,
    })
    .to_string();
    frame::event(id, "challenge", &data)
}
