//! One request, one response: the proxy's own Kafka calls (health checks
//! and the HTTP sidecar's producer), as opposed to relayed client traffic.
//!
//! The caller owns the connection and sends one request at a time, so the
//! next frame read is the answer; its correlation id is still checked,
//! because a stale answer on a reused connection must not be taken for it.

use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::kafka::wire::frame::{self, Frame, FrameError};

/// Client id the proxy uses for its own requests.
pub const CLIENT_ID: &str = "kafka-lfs-proxy";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot encode request: {0}")]
    Encode(String),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed before the response")]
    Closed,
    #[error("response correlation id {got} does not match request {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("cannot decode response: {0}")]
    Decode(String),
}

/// Sends `request` at `version` and reads its response.
pub async fn round_trip<S, R>(
    stream: &mut S,
    correlation_id: i32,
    version: i16,
    request: &R,
    max_frame_size: usize,
) -> Result<R::Response, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Request,
{
    let frame = encode_request(correlation_id, version, request)?;
    stream.write_all(frame.wire()).await?;
    let response = frame::read_frame(stream, max_frame_size)
        .await?
        .ok_or(ClientError::Closed)?;
    decode_response::<R>(&response, correlation_id, version)
}

/// One request frame from the proxy itself.
pub fn encode_request<R: Request>(
    correlation_id: i32,
    version: i16,
    request: &R,
) -> Result<Frame, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    frame::encode_frame(&header, R::header_version(version), request, version)
        .map_err(|e| ClientError::Encode(e.to_string()))
}

/// The response to a request of type `R`, checked against its correlation id.
pub fn decode_response<R: Request>(
    response: &Frame,
    correlation_id: i32,
    version: i16,
) -> Result<R::Response, ClientError> {
    let mut buf = response.body();
    let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
        .map_err(|e| ClientError::Decode(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::Correlation {
            expected: correlation_id,
            got: header.correlation_id,
        });
    }
    R::Response::decode(&mut buf, version).map_err(|e| ClientError::Decode(e.to_string()))
}
