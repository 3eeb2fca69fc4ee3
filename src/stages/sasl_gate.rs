//! Stage: a client's SaslHandshake and SaslAuthenticate requests, by mode.
//!
//! - `passthrough`: they go to the broker like any request, so the client
//!   logs in upstream with its own identity. That cannot work when the
//!   proxy logs in itself (the upstream connection is already
//!   authenticated), so then they are refused with a log line saying why.
//! - `terminate`: the proxy answers them from the credentials file. Until
//!   the login succeeds only ApiVersions, SaslHandshake and SaslAuthenticate
//!   are accepted; anything else closes the connection. A failed login is
//!   answered with SASL_AUTHENTICATION_FAILED and the connection closed, as
//!   a broker does. Unframed SASL (SaslHandshake v0, followed by raw
//!   tokens) is refused: every client since Kafka 1.0 frames its tokens.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use kafka_protocol::messages::{
    ApiKey, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

use crate::kafka::auth::credentials::Credentials;
use crate::kafka::auth::sasl_server::{ClientLogin, Step};
use crate::kafka::relay::chain::{
    ConnectionInfo, LocalAnswer, Refusal, Request, RequestAction, Stage, StageError, StageState,
};
use crate::kafka::wire::codes::{SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};
use crate::kafka::wire::frame::{self, Frame, RequestHeaderPeek};

/// The client SASL stage.
pub struct SaslGate {
    /// Users and keys when the proxy terminates client SASL; `None` relays
    /// clients' SASL requests (pass-through).
    credentials: Option<Arc<Credentials>>,
    /// Whether the proxy logs in to the brokers itself.
    proxy_logs_in: bool,
}

impl SaslGate {
    pub fn new(credentials: Option<Arc<Credentials>>, proxy_logs_in: bool) -> Self {
        SaslGate {
            credentials,
            proxy_logs_in,
        }
    }
}

impl Stage for SaslGate {
    fn name(&self) -> &'static str {
        "sasl_gate"
    }

    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        // Pass-through with no login of the proxy's own: nothing to judge.
        self.credentials.is_some() || (self.proxy_logs_in && is_sasl(header.api_key))
    }

    fn on_request<'a>(
        &'a self,
        conn: &'a ConnectionInfo,
        state: &'a mut StageState,
        request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        let login = self
            .credentials
            .as_ref()
            .map(|c| state.get_or_insert_with(|| ClientLogin::new(Arc::clone(c))));
        let version = request.header.api_version;
        let answer = |frame| LocalAnswer {
            frame,
            api_version: version,
        };
        let mut login = login;
        let decision = decide(
            &request.header,
            &request.frame.body(),
            login.as_deref_mut(),
            self.proxy_logs_in,
        );
        if let Some(user) = login.and_then(|l| l.user()) {
            conn.set_principal(user);
        }
        let action = match decision {
            SaslDecision::Forward => RequestAction::Forward(request),
            SaslDecision::Answer(frame) => RequestAction::Answer(answer(frame)),
            SaslDecision::AnswerAndClose(frame) => RequestAction::AnswerAndClose(answer(frame)),
            SaslDecision::Refuse(reason) => RequestAction::Refuse(Refusal {
                label: "unauthenticated",
                message: format!("client refused: {reason}"),
            }),
        };
        Box::pin(async move { Ok(action) })
    }
}

/// What the session does with a request, as far as SASL is concerned.
pub enum SaslDecision {
    /// Not a SASL matter: relay it.
    Forward,
    /// Answer the client with this frame and go on.
    Answer(Frame),
    /// Answer with this frame, then close the connection.
    AnswerAndClose(Frame),
    /// Close the connection; the reason is logged.
    Refuse(String),
}

pub fn is_sasl(api_key: i16) -> bool {
    api_key == ApiKey::SaslHandshake as i16 || api_key == ApiKey::SaslAuthenticate as i16
}

