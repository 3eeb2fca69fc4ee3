//! Resolving envelopes: recognising one in a record value, and reading the
//! object it names with size and SHA-256 verified before a byte is handed
//! out. The Fetch rehydration, `kafka-lfs-proxy resolve` and applications
//! that resolve envelopes themselves all use this.
//!
//! # What counts as an envelope
//!
//! A value is resolved only when all of these hold, so an ordinary JSON
//! value is never mistaken for one:
//!
//! * it is a JSON object with exactly the envelope's fields (`kfs_lfs`,
//!   `bucket`, `key`, `size`, `sha256`, and optionally `checksum`,
//!   `checksum_alg`, `content_type`, `created_at`, `proxy_id`,
//!   `original_headers`): an unknown field means it is not one;
//! * `kfs_lfs` is 1, `sha256` is 64 hex digits;
//! * `bucket` is the bucket (or, for the local store, the directory) this
//!   proxy stores in;
//! * `key` is `{namespace}/{topic}/lfs/{yyyy}/{mm}/{dd}/obj-{id}` (or the
//!   content key `{namespace}/{topic}/lfs/sha256/obj-{sha256}`) with this
//!   proxy's namespace and **the topic the record was read from**: an
//!   envelope copied to another topic is left as it is, so a producer to
//!   one topic cannot make the proxy hand out another topic's objects.
//!
//! KafScale's envelopes pass the same test: its field names, key layout and
//! namespace setting are the ones used here.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;

use super::store::BlobStore;

/// The fields an envelope may carry; any other field means the value is
/// not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeRef {
    pub kfs_lfs: u32,
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub checksum_alg: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub proxy_id: Option<String>,
    #[serde(default)]
    pub original_headers: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Where this proxy's envelopes point: the bucket and namespace they name.
#[derive(Debug, Clone)]
pub struct EnvelopeScope {
    pub bucket: String,
    pub namespace: String,
    /// Envelopes declaring more than this are not resolved (a declared size
    /// decides how much is held for the object).
    pub max_size: u64,
}

/// Why a value that looks like an envelope is not resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnEnvelope {
    #[error("not an envelope")]
    Shape,
    #[error("envelope names bucket `{0}`, not this proxy's")]
    Bucket(String),
    #[error("envelope key `{0}` is not an object of this namespace and topic")]
    Key(String),
    #[error("envelope declares {size} bytes, over the maximum of {max}")]
    TooLarge { size: u64, max: u64 },
}

impl EnvelopeScope {
    /// Whether `value`, read from `topic`, is an envelope this proxy
    /// resolves. `topic` `None` (a caller that does not know it, such as
    /// `resolve` reading stdin) accepts any topic of the namespace.
    pub fn recognise(
        &self,
        value: &[u8],
        topic: Option<&str>,
    ) -> Result<EnvelopeRef, NotAnEnvelope> {
        // Cheap test first: every envelope is a small object naming kfs_lfs.
        let start = value.iter().position(|b| !b.is_ascii_whitespace());
        if start.is_none_or(|i| value[i] != b'{')
            || value.len() > MAX_ENVELOPE_LEN
            || memchr::memmem::find(value, b"\"kfs_lfs\"").is_none()
        {
            return Err(NotAnEnvelope::Shape);
        }
        let envelope: EnvelopeRef =
            serde_json::from_slice(value).map_err(|_| NotAnEnvelope::Shape)?;
        if envelope.kfs_lfs != 1
            || envelope.sha256.len() != 64
            || !envelope.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(NotAnEnvelope::Shape);
        }
        if envelope.bucket != self.bucket {
            return Err(NotAnEnvelope::Bucket(envelope.bucket));
        }
        if !key_in_scope(&envelope.key, &self.namespace, topic) {
            return Err(NotAnEnvelope::Key(envelope.key));
        }
        if envelope.size > self.max_size {
            return Err(NotAnEnvelope::TooLarge {
                size: envelope.size,
                max: self.max_size,
            });
        }
        Ok(envelope)
    }
}

/// Envelopes are a few hundred bytes; a larger value is not parsed.
const MAX_ENVELOPE_LEN: usize = 64 * 1024;

