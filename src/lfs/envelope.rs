//! The claim-check envelope that replaces an offloaded record value, and the
//! object keys blobs are stored under. Field names are KafScale's, so its
//! consumers and SDKs read our envelopes unchanged.
//!
//! ```json
//! {"kfs_lfs":1,"bucket":"b","key":"default/t/lfs/2026/02/05/obj-…","size":10485760,
//!  "sha256":"e3b0…","checksum":"e3b0…","checksum_alg":"sha256",
//!  "content_type":"application/octet-stream","created_at":"2026-02-05T10:30:00Z",
//!  "proxy_id":"lfs-proxy-0"}
//! ```

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope format version written in `kfs_lfs`.
pub const ENVELOPE_VERSION: u32 = 1;

/// Content type when the record carries no `content-type` header.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub kfs_lfs: u32,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex; always present.
    pub sha256: String,
    /// The checksum the producer asked for (equal to `sha256` by default).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub checksum_alg: Option<String>,
    pub content_type: String,
    /// RFC 3339, UTC, whole seconds.
    pub created_at: String,
    pub proxy_id: String,
}

impl Envelope {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }
}

/// `{namespace}/{topic}/lfs/{yyyy}/{mm}/{dd}/obj-{uuid}`, dated in UTC.
pub fn object_key(namespace: &str, topic: &str, at: DateTime<Utc>, id: Uuid) -> String {
    format!(
        "{namespace}/{topic}/lfs/{:04}/{:02}/{:02}/obj-{id}",
        at.year(),
        at.month(),
        at.day()
    )
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The id of the object for a record.
///
/// A record from an idempotent producer is identified by its producer id,
/// epoch, partition and sequence number; the same record sent again after a
/// lost response gets the same id, so the retry overwrites its own object
/// instead of leaving a second one. Other records get a random id.
pub fn object_id(record: Option<RecordIdentity<'_>>) -> Uuid {
    use sha2::{Digest, Sha256};
    match record {
        Some(r) => {
            let mut h = Sha256::new();
            h.update(b"kafka-lfs-proxy/object-id/v1");
            h.update(r.topic.as_bytes());
            h.update([0]);
            h.update(r.partition.to_be_bytes());
            h.update(r.producer_id.to_be_bytes());
            h.update(r.producer_epoch.to_be_bytes());
            h.update(r.sequence.to_be_bytes());
            let digest = h.finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        }
        None => Uuid::new_v4(),
    }
}

/// What makes an idempotent record unique.
#[derive(Debug, Clone, Copy)]
pub struct RecordIdentity<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn key_and_time_formats() {
        let at = Utc.with_ymd_and_hms(2026, 2, 5, 10, 30, 0).unwrap();
        let id = Uuid::nil();
        assert_eq!(
            object_key("default", "demo-topic", at, id),
            "default/demo-topic/lfs/2026/02/05/obj-00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(rfc3339(at), "2026-02-05T10:30:00Z");
    }

    #[test]
    fn envelope_has_exactly_the_contract_fields() {
        let e = Envelope {
            kfs_lfs: ENVELOPE_VERSION,
            bucket: "b".into(),
            key: "k".into(),
            size: 3,
            sha256: "ab".into(),
            checksum: None,
            checksum_alg: None,
            content_type: DEFAULT_CONTENT_TYPE.into(),
            created_at: "2026-02-05T10:30:00Z".into(),
            proxy_id: "p".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bucket",
                "content_type",
                "created_at",
                "key",
                "kfs_lfs",
                "proxy_id",
                "sha256",
                "size"
            ]
        );
        assert_eq!(v["kfs_lfs"], 1);
    }

    #[test]
    fn idempotent_records_get_stable_ids() {
        let r = RecordIdentity {
            topic: "t",
            partition: 1,
            producer_id: 7,
            producer_epoch: 0,
            sequence: 42,
        };
        assert_eq!(object_id(Some(r)), object_id(Some(r)));
        assert_ne!(
            object_id(Some(r)),
            object_id(Some(RecordIdentity { sequence: 43, ..r }))
        );
        assert_ne!(object_id(None), object_id(None));
    }
}
