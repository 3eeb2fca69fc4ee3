//! The interception chain: the ordered stages a session runs each request
//! and response through (Kroxylicious filters and shotover transforms, sized
//! for this project).
//!
//! A [`Stage`] is built once at start-up and shared by every connection. For
//! each request, every stage that [wants](Stage::wants_request) it, in
//! order, decides:
//!
//! - forward it (the same bytes, or a rewrite), optionally leaving an
//!   [`Owing`] that settles the response when it comes (the LFS offload
//!   deletes objects whose partitions the broker refused);
//! - answer it itself ([`RequestAction::Answer`]), so nothing goes upstream;
//! - answer and then close the connection, or refuse it (close at once).
//!
//! Responses pass every stage that [wants](Stage::wants_response) their API
//! and version, in order, after the request's `Owing` settled them. A
//! request no stage wants is forwarded as the same bytes, and its response
//! comes back as the same bytes: the chain costs one cheap check per stage.
//!
//! Rules a stage keeps:
//! - it knows nothing of the session (queues, order, back-pressure) and
//!   never reads or writes a socket; the session does that;
//! - what it keeps per connection goes in [`StageState`] under its own type;
//! - it returns errors instead of panicking; a request it cannot decode is
//!   usually best forwarded as it is, for the broker to judge.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use kafka_protocol::messages::ApiKey;

use crate::kafka::wire::frame::{self, Frame, RequestHeaderPeek};

/// One interception stage. Every method has a default that leaves traffic
/// alone, so a stage implements only what it acts on.
pub trait Stage: Send + Sync + 'static {
    /// Short name for logs and errors.
    fn name(&self) -> &'static str;

    /// Whether [`Stage::on_request`] must see this request. Called for every
    /// request: keep it cheap (the API key and version are at hand).
    fn wants_request(&self, _header: &RequestHeaderPeek) -> bool {
        false
    }

    /// Acts on a request this stage wants.
    fn on_request<'a>(
        &'a self,
        _conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        Box::pin(async move { Ok(RequestAction::Forward(request)) })
    }

    /// Whether [`Stage::on_response`] must see responses of this API and
    /// version, decoded whole.
    fn wants_response(&self, _api_key: i16, _api_version: i16) -> bool {
        false
    }

    /// Whether a large Fetch response this stage wants may instead be
    /// streamed to the client as it arrives, unseen by the stage (see
    /// `fetch_stream`: it hides KIP-951 node endpoints itself).
    fn lets_fetch_stream(&self) -> bool {
        false
    }

    /// Acts on a response this stage wants.
    fn on_response<'a>(
        &'a self,
        _conn: &'a ConnectionInfo,
        response: Response,
    ) -> BoxFuture<'a, Result<Frame, StageError>> {
        Box::pin(async move { Ok(response.frame) })
    }
}

/// A request on its way through the chain.
pub struct Request {
    pub header: RequestHeaderPeek,
    /// What will be forwarded: the client's bytes until a stage rewrites it.
    pub frame: Frame,
    /// Settles the response; pushed by stages that changed the request.
    pub owing: Vec<Box<dyn Owing>>,
}

impl Request {
    /// Whether the client expects a response (false only for Produce with
    /// acks=0). A request whose acks cannot be read counts as expecting one:
    /// the session rejects such a frame itself.
    pub fn expects_response(&self) -> bool {
        frame::expects_response(&self.header, &self.frame.body()).unwrap_or(true)
    }
}

/// A response on its way through the chain.
pub struct Response {
    pub api_key: i16,
    pub api_version: i16,
    pub frame: Frame,
}

/// What a stage decided about a request.
pub enum RequestAction {
    /// Go on to the next stage, then upstream.
    Forward(Request),
    /// The proxy answers; nothing goes upstream. Dropped when the request
    /// expects no response (acks=0).
    Answer(LocalAnswer),
    /// Answer, deliver whatever is still owed, then close the connection.
    AnswerAndClose(LocalAnswer),
    /// Close the connection at once.
    Refuse(Refusal),
}

/// A response made by the proxy.
pub struct LocalAnswer {
    pub frame: Frame,
    /// The version the answer is encoded in (for captures).
    pub api_version: i16,
}

/// Why a connection is closed.
#[derive(Debug)]
pub struct Refusal {
    /// Reason label of `kafka_lfs_proxy_frame_rejections_total`.
    pub label: &'static str,
    pub message: String,
}

/// What a forwarded request leaves to settle with its response.
pub trait Owing: Send {
    /// Applies the response: returns what the client gets. Cleans up after
    /// itself when it fails. It may wait (the Fetch rehydration reads the
    /// objects the response names); later responses wait behind it, since
    /// responses go to the client in order.
    fn settle(
        self: Box<Self>,
        response: Frame,
        api_version: i16,
    ) -> BoxFuture<'static, Result<Frame, StageError>>;

    /// No response will come (the connection is gone).
    fn abandon(self: Box<Self>);
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StageError {
    pub stage: &'static str,
    pub message: String,
}

impl StageError {
    pub fn new(stage: &'static str, message: impl Into<String>) -> Self {
        StageError {
            stage,
            message: message.into(),
        }
    }
}

/// Who is on the other end, for logs.
pub struct ConnectionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    client_id: std::sync::Mutex<Option<String>>,
    /// The user the proxy authenticated (client SASL terminated here).
    principal: std::sync::OnceLock<String>,
}

