//! Logging in to a broker with the proxy's own credentials: SaslHandshake
//! v1 names the mechanism, then SaslAuthenticate v1 carries the exchange
//! inside Kafka frames (KIP-152), so a failure arrives as an error code and
//! message rather than a dropped connection. PLAIN takes one round,
//! SCRAM-SHA-256/512 two. A broker may answer with a session lifetime
//! (KIP-368): the connection must authenticate again before it ends.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::kafka::auth::scram::{ScramClient, ScramError, ScramHash};
use crate::kafka::wire::call::{self, ClientError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "SCRAM-SHA-256" => Some(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The proxy's login; the password never appears in `Debug` output.
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("SASL exchange failed: {0}")]
    Io(#[from] ClientError),
    #[error("broker does not offer {mechanism} (it offers {offered:?})")]
    Unsupported {
        mechanism: &'static str,
        offered: Vec<String>,
    },
    #[error("broker refused the SaslHandshake: {0}")]
    Handshake(String),
    #[error("authentication failed: {0}")]
    Failed(String),
    #[error("SCRAM: {0}")]
    Scram(#[from] ScramError),
}

const HANDSHAKE_VERSION: i16 = 1;
const AUTHENTICATE_VERSION: i16 = 1;

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"))
}

/// How SASL requests reach the broker: straight on a fresh connection, or
/// between a relayed client's requests when re-authenticating.
pub(crate) trait SaslExchange {
    async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError>;
}

/// SASL on a connection nobody else uses yet.
pub(crate) struct DirectExchange<'a, S> {
    pub stream: &'a mut S,
    pub next_id: i32,
    pub max_frame_size: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SaslExchange for DirectExchange<'_, S> {
    async fn call<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError> {
        self.next_id = self.next_id.wrapping_add(1);
        call::round_trip(
            self.stream,
            self.next_id,
            version,
            request,
            self.max_frame_size,
        )
        .await
    }
}

/// Authenticates and returns the session lifetime the broker set, if any.
pub(crate) async fn authenticate<E: SaslExchange>(
    exchange: &mut E,
    credentials: &SaslCredentials,
) -> Result<Option<Duration>, SaslError> {
    let mechanism = credentials.mechanism.name();
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let answer = exchange.call(HANDSHAKE_VERSION, &handshake).await?;
    match answer.error_code {
        0 => {}
        33 => {
            return Err(SaslError::Unsupported {
                mechanism,
                offered: answer.mechanisms.iter().map(|m| m.to_string()).collect(),
            })
        }
        code => return Err(SaslError::Handshake(error_name(code))),
    }
    let last = match credentials.mechanism {
        Mechanism::Plain => {
            let token = format!("\0{}\0{}", credentials.username, credentials.password);
            step(exchange, token.into_bytes()).await?
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let hash = if credentials.mechanism == Mechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let scram = ScramClient::new(
                hash,
                &credentials.username,
                &credentials.password,
                ScramClient::random_nonce(),
            );
            let first = step(exchange, scram.client_first().into_bytes()).await?;
            let server_first = String::from_utf8_lossy(&first.auth_bytes).into_owned();
            let (client_final, signature) = scram.client_final(&server_first)?;
            let last = step(exchange, client_final.into_bytes()).await?;
            ScramClient::verify_server_final(
                &String::from_utf8_lossy(&last.auth_bytes),
                &signature,
            )?;
            last
        }
    };
    Ok((last.session_lifetime_ms > 0)
        .then(|| Duration::from_millis(last.session_lifetime_ms as u64)))
}

/// One SaslAuthenticate round; an error code is an authentication failure.
async fn step<E: SaslExchange>(
    exchange: &mut E,
    bytes: Vec<u8>,
) -> Result<SaslAuthenticateResponse, SaslError> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let answer = exchange.call(AUTHENTICATE_VERSION, &request).await?;
    if answer.error_code != 0 {
        let message = answer
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        return Err(SaslError::Failed(
            format!("{} {message}", error_name(answer.error_code))
                .trim()
                .to_owned(),
        ));
    }
    Ok(answer)
}

/// Fraction of a SASL session's lifetime (KIP-368) after which the proxy
/// logs in again, on relayed and on its own connections alike.
const REAUTH_AT: f64 = 0.85;

/// When to log in again, given the lifetime the broker granted.
pub fn due_after(lifetime: std::time::Duration) -> std::time::Duration {
    lifetime.mul_f64(REAUTH_AT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_again_at_85_percent() {
        use std::time::Duration;
        assert_eq!(due_after(Duration::from_secs(100)), Duration::from_secs(85));
    }
}
