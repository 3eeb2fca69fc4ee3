//! Stage: Fetch rehydration for the consumers that opted in. Their Fetch
//! responses carry original values instead of envelopes, verified
//! (`lfs::rehydrate`); every other consumer keeps the envelopes and the
//! streaming fast path.
//!
//! Who is rehydrated is decided per request, from what the proxy knows for
//! sure: the client id the request carries (a prefix list), the SASL user
//! the proxy authenticated (terminate mode only: in pass-through the proxy
//! never learns who logged in), or the listener (a second bootstrap address
//! whose clients always get original values).
//!
//! The stage also watches Metadata responses, to learn the topic ids that
//! Fetch v13+ uses instead of names.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kafka_protocol::messages::{ApiKey, MetadataResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, HeaderVersion};

use crate::kafka::relay::chain::{
    ConnectionInfo, Owing, Request, RequestAction, Response, Stage, StageError, StageState,
};
use crate::kafka::wire::frame::{Frame, RequestHeaderPeek};
use crate::lfs::rehydrate::{Consumer, FetchLimits, Rehydrator};

/// Which consumers get original values.
#[derive(Debug, Clone, Default)]
pub struct RehydrateFor {
    /// Every consumer (the rehydrating listener).
    pub everyone: bool,
    pub client_id_prefixes: Vec<String>,
    pub principals: Vec<String>,
}

impl RehydrateFor {
    pub fn is_empty(&self) -> bool {
        !self.everyone && self.client_id_prefixes.is_empty() && self.principals.is_empty()
    }

    pub fn applies(&self, client_id: Option<&str>, principal: Option<&str>) -> bool {
        self.everyone
            || client_id.is_some_and(|id| {
                self.client_id_prefixes
                    .iter()
                    .any(|prefix| id.starts_with(prefix.as_str()))
            })
            || principal.is_some_and(|user| self.principals.iter().any(|p| p == user))
    }
}

pub struct FetchRehydration {
    rehydrator: Arc<Rehydrator>,
    rehydrate_for: RehydrateFor,
}

impl FetchRehydration {
    pub fn new(rehydrator: Arc<Rehydrator>, rehydrate_for: RehydrateFor) -> Self {
        FetchRehydration {
            rehydrator,
            rehydrate_for,
        }
    }
}

/// The first Metadata version that names topic ids.
const TOPIC_IDS_FROM: i16 = 10;

impl Stage for FetchRehydration {
    fn name(&self) -> &'static str {
        "fetch_rehydration"
    }

    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        header.api_key == ApiKey::Fetch as i16 && !self.rehydrate_for.is_empty()
    }

    fn on_request<'a>(
        &'a self,
        conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        mut request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        Box::pin(async move {
            let header = &request.header;
            if !self
                .rehydrate_for
                .applies(header.client_id.as_deref(), conn.principal())
            {
                return Ok(RequestAction::Forward(request));
            }
            let Some(offset) = header.body_offset else {
                return Ok(RequestAction::Forward(request));
            };
            let body = request.frame.body().slice(offset..);
            let limits = match FetchLimits::from_request(body, header.api_version) {
                Ok(limits) => limits,
                // The broker will answer the request it cannot read either.
                Err(error) => {
                    tracing::warn!(connection = conn.id, %error, "Fetch request does not decode; not rehydrated");
                    return Ok(RequestAction::Forward(request));
                }
            };
            request.owing.push(Box::new(RehydrateResponse {
                rehydrator: Arc::clone(&self.rehydrator),
                limits,
                connection: conn.id,
                client_id: header.client_id.clone().unwrap_or_default(),
            }));
            Ok(RequestAction::Forward(request))
        })
    }

    fn wants_response(&self, api_key: i16, api_version: i16) -> bool {
        api_key == ApiKey::Metadata as i16
            && api_version >= TOPIC_IDS_FROM
            && !self.rehydrate_for.is_empty()
    }

    fn lets_fetch_stream(&self) -> bool {
        true
    }

    fn on_response<'a>(
        &'a self,
        _conn: &'a ConnectionInfo,
        response: Response,
    ) -> BoxFuture<'a, Result<Frame, StageError>> {
        Box::pin(async move {
            let version = response.api_version;
            let mut body = response.frame.body();
            let header =
                ResponseHeader::decode(&mut body, MetadataResponse::header_version(version));
            if let Ok(metadata) = header.and_then(|_| MetadataResponse::decode(&mut body, version))
            {
                self.rehydrator.topic_ids().learn(&metadata);
            }
            Ok(response.frame)
        })
    }
}

/// Rehydrates the response of one opted-in Fetch.
struct RehydrateResponse {
    rehydrator: Arc<Rehydrator>,
    limits: FetchLimits,
    connection: u64,
    client_id: String,
}

impl Owing for RehydrateResponse {
    fn settle(
        self: Box<Self>,
        response: Frame,
        api_version: i16,
    ) -> BoxFuture<'static, Result<Frame, StageError>> {
        Box::pin(async move {
            let consumer = Consumer {
                connection: self.connection,
                client_id: &self.client_id,
            };
            self.rehydrator
                .rehydrate(response, api_version, &self.limits, &consumer)
                .await
                .map_err(|e| StageError::new("fetch_rehydration", e.to_string()))
        })
    }

    fn abandon(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_is_rehydrated() {
        let none = RehydrateFor::default();
        assert!(none.is_empty() && !none.applies(Some("legacy-1"), Some("alice")));
        let by = RehydrateFor {
            everyone: false,
            client_id_prefixes: vec!["legacy-".into()],
            principals: vec!["alice".into()],
        };
        assert!(by.applies(Some("legacy-7"), None));
        assert!(!by.applies(Some("modern"), None));
        assert!(!by.applies(None, Some("bob")));
        assert!(by.applies(Some("modern"), Some("alice")));
        let all = RehydrateFor {
            everyone: true,
            ..Default::default()
        };
        assert!(all.applies(None, None));
    }
}
