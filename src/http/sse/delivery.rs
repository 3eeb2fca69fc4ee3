//! What a record becomes in a stream.
//!
//! - A record the route's filter rejects: nothing (the position still
//!   moves past it).
//! - A tombstone (null value): event type `delete`, data the key (`null`
//!   for a keyless one).
//! - Any other record: the route's event type, data the value. The format
//!   carries text only: a value that is not UTF-8 is sent base64-encoded
//!   with the event type `<type>.base64`.
//! - An LFS envelope: as stored (`lfs: envelope`), with a `download`
//!   object naming the `/lfs/download` request that fetches it (`link`),
//!   or the verified object itself when it is at most `inline_max_bytes`
//!   (`inline`; larger ones as `link`). An object that is missing or does
//!   not match its envelope is not sent: the event type is `lfs_error` and
//!   the data names the key and reason. Storage that cannot be reached
//!   ends the stream before the record, so a reconnect retries it.

use base64::Engine;

use crate::kafka::client::records::ConsumedRecord;
use crate::lfs::resolve::{read_verified, EnvelopeRef, EnvelopeScope};
use crate::lfs::store::BlobStore;
use crate::rr::stream_routes::{LfsDelivery, RecordFilter, StreamRoute};

/// An event to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_type: String,
    pub data: String,
}

/// What to do with one record.
#[derive(Debug)]
pub enum Delivery {
    Send(Event),
    /// The filter does not want it.
    Skip,
    /// Storage is unreachable: end the stream before this record.
    Unavailable(String),
}

/// Where LFS objects are read from, for `link` and `inline`.
#[derive(Clone)]
pub struct Objects {
    pub store: BlobStore,
    pub scope: EnvelopeScope,
}

pub async fn deliver(
    record: &ConsumedRecord,
    route: &StreamRoute,
    filter: &RecordFilter,
    objects: &Objects,
) -> Delivery {
    if !filter.accepts(record.key.as_deref(), |name| record.header(name)) {
        return Delivery::Skip;
    }
    let Some(value) = &record.value else {
        let data = match &record.key {
            Some(key) => text_or_base64(key).0,
            None => "null".to_owned(),
        };
        return Delivery::Send(Event {
            event_type: "delete".to_owned(),
            data,
        });
    };
    if route.lfs != LfsDelivery::Envelope {
        if let Ok(envelope) = objects.scope.recognise(value, Some(&record.topic)) {
            return deliver_object(value, &envelope, route, objects).await;
        }
    }
    Delivery::Send(payload_event(&route.event, value))
}

fn payload_event(event_type: &str, payload: &[u8]) -> Event {
    let (data, is_text) = text_or_base64(payload);
    Event {
        event_type: if is_text {
            event_type.to_owned()
        } else {
            format!("{event_type}.base64")
        },
        data,
    }
}

/// The bytes as text when they are UTF-8, else base64 (and `false`).
fn text_or_base64(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), true),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            false,
        ),
    }
}

async fn deliver_object(
    value: &[u8],
    envelope: &EnvelopeRef,
    route: &StreamRoute,
    objects: &Objects,
) -> Delivery {
    if route.lfs == LfsDelivery::Inline && envelope.size <= route.inline_max_bytes {
        return match read_verified(&objects.store, envelope).await {
            Ok(object) => Delivery::Send(payload_event(&route.event, &object)),
            Err(e) if e.is_retriable() => Delivery::Unavailable(e.to_string()),
            Err(e) => {
                tracing::error!(key = %envelope.key, reason = e.reason(), error = %e, "SSE: LFS object not sent");
                Delivery::Send(Event {
                    event_type: "lfs_error".to_owned(),
                    data: serde_json::json!({"key": envelope.key, "reason": e.reason()})
                        .to_string(),
                })
            }
        };
    }
    Delivery::Send(Event {
        event_type: route.event.clone(),
        data: link(value, envelope).to_string(),
    })
}

/// The envelope as stored, with the request that downloads its object
/// verified.
fn link(stored: &[u8], envelope: &EnvelopeRef) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_slice(stored).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "download".to_owned(),
            serde_json::json!({
                "method": "POST",
                "path": "/lfs/download",
                "body": {
                    "bucket": envelope.bucket,
                    "key": envelope.key,
                    "mode": "stream",
                    "integrity": {"sha256": envelope.sha256, "size": envelope.size},
                },
            }),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_are_not_text_are_base64() {
        let e = payload_event("reading", b"{\"t\":1}");
        assert_eq!(
            e,
            Event {
                event_type: "reading".into(),
                data: "{\"t\":1}".into()
            }
        );
        let e = payload_event("reading", &[0xff, 0x00]);
        assert_eq!(
            e,
            Event {
                event_type: "reading.base64".into(),
                data: "/wA=".into()
            }
        );
    }
}
