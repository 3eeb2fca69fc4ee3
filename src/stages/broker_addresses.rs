//! Stage: every response that names brokers is rewritten to name the
//! proxy's listeners instead (the table is in `kafka::relay::addresses`),
//! and each named node is served before the response goes on: a client
//! must never be told an address nobody listens on.
//!
//! Large Fetch responses (v16+ carry KIP-951 node endpoints) may stream
//! past this stage: the Fetch streamer hides their endpoints itself.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kafka_protocol::messages::ApiKey;

use crate::kafka::relay::addresses::{carries_addresses, rewrite_response};
use crate::kafka::relay::chain::{ConnectionInfo, Response, Stage, StageError};
use crate::kafka::relay::listeners::BrokerListeners;
use crate::kafka::wire::frame::Frame;

pub struct BrokerAddresses {
    brokers: Arc<BrokerListeners>,
}

impl BrokerAddresses {
    pub fn new(brokers: Arc<BrokerListeners>) -> Self {
        BrokerAddresses { brokers }
    }
}

impl Stage for BrokerAddresses {
    fn name(&self) -> &'static str {
        "broker_addresses"
    }

    fn wants_response(&self, api_key: i16, api_version: i16) -> bool {
        ApiKey::try_from(api_key).is_ok_and(|api| carries_addresses(api, api_version))
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
            let fail = |message: String| StageError::new(self.name(), message);
            let api = ApiKey::try_from(response.api_key)
                .map_err(|_| fail(format!("unknown API key {}", response.api_key)))?;
            // The frame moves into the rewrite; keep a handle (no copy) to
            // name its first bytes only if the rewrite fails.
            let original = response.frame.clone();
            let rewritten = rewrite_response(
                self.brokers.addresses(),
                api,
                response.api_version,
                response.frame,
            )
            .map_err(|e| fail(format!("{e} (frame starts {})", original.hex_prefix())))?;
            if !rewritten.brokers.is_empty() {
                self.brokers
                    .serve(&rewritten.brokers)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
            Ok(rewritten.frame)
        })
    }
}