/// Decides about one request. `login` is `Some` when the proxy terminates
/// client SASL; `proxy_logs_in` is whether it has upstream credentials.
pub fn decide(
    header: &RequestHeaderPeek,
    body: &Bytes,
    login: Option<&mut ClientLogin>,
    proxy_logs_in: bool,
) -> SaslDecision {
    let Some(login) = login else {
        if is_sasl(header.api_key) && proxy_logs_in {
            return SaslDecision::Refuse(
                "client SASL is not relayed while the proxy logs in to the broker itself; \
                 set KAFSCALE_LFS_PROXY_CLIENT_SASL_MODE=terminate"
                    .into(),
            );
        }
        return SaslDecision::Forward;
    };
    let mut request = body.slice(header.body_offset.unwrap_or(body.len()).min(body.len())..);
    match ApiKey::try_from(header.api_key) {
        Ok(ApiKey::ApiVersions) => SaslDecision::Forward,
        Ok(ApiKey::SaslHandshake) => {
            if header.api_version == 0 {
                return SaslDecision::Refuse(
                    "unframed SASL (SaslHandshake v0) is not supported; use a client that sends SaslAuthenticate (Kafka 1.0 or later)".into(),
                );
            }
            let Ok(handshake) = SaslHandshakeRequest::decode(&mut request, header.api_version)
            else {
                return SaslDecision::Refuse("malformed SaslHandshake".into());
            };
            let mechanism = handshake.mechanism.to_string();
            let (code, offered) = match login.handshake(&mechanism) {
                Ok(()) => (
                    0,
                    crate::kafka::auth::sasl_server::OFFERED
                        .map(|m| m.name())
                        .to_vec(),
                ),
                Err(offered) => (UNSUPPORTED_SASL_MECHANISM, offered),
            };
            let response = SaslHandshakeResponse::default()
                .with_error_code(code)
                .with_mechanisms(offered.into_iter().map(StrBytes::from_static_str).collect());
            match encode(header, &response) {
                Some(frame) if code == 0 => SaslDecision::Answer(frame),
                Some(frame) => SaslDecision::AnswerAndClose(frame),
                None => SaslDecision::Refuse("cannot encode SaslHandshake response".into()),
            }
        }
        Ok(ApiKey::SaslAuthenticate) => {
            let Ok(authenticate) =
                SaslAuthenticateRequest::decode(&mut request, header.api_version)
            else {
                return SaslDecision::Refuse("malformed SaslAuthenticate".into());
            };
            let (response, close) = match login.authenticate(&authenticate.auth_bytes) {
                Step::Continue(bytes) => (
                    SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                    false,
                ),
                Step::Done { user, reply } => {
                    tracing::info!(user, "client authenticated");
                    (
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply)),
                        false,
                    )
                }
                Step::Failed(message) => {
                    tracing::warn!(reason = %message, client_id = ?header.client_id, "client SASL login refused");
                    (
                        SaslAuthenticateResponse::default()
                            .with_error_code(SASL_AUTHENTICATION_FAILED)
                            .with_error_message(Some(StrBytes::from_string(message))),
                        true,
                    )
                }
            };
            match encode(header, &response) {
                Some(frame) if close => SaslDecision::AnswerAndClose(frame),
                Some(frame) => SaslDecision::Answer(frame),
                None => SaslDecision::Refuse("cannot encode SaslAuthenticate response".into()),
            }
        }
        _ if login.user().is_none() => SaslDecision::Refuse(format!(
            "{} request before SASL authentication",
            crate::metrics::api_label(header.api_key)
        )),
        _ => SaslDecision::Forward,
    }
}

fn encode<R: Encodable + HeaderVersion>(header: &RequestHeaderPeek, response: &R) -> Option<Frame> {
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    frame::encode_response(
        &response_header,
        R::header_version(header.api_version),
        response,
        header.api_version,
    )
    .ok()
}
