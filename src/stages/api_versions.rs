//! Stage: version negotiation (see `kafka::wire::versions` for the table).
//!
//! - An ApiVersions request newer than the proxy knows is answered by the
//!   proxy, as a broker does: v0, UNSUPPORTED_VERSION, ApiVersions' range.
//! - Any other request outside the offered versions closes the connection:
//!   a client only sends one after ignoring the proxy's ApiVersions answer,
//!   and the proxy cannot classify what it does not know.
//! - ApiVersions responses are narrowed to what the proxy has reviewed (and
//!   offer the proxy's own SASL versions when it terminates client SASL).

use futures_util::future::BoxFuture;
use kafka_protocol::messages::ApiKey;

use crate::kafka::relay::chain::{
    ConnectionInfo, LocalAnswer, Refusal, Request, RequestAction, Response, Stage, StageError,
    StageState,
};
use crate::kafka::wire::frame::{Frame, RequestHeaderPeek};
use crate::kafka::wire::versions;

pub struct ApiVersions {
    /// Whether the proxy answers SASL itself (then it offers its own SASL
    /// versions, whatever the broker's listener has).
    offer_sasl: bool,
}

impl ApiVersions {
    pub fn new(offer_sasl: bool) -> Self {
        ApiVersions { offer_sasl }
    }
}

fn is_too_new_api_versions(header: &RequestHeaderPeek) -> bool {
    header.api_key == ApiKey::ApiVersions as i16
        && header.api_version > versions::max_api_versions_version()
}

impl Stage for ApiVersions {
    fn name(&self) -> &'static str {
        "api_versions"
    }

    /// Only requests it acts on: a too-new ApiVersions, or a version the
    /// proxy does not offer.
    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        is_too_new_api_versions(header) || !versions::is_offered(header.api_key, header.api_version)
    }

    fn on_request<'a>(
        &'a self,
        conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        let header = &request.header;
        let action = if is_too_new_api_versions(header) {
            tracing::debug!(
                connection = conn.id,
                version = header.api_version,
                "answering ApiVersions with UNSUPPORTED_VERSION"
            );
            RequestAction::Answer(LocalAnswer {
                frame: versions::unsupported_version_response(
                    header.correlation_id,
                    versions::max_api_versions_version(),
                ),
                // Encoded in v0 whatever was asked, as a broker does.
                api_version: 0,
            })
        } else {
            RequestAction::Refuse(Refusal {
                label: "not_offered",
                message: format!(
                    "client sent {} v{}, which the proxy does not offer",
                    crate::metrics::api_label(header.api_key),
                    header.api_version
                ),
            })
        };
        Box::pin(async move { Ok(action) })
    }

    fn wants_response(&self, api_key: i16, _api_version: i16) -> bool {
        api_key == ApiKey::ApiVersions as i16
    }

    fn on_response<'a>(
        &'a self,
        _conn: &'a ConnectionInfo,
        response: Response,
    ) -> BoxFuture<'a, Result<Frame, StageError>> {
        let rewritten = versions::rewrite_api_versions_response(
            &response.frame.body(),
            response.api_version,
            self.offer_sasl,
        )
        .map_err(|e| {
            StageError::new(
                self.name(),
                format!("{e} (frame starts {})", response.frame.hex_prefix()),
            )
        });
        Box::pin(async move { rewritten })
    }
}
