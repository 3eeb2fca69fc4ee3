//! Client → upstream: read each request, run it through the chain, queue
//! what the client is owed, forward.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::reauth;
use super::{Owed, Pending, SessionError};
use crate::capture::Direction;
use crate::kafka::auth::sasl::due_after;
use crate::kafka::relay::chain::{ConnectionInfo, LocalAnswer, Request, RequestAction, StageState};
use crate::kafka::relay::proxy::Proxy;
use crate::kafka::relay::upstream::BrokerStream;
use crate::kafka::wire::frame;
use crate::metrics as m;
use crate::tls::MaybeTlsStream;

pub(super) async fn forward_requests(
    proxy: &Arc<Proxy>,
    conn: &ConnectionInfo,
    mut client: BufReader<ReadHalf<MaybeTlsStream>>,
    upstream: &mut WriteHalf<BrokerStream>,
    owed: mpsc::Sender<Owed>,
    pending: Pending<'_>,
    session_lifetime: Option<Duration>,
) -> Result<(), SessionError> {
    let Pending {
        unanswered,
        in_flight,
    } = pending;
    let mut shutdown = proxy.shutdown();
    let mut reauth_at = session_lifetime.map(|l| Instant::now() + due_after(l));
    let mut state = StageState::default();
    loop {
        // Between requests only: a login must never cut a frame in half.
        tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep_until(reauth_at.unwrap_or_else(Instant::now)), if reauth_at.is_some() => {
                reauth_at = reauth::reauthenticate(proxy, conn, upstream, &owed, in_flight).await?;
                continue;
            }
            ready = client.fill_buf() => {
                if ready.is_err() {
                    return Ok(());
                }
            }
        }
        let frame = tokio::select! {
            biased;
            _ = shutdown.wait() => return Ok(()),
            frame = frame::read_frame_within(&mut client, proxy.config.max_frame_size, Some(&proxy.budget)) => frame,
        };
        // `_reserved` keeps the frame's bytes counted until it is forwarded.
        let Some((frame, _reserved)) = frame.map_err(SessionError::ClientFrame)? else {
            return Ok(());
        };
        let body = frame.body();
        let header = frame::peek_request_header(&body).map_err(SessionError::ClientFrame)?;
        conn.set_client_id(header.client_id.as_deref());
        metrics::counter!(m::REQUESTS_TOTAL, "api" => m::api_label(header.api_key)).increment(1);
        metrics::counter!(m::BYTES_TOTAL, "direction" => "client_to_upstream")
            .increment(frame.len() as u64);
        if let Some(capture) = &proxy.capture {
            capture.record(
                conn.id,
                Direction::Request,
                header.api_key,
                header.api_version,
                &body,
            );
        }
        let (api_key, api_version, correlation_id) =
            (header.api_key, header.api_version, header.correlation_id);
        // Judged after the chain, so a refusal (an unauthenticated client)
        // wins over a malformed acks field, as it would at a broker.
        let expects_response = frame::expects_response(&header, &body);
        let request = Request {
            header,
            frame,
            owing: Vec::new(),
        };
        let answer = |answer: LocalAnswer| Owed::Local {
            frame: answer.frame,
            api_key,
            api_version: answer.api_version,
        };
        let request = match proxy.chain.on_request(conn, &mut state, request).await? {
            RequestAction::Forward(request) => request,
            RequestAction::Refuse(refusal) => return Err(SessionError::Refused(refusal)),
            RequestAction::AnswerAndClose(reply) => {
                // Delivered with whatever is still owed, then the session ends.
                in_flight.add();
                let _ = owed.send(answer(reply)).await;
                return Ok(());
            }
            RequestAction::Answer(reply) => {
                // An acks=0 Produce gets no answer, not even the proxy's.
                if expects_response.map_err(SessionError::ClientFrame)? {
                    in_flight.add();
                    if owed.send(answer(reply)).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
        };
        let expects_response = match expects_response {
            Ok(expects) => expects,
            Err(error) => {
                request.owing.into_iter().for_each(|o| o.abandon());
                return Err(SessionError::ClientFrame(error));
            }
        };
        if expects_response {
            let entry = Owed::Upstream {
                api_key,
                api_version,
                correlation_id,
                owing: request.owing,
            };
            // Queue before writing, so the response can never arrive first.
            in_flight.add();
            if let Err(mpsc::error::SendError(entry)) = owed.send(entry).await {
                entry.abandon();
                return Ok(());
            }
        } else {
            // acks=0: no response will settle anything, and what is
            // forwarded stands (its objects are referenced).
            unanswered.remember(correlation_id);
        }
        upstream
            .write_all(request.frame.wire())
            .await
            .map_err(SessionError::UpstreamWrite)?;
    }
}
