//! Stage: the LFS offload on Produce. Every record tagged `LFS_BLOB` has its
//! value stored and replaced by an envelope (`lfs::rewrite`); partitions the
//! proxy could not offload are answered by the proxy, merged with the
//! broker's answer for the rest (`lfs::response`).
//!
//! What a rewritten request leaves to settle ([`StoredObjects`]): when the
//! broker refuses a partition, or the answer never comes, the objects of
//! that partition are deleted, since no envelope in Kafka points to them.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kafka_protocol::messages::ApiKey;

use crate::kafka::relay::chain::{
    ConnectionInfo, LocalAnswer, Owing, Request, RequestAction, Stage, StageError, StageState,
};
use crate::kafka::wire::codes::CORRUPT_MESSAGE;
use crate::kafka::wire::frame::{Frame, RequestHeaderPeek};
use crate::kafka::wire::produce_answer::FailedPartition;
use crate::kafka::wire::produce_outline;
use crate::lfs::response::{self, LfsOwed};
use crate::lfs::rewrite;
use crate::lfs::Lfs;

pub struct LfsOffload {
    lfs: Arc<Lfs>,
}

impl LfsOffload {
    pub fn new(lfs: Arc<Lfs>) -> Self {
        LfsOffload { lfs }
    }
}

impl Stage for LfsOffload {
    fn name(&self) -> &'static str {
        "lfs_offload"
    }

    fn wants_request(&self, header: &RequestHeaderPeek) -> bool {
        header.api_key == ApiKey::Produce as i16
    }

    fn on_request<'a>(
        &'a self,
        conn: &'a ConnectionInfo,
        _state: &'a mut StageState,
        mut request: Request,
    ) -> BoxFuture<'a, Result<RequestAction, StageError>> {
        Box::pin(async move {
            let rewritten = match rewrite::rewrite_produce(
                &self.lfs,
                &request.header,
                &request.frame,
            )
            .await
            {
                Ok(Some(rewritten)) => rewritten,
                Ok(None) => return Ok(RequestAction::Forward(request)),
                Err(error @ rewrite::RewriteError::Decode { .. }) => {
                    return self.undecodable(conn, request, error)
                }
                Err(error) => {
                    // The proxy's own re-encoding failed: not the
                    // client's fault; the broker judges the original.
                    tracing::warn!(connection = conn.id, %error, "Produce not rewritten; forwarding as is");
                    return Ok(RequestAction::Forward(request));
                }
            };
            let acks0 = !request.expects_response();
            for f in &rewritten.failed {
                tracing::warn!(
                    connection = conn.id,
                    client_id = %conn.client_id(),
                    topic = %f.topic,
                    partition = f.partition,
                    error_code = f.error_code,
                    reason = %f.message,
                    acks0,
                    "LFS partition refused"
                );
            }
            let owed = LfsOwed {
                uploads: rewritten.uploads,
                failed: rewritten.failed,
            };
            let Some(frame) = rewritten.frame else {
                // Every partition failed in the proxy: it answers itself.
                let header = &request.header;
                let frame = response::failed_response(
                    header.correlation_id,
                    header.api_version,
                    &owed.failed,
                )
                .map_err(|e| StageError::new(self.name(), e))?;
                return Ok(RequestAction::Answer(LocalAnswer {
                    frame,
                    api_version: header.api_version,
                }));
            };
            request.frame = frame;
            // acks=0: no response will settle the objects, and the records
            // may well reach the broker, so they are kept (a record the
            // broker then drops leaves its object: fire-and-forget's loss).
            if !acks0 {
                request.owing.push(Box::new(StoredObjects {
                    owed: Some(owed),
                    lfs: Arc::clone(&self.lfs),
                }));
            }
            Ok(RequestAction::Forward(request))
        })
    }
}

impl LfsOffload {
    /// A Produce that does not decode: every partition it names is
    /// answered `CORRUPT_MESSAGE` on an open connection (brokers drop the
    /// connection on such a frame, and the producer retries the same bytes
    /// forever). A request that names no partition is left to the broker.
    fn undecodable(
        &self,
        conn: &ConnectionInfo,
        request: Request,
        error: rewrite::RewriteError,
    ) -> Result<RequestAction, StageError> {
        let header = &request.header;
        let body = request.frame.body();
        let outlined = header
            .body_offset
            .map(|offset| produce_outline::outline(&body[offset..], header.api_version))
            .unwrap_or_default();
        if outlined.is_empty() {
            tracing::warn!(connection = conn.id, client_id = %conn.client_id(), %error, "Produce names no partition the proxy can read; forwarding as is");
            return Ok(RequestAction::Forward(request));
        }
        let failed: Vec<FailedPartition> = outlined
            .into_iter()
            .map(|p| {
                let message = if p.length_mismatch {
                    "the records length does not match the bytes that follow (librdkafka writes 0 for a record batch of 256 MiB or more at Produce v9+: send smaller batches)".to_owned()
                } else {
                    format!("the request could not be decoded: {error}")
                };
                tracing::warn!(
                    connection = conn.id,
                    client_id = %conn.client_id(),
                    api_version = header.api_version,
                    topic = %p.topic,
                    partition = p.partition,
                    reason = %message,
                    "Produce refused: CORRUPT_MESSAGE"
                );
                FailedPartition {
                    topic: p.topic,
                    partition: p.partition,
                    error_code: CORRUPT_MESSAGE,
                    message,
                    record_errors: Vec::new(),
                }
            })
            .collect();
        let frame = response::failed_response(header.correlation_id, header.api_version, &failed)
            .map_err(|e| StageError::new(self.name(), e))?;
        Ok(RequestAction::Answer(LocalAnswer {
            frame,
            api_version: header.api_version,
        }))
    }
}

/// Objects stored for a forwarded Produce, settled by its response. Dropped
/// unsettled (the session was closed at the shutdown deadline, or the
/// request abandoned), every object is an orphan and is deleted.
struct StoredObjects {
    owed: Option<LfsOwed>,
    lfs: Arc<Lfs>,
}

impl Owing for StoredObjects {
    fn settle(
        self: Box<Self>,
        response: Frame,
        api_version: i16,
    ) -> BoxFuture<'static, Result<Frame, StageError>> {
        let settled = (*self).merge(response, api_version);
        Box::pin(async move { settled })
    }

    fn abandon(self: Box<Self>) {
        // Dropping does it.
    }
}

impl StoredObjects {
    fn merge(mut self, response: Frame, api_version: i16) -> Result<Frame, StageError> {
        let owed = self.owed.take().unwrap_or_default();
        match response::merge_response(&response, api_version, &owed) {
            Ok((merged, orphans)) => {
                delete_orphans(&self.lfs, orphans);
                Ok(merged)
            }
            Err(e) => {
                delete_orphans(&self.lfs, owed.all_keys());
                Err(StageError::new(
                    "lfs_offload",
                    format!("Produce response: {e}"),
                ))
            }
        }
    }
}

impl Drop for StoredObjects {
    fn drop(&mut self) {
        if let Some(owed) = self.owed.take() {
            delete_orphans(&self.lfs, owed.all_keys());
        }
    }
}

/// Deletes, in the background, objects no envelope points to; what storage
/// refuses is retried by the store's cleanup.
fn delete_orphans(lfs: &Arc<Lfs>, keys: Vec<String>) {
    if keys.is_empty() {
        return;
    }
    tracing::info!(
        count = keys.len(),
        "deleting LFS objects whose envelopes did not reach Kafka"
    );
    lfs.store.leave_orphans(keys);
}
