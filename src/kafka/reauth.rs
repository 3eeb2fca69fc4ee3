//! Logging in again on a relayed upstream connection before the broker's
//! SASL session ends (KIP-368), without disturbing the client.
//!
//! When the broker sets a session lifetime, the session schedules a new
//! login at 85% of it. At that point the proxy stops reading the client's
//! requests, waits until every response already owed has been delivered
//! (the broker answers in order and must not see the login interleaved with
//! other work), then sends SaslHandshake and SaslAuthenticate on the same
//! connection. Their answers are taken from the response stream by the
//! session's reader (`Owed::Internal`) instead of going to the client.
//! Then the client's requests flow again; the client sees only a short pause.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kafka_protocol::protocol::Request;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot, Notify};

use super::client::{self, ClientError};
use super::frame::Frame;
use super::sasl::SaslExchange;
use super::upstream::BrokerStream;

/// Fraction of the session lifetime after which the proxy logs in again.
const REAUTH_AT: f64 = 0.85;

/// When to log in again, given the lifetime the broker granted.
pub fn due_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(REAUTH_AT)
}

/// Responses owed to the client and not yet delivered.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once nothing is owed.
    pub async fn idle(&self) {
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// An entry for the session's response reader: the answer to one of the
/// proxy's own requests, handed back instead of sent to the client.
pub struct InternalReply {
    pub correlation_id: i32,
    pub reply: oneshot::Sender<Frame>,
}

/// SASL requests sent between a relayed client's requests.
pub struct RelayExchange<'a, T> {
    pub upstream: &'a mut WriteHalf<BrokerStream>,
    pub owed: &'a mpsc::Sender<T>,
    pub wrap: fn(InternalReply) -> T,
    pub next_id: i32,
}

impl<T> SaslExchange for RelayExchange<'_, T> {
    async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError> {
        // Ids from the negative range: easy to tell apart in captures.
        self.next_id = self.next_id.wrapping_sub(1);
        let id = self.next_id;
        let frame = client::encode_request(id, version, request)?;
        let (reply, answer) = oneshot::channel();
        // Queued before it is sent, so the answer cannot arrive first.
        self.owed
            .send((self.wrap)(InternalReply {
                correlation_id: id,
                reply,
            }))
            .await
            .map_err(|_| ClientError::Closed)?;
        self.upstream.write_all(frame.wire()).await?;
        let response = answer.await.map_err(|_| ClientError::Closed)?;
        client::decode_response::<R>(&response, id, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_every_owed_response() {
        let in_flight = std::sync::Arc::new(InFlight::default());
        in_flight.idle().await;
        in_flight.add();
        in_flight.add();
        let waiter = tokio::spawn({
            let in_flight = std::sync::Arc::clone(&in_flight);
            async move { in_flight.idle().await }
        });
        in_flight.done();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        in_flight.done();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due_after(Duration::from_secs(100)), Duration::from_secs(85));
    }
}
