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
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite};

use super::client::{self, ClientError};
use super::scram::{ScramClient, ScramError, ScramHash};

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

/// Authenticates `stream` and returns the session lifetime the broker set,
/// if any. `correlation` supplies ids for the proxy's own requests.
pub async fn authenticate<S>(
    stream: &mut S,
    credentials: &SaslCredentials,
    mut correlation: impl FnMut() -> i32,
    max_frame_size: usize,
) -> Result<Option<Duration>, SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mechanism = credentials.mechanism.name();
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let answer = client::round_trip(
        stream,
        correlation(),
        HANDSHAKE_VERSION,
        &handshake,
        max_frame_size,
    )
    .await?;
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
            step(stream, correlation(), token.into_bytes(), max_frame_size).await?
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
            let first = step(
                stream,
                correlation(),
                scram.client_first().into_bytes(),
                max_frame_size,
            )
            .await?;
            let server_first = String::from_utf8_lossy(&first.auth_bytes).into_owned();
            let (client_final, signature) = scram.client_final(&server_first)?;
            let last = step(
                stream,
                correlation(),
                client_final.into_bytes(),
                max_frame_size,
            )
            .await?;
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
async fn step<S>(
    stream: &mut S,
    correlation_id: i32,
    bytes: Vec<u8>,
    max_frame_size: usize,
) -> Result<SaslAuthenticateResponse, SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let answer = client::round_trip(
        stream,
        correlation_id,
        AUTHENTICATE_VERSION,
        &request,
        max_frame_size,
    )
    .await?;
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