impl ConnectionInfo {
    pub fn new(id: u64, peer: SocketAddr) -> Self {
        ConnectionInfo {
            id,
            peer,
            client_id: std::sync::Mutex::new(None),
            principal: std::sync::OnceLock::new(),
        }
    }

    /// The client id of the latest request, `-` before the first.
    pub fn client_id(&self) -> String {
        self.client_id
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| "-".into())
    }

    /// The SASL user this connection logged in as, when the proxy
    /// terminates client SASL; `None` otherwise or before the login.
    pub fn principal(&self) -> Option<&str> {
        self.principal.get().map(String::as_str)
    }

    /// Records the login. A connection logs in once: a re-authentication
    /// must keep the user (the SASL stage refuses another).
    pub(crate) fn set_principal(&self, user: &str) {
        let _ = self.principal.set(user.to_owned());
    }

    pub(crate) fn set_client_id(&self, client_id: Option<&str>) {
        if let Ok(mut id) = self.client_id.lock() {
            if id.as_deref() != client_id {
                *id = client_id.map(str::to_owned);
            }
        }
    }
}

/// What stages keep per connection, one value per type.
#[derive(Default)]
pub struct StageState(HashMap<TypeId, Box<dyn Any + Send>>);

impl StageState {
    /// This connection's value of type `T`, made by `init` on first use.
    pub fn get_or_insert_with<T: Send + 'static>(&mut self, init: impl FnOnce() -> T) -> &mut T {
        self.0
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(init()))
            .downcast_mut()
            .expect("a StageState entry holds the type it is keyed by")
    }
}

/// The stages every session runs, in order. Built once at start-up.
#[derive(Clone, Default)]
pub struct Chain {
    stages: Vec<Arc<dyn Stage>>,
}

impl Chain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage after those already there.
    pub fn with(mut self, stage: impl Stage) -> Self {
        self.stages.push(Arc::new(stage));
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Runs a request through every stage that wants it.
    pub async fn on_request(
        &self,
        conn: &ConnectionInfo,
        state: &mut StageState,
        mut request: Request,
    ) -> Result<RequestAction, StageError> {
        for stage in &self.stages {
            if !stage.wants_request(&request.header) {
                continue;
            }
            match stage.on_request(conn, state, request).await? {
                RequestAction::Forward(next) => request = next,
                decided => return Ok(decided),
            }
        }
        Ok(RequestAction::Forward(request))
    }

    /// Whether some stage must see this response whole.
    pub fn wants_response(&self, api_key: i16, api_version: i16) -> bool {
        self.stages
            .iter()
            .any(|s| s.wants_response(api_key, api_version))
    }

    /// Whether a large Fetch response of this version may be streamed past
    /// the chain: every stage that wants it lets it stream.
    pub fn lets_fetch_stream(&self, api_version: i16) -> bool {
        self.stages
            .iter()
            .filter(|s| s.wants_response(ApiKey::Fetch as i16, api_version))
            .all(|s| s.lets_fetch_stream())
    }

    /// Runs a response through every stage that wants it.
    pub async fn on_response(
        &self,
        conn: &ConnectionInfo,
        api_key: i16,
        api_version: i16,
        mut frame: Frame,
    ) -> Result<Frame, StageError> {
        for stage in &self.stages {
            if !stage.wants_response(api_key, api_version) {
                continue;
            }
            let response = Response {
                api_key,
                api_version,
                frame,
            };
            frame = stage.on_response(conn, response).await?;
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter;
    struct Seen(u32);

    impl Stage for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
            header.api_key == ApiKey::Metadata as i16
        }
        fn on_request<'a>(
            &'a self,
            _conn: &'a ConnectionInfo,
            state: &'a mut StageState,
            request: Request,
        ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
            state.get_or_insert_with(|| Seen(0)).0 += 1;
            Box::pin(async move { Ok(RequestAction::Forward(request)) })
        }
    }

    fn request(api_key: ApiKey) -> Request {
        let header = kafka_protocol::messages::RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(1)
            .with_correlation_id(7);
        let mut body = bytes::BytesMut::new();
        kafka_protocol::protocol::Encodable::encode(&header, &mut body, 1).unwrap();
        let frame = Frame::from_body(&body);
        Request {
            header: frame::peek_request_header(&frame.body()).unwrap(),
            frame,
            owing: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_request_no_stage_wants_keeps_its_bytes() {
        let chain = Chain::new().with(Counter);
        let conn = ConnectionInfo::new(1, "127.0.0.1:1".parse().unwrap());
        let mut state = StageState::default();
        let sent = request(ApiKey::ListOffsets);
        let wire = sent.frame.wire().clone();
        let RequestAction::Forward(out) = chain.on_request(&conn, &mut state, sent).await.unwrap()
        else {
            panic!("forwarded");
        };
        // The same allocation, not a copy.
        assert_eq!(out.frame.wire().as_ptr(), wire.as_ptr());
        assert!(state.0.is_empty());
        chain
            .on_request(&conn, &mut state, request(ApiKey::Metadata))
            .await
            .unwrap();
        chain
            .on_request(&conn, &mut state, request(ApiKey::Metadata))
            .await
            .unwrap();
        assert_eq!(state.get_or_insert_with(|| Seen(0)).0, 2);
        assert!(!chain.wants_response(ApiKey::Metadata as i16, 1));
        assert!(chain.lets_fetch_stream(16));
    }
}
