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

use std::time::Duration;

use kafka_protocol::protocol::Request;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};

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

    #[test]
    fn login_again_at_85_percent() {
        assert_eq!(due_after(Duration::from_secs(100)), Duration::from_secs(85));
    }
}