/// `{namespace}/{topic}/lfs/{yyyy}/{mm}/{dd}/obj-{id}`, or a content key
/// `{namespace}/{topic}/lfs/sha256/obj-{sha256}`; nothing else.
fn key_in_scope(key: &str, namespace: &str, topic: Option<&str>) -> bool {
    let Some(rest) = key
        .strip_prefix(namespace)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if let [key_topic, "lfs", _, _] = parts[..] {
        let topic_ok = crate::kafka::wire::topic::check_topic_name(
            key_topic,
            crate::kafka::wire::topic::MAX_TOPIC_NAME_LENGTH,
        )
        .is_ok_and(|t| t == key_topic);
        return topic.is_none_or(|t| t == key_topic)
            && topic_ok
            && super::content_address::is_content_key(key);
    }
    let [key_topic, "lfs", yyyy, mm, dd, object] = parts[..] else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let id_ok = object.strip_prefix("obj-").is_some_and(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    topic.is_none_or(|t| t == key_topic)
        && crate::kafka::wire::topic::check_topic_name(
            key_topic,
            crate::kafka::wire::topic::MAX_TOPIC_NAME_LENGTH,
        )
        .is_ok_and(|t| t == key_topic)
        && digits(yyyy, 4)
        && digits(mm, 2)
        && digits(dd, 2)
        && id_ok
}

/// Resolves envelopes for an application: the store and the scope of the
/// envelopes to accept.
///
/// ```no_run
/// # async fn demo(value: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
/// use kafka_lfs_proxy::lfs::resolve::{EnvelopeScope, Resolver};
/// use kafka_lfs_proxy::lfs::store::BlobStore;
///
/// let store = BlobStore::local(std::path::Path::new("./lfs-data"), 5 << 20)?;
/// let resolver = Resolver::new(store.clone(), EnvelopeScope {
///     bucket: store.bucket().to_owned(),
///     namespace: "default".into(),
///     max_size: 5 << 30,
/// });
/// // `value` is a record value read from topic "images".
/// match resolver.resolve(value, Some("images")).await? {
///     Some(original) => println!("{} verified bytes", original.len()),
///     None => println!("an ordinary value"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Resolver {
    store: BlobStore,
    scope: EnvelopeScope,
}

impl Resolver {
    pub fn new(store: BlobStore, scope: EnvelopeScope) -> Self {
        Resolver { store, scope }
    }

    pub fn scope(&self) -> &EnvelopeScope {
        &self.scope
    }

    /// The verified original of `value` when it is an envelope this
    /// resolver accepts; `Ok(None)` for any other value.
    pub async fn resolve(
        &self,
        value: &[u8],
        topic: Option<&str>,
    ) -> Result<Option<Bytes>, ResolveError> {
        match self.scope.recognise(value, topic) {
            Ok(envelope) => read_verified(&self.store, &envelope).await.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// Why an envelope's object could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("object {key} is missing")]
    Missing { key: String },
    #[error("object {key} has {actual} bytes or more, the envelope says {expected}")]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("object {key} has SHA-256 {actual}, the envelope says {expected}")]
    HashMismatch {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("object storage: {0}")]
    Storage(String),
}

impl ResolveError {
    /// Metric label: the object is wrong or gone, as opposed to storage
    /// being unreachable.
    pub fn reason(&self) -> &'static str {
        match self {
            ResolveError::Missing { .. } => "missing",
            ResolveError::SizeMismatch { .. } => "size_mismatch",
            ResolveError::HashMismatch { .. } => "sha256_mismatch",
            ResolveError::Storage(_) => "storage",
        }
    }

    /// Whether trying again later may succeed (storage unreachable), as
    /// opposed to an object that is gone or does not match.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ResolveError::Storage(_))
    }
}

