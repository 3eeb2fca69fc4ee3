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

use std::sync::Arc;

use kafka_protocol::protocol::Request;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Owed, SessionError};
use crate::kafka::auth::sasl::{self, due_after};
use crate::kafka::relay::chain::ConnectionInfo;
use crate::kafka::relay::outstanding::Outstanding;
use crate::kafka::relay::proxy::Proxy;
use crate::metrics as m;

use crate::kafka::auth::sasl::SaslExchange;
use crate::kafka::relay::upstream::BrokerStream;
use crate::kafka::wire::call::{self, ClientError};
use crate::kafka::wire::frame::Frame;

/// Logs in again on the relayed connection once every owed response has
/// been delivered; returns when the next login is due.
pub(super) async fn reauthenticate(
    proxy: &Arc<Proxy>,
    conn: &ConnectionInfo,
    upstream: &mut WriteHalf<BrokerStream>,
    owed: &mpsc::Sender<Owed>,
    in_flight: &Outstanding,
) -> Result<Option<Instant>, SessionError> {
    let Some(credentials) = proxy.upstream.sasl.clone() else {
        return Ok(None);
    };
    in_flight.idle().await;
    let mut exchange = RelayExchange {
        upstream,
        owed,
        wrap: Owed::Internal,
        next_id: 0,
    };
    match sasl::authenticate(&mut exchange, &credentials).await {
        Ok(lifetime) => {
            metrics::counter!(m::UPSTREAM_REAUTH_TOTAL, "outcome" => "ok").increment(1);
            tracing::debug!(connection = conn.id, ?lifetime, "re-authenticated upstream");
            Ok(lifetime.map(|l| Instant::now() + due_after(l)))
        }
        Err(error) => {
            metrics::counter!(m::UPSTREAM_REAUTH_TOTAL, "outcome" => "failed").increment(1);
            Err(SessionError::Reauthentication(error.to_string()))
        }
    }
}

/// An entry for the session's response reader: the answer to one of the
/// proxy's own requests, handed back instead of sent to the client.
pub(super) struct InternalReply {
    pub correlation_id: i32,
    pub reply: oneshot::Sender<Frame>,
}

/// SASL requests sent between a relayed client's requests.
struct RelayExchange<'a, T> {
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
        let frame = call::encode_request(id, version, request)?;
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
        call::decode_response::<R>(&response, id, version)
    }
}
