//! What the cleanup removes: the kinds of leftovers, and their JSON form in
//! the ledger.

use serde::{Deserialize, Serialize};

/// Something in storage the proxy still has to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Leftover {
    /// An S3 multipart upload to abort.
    Multipart { key: String, upload_id: String },
    /// A local-store upload: its staging file beside `key`.
    Staging { key: String },
    /// A completed object no envelope points to, left at `left_at_ms`
    /// (Unix milliseconds): not deleted if written again after that.
    Object { key: String, left_at_ms: i64 },
    /// S3 uploads of `key` whose ids never reached the proxy: a create that
    /// timed out may still be carried out when a stalled store resumes.
    /// Found by listing the key's multipart uploads; those the proxy has
    /// in flight are spared.
    Unconfirmed { key: String },
}

impl Leftover {
    pub fn object(key: &str) -> Self {
        Leftover::Object {
            key: key.to_owned(),
            left_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Leftover::Multipart { key, .. }
            | Leftover::Staging { key }
            | Leftover::Object { key, .. }
            | Leftover::Unconfirmed { key } => key,
        }
    }

    /// The multipart upload id, for log lines.
    pub fn upload_id(&self) -> &str {
        match self {
            Leftover::Multipart { upload_id, .. } => upload_id,
            Leftover::Staging { .. } => "local-staging",
            Leftover::Object { .. } => "",
            Leftover::Unconfirmed { .. } => "unknown",
        }
    }

    pub(super) fn what(&self) -> &'static str {
        match self {
            Leftover::Multipart { .. }
            | Leftover::Staging { .. }
            | Leftover::Unconfirmed { .. } => "multipart upload",
            Leftover::Object { .. } => "object",
        }
    }
}