/// Reads the object an envelope names, stopping as soon as storage sends
/// more bytes than declared, and returns it only when size and SHA-256
/// match. The bytes are held in memory (the caller bounds how much).
pub async fn read_verified(
    store: &BlobStore,
    envelope: &EnvelopeRef,
) -> Result<Bytes, ResolveError> {
    use sha2::{Digest, Sha256};
    let key = &envelope.key;
    let mut stream = match store.stream(key).await {
        Ok(stream) => stream,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(ResolveError::Missing { key: key.clone() })
        }
        Err(e) => return Err(ResolveError::Storage(e.to_string())),
    };
    let expected = envelope.size;
    let mut held = BytesMut::with_capacity(expected.min(64 << 20) as usize);
    let mut hasher = Sha256::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| match e {
            object_store::Error::NotFound { .. } => ResolveError::Missing { key: key.clone() },
            e => ResolveError::Storage(e.to_string()),
        })?;
        let total = held.len() as u64 + piece.len() as u64;
        if total > expected {
            return Err(ResolveError::SizeMismatch {
                key: key.clone(),
                expected,
                actual: total,
            });
        }
        hasher.update(&piece);
        held.extend_from_slice(&piece);
    }
    if held.len() as u64 != expected {
        return Err(ResolveError::SizeMismatch {
            key: key.clone(),
            expected,
            actual: held.len() as u64,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&envelope.sha256) {
        return Err(ResolveError::HashMismatch {
            key: key.clone(),
            expected: envelope.sha256.clone(),
            actual,
        });
    }
    Ok(held.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> EnvelopeScope {
        EnvelopeScope {
            bucket: "b".into(),
            namespace: "default".into(),
            max_size: 1 << 30,
        }
    }

    const KEY: &str = "default/t/lfs/2026/02/05/obj-0f6a7b1c-1111-4222-8333-944445555666";

    fn envelope(extra: &str) -> String {
        format!(
            r#"{{"kfs_lfs":1,"bucket":"b","key":"{KEY}","size":3,"sha256":"{}","content_type":"text/plain","created_at":"2026-02-05T10:30:00Z","proxy_id":"p"{extra}}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn recognises_this_proxys_envelopes_and_kafscales() {
        let got = scope()
            .recognise(envelope("").as_bytes(), Some("t"))
            .unwrap();
        assert_eq!(got.key, KEY);
        assert_eq!(got.size, 3);
        // KafScale writes original_headers and may omit proxy_id.
        let kafscale = format!(
            r#"{{"kfs_lfs":1,"bucket":"b","key":"{KEY}","size":3,"sha256":"{}","checksum":"{0}","checksum_alg":"sha256","content_type":"x","original_headers":{{"traceparent":"00-a-b-01"}},"created_at":"2026-02-05T10:30:00Z"}}"#,
            "cd".repeat(32)
        );
        assert!(scope().recognise(kafscale.as_bytes(), Some("t")).is_ok());
        assert!(scope().recognise(envelope("").as_bytes(), None).is_ok());
    }

    #[test]
    fn ordinary_json_is_never_an_envelope() {
        let s = scope();
        for value in [
            "".to_string(),
            "not json".into(),
            r#"{"kfs_lfs":1}"#.into(),
            r#"["kfs_lfs"]"#.into(),
            // One field more than an envelope has.
            envelope(r#","user":"x""#),
            envelope("").replace("\"kfs_lfs\":1", "\"kfs_lfs\":2"),
            envelope("").replace(&"ab".repeat(32), "abc"),
        ] {
            assert_eq!(
                s.recognise(value.as_bytes(), Some("t")),
                Err(NotAnEnvelope::Shape),
                "{value}"
            );
        }
        assert!(matches!(
            s.recognise(
                envelope("").replace("\"b\"", "\"other\"").as_bytes(),
                Some("t")
            ),
            Err(NotAnEnvelope::Bucket(_))
        ));
        // Copied to another topic, or pointing outside the namespace.
        assert!(matches!(
            s.recognise(envelope("").as_bytes(), Some("u")),
            Err(NotAnEnvelope::Key(_))
        ));
        for key in [
            "other/t/lfs/2026/02/05/obj-1",
            "default/t/lfs/2026/02/05/../obj-1",
            "default/t/lfs/2026/2/05/obj-1",
            "default/t/x/2026/02/05/obj-1",
            "default/t/lfs/2026/02/05/obj-1/more",
            "default/t/lfs/sha256/obj-1",
            "default/t/lfs/md5/obj-00000000000000000000000000000000",
        ] {
            assert!(!key_in_scope(key, "default", Some("t")), "{key}");
        }
        let content_key = crate::lfs::content_address::key("default", "t", &"ab".repeat(32));
        assert!(key_in_scope(&content_key, "default", Some("t")));
        assert!(!key_in_scope(&content_key, "default", Some("u")));
        let big = scope()
            .recognise(envelope("").as_bytes(), Some("t"))
            .unwrap();
        let small = EnvelopeScope {
            max_size: 2,
            ..scope()
        };
        assert_eq!(
            small.recognise(envelope("").as_bytes(), Some("t")),
            Err(NotAnEnvelope::TooLarge { size: 3, max: 2 })
        );
        assert_eq!(big.size, 3);
    }

    #[tokio::test]
    async fn reads_only_what_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        store.put(KEY, Bytes::from_static(b"abc")).await.unwrap();
        let sha = crate::lfs::checksum::ChecksumAlg::Sha256.hex_digest(b"abc");
        let mut e = EnvelopeRef {
            kfs_lfs: 1,
            bucket: store.bucket().into(),
            key: KEY.into(),
            size: 3,
            sha256: sha.clone(),
            checksum: None,
            checksum_alg: None,
            content_type: None,
            created_at: None,
            proxy_id: None,
            original_headers: None,
        };
        assert_eq!(&read_verified(&store, &e).await.unwrap()[..], b"abc");
        e.size = 2;
        assert!(matches!(
            read_verified(&store, &e).await,
            Err(ResolveError::SizeMismatch { .. })
        ));
        e.size = 4;
        assert!(matches!(
            read_verified(&store, &e).await,
            Err(ResolveError::SizeMismatch { .. })
        ));
        e.size = 3;
        e.sha256 = "00".repeat(32);
        assert!(matches!(
            read_verified(&store, &e).await,
            Err(ResolveError::HashMismatch { .. })
        ));
        e.key = KEY.replace("obj-0", "obj-9");
        let missing = read_verified(&store, &e).await.unwrap_err();
        assert!(matches!(missing, ResolveError::Missing { .. }), "{missing}");
        assert!(!missing.is_retriable());
    }
}
