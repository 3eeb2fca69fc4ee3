//! An object read as ranges, several in flight, handed out in order: what
//! makes a verified download approach a plain read. One GET streams at
//! the speed of one connection (S3) or one blocking read at a time (a
//! local file); `RANGES_IN_FLIGHT` ranged GETs keep storage busy while
//! earlier pieces are hashed and spilled.
//!
//! The size comes from a HEAD first: an object whose size is not the
//! declared one is refused before a byte is read, and the ranges cover
//! exactly the declared bytes. An object replaced between two ranges
//! yields a mix of both, which the caller's hash then refuses.

use std::ops::Range;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::store::BlobStore;

/// Size of one ranged GET.
pub const RANGE_SIZE: u64 = 4 * 1024 * 1024;
/// Ranged GETs in flight at once (memory: this many ranges plus what the
/// consumer buffers).
pub const RANGES_IN_FLIGHT: usize = 4;

/// Why an object cannot be read as declared.
#[derive(Debug, thiserror::Error)]
pub enum RangedReadError {
    #[error("storage holds {actual} bytes, {declared} declared")]
    SizeMismatch { declared: u64, actual: u64 },
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// The pieces `[0, size)` of an object of `size` bytes.
pub fn ranges(size: u64, piece: u64) -> impl Iterator<Item = Range<u64>> {
    let piece = piece.max(1);
    (0..size.div_ceil(piece)).map(move |i| i * piece..((i + 1) * piece).min(size))
}

impl BlobStore {
    /// The object's bytes, exactly `declared` of them, in order, read as
    /// ranges with several in flight; refused when storage holds another
    /// size.
    pub async fn read_ranges(
        &self,
        key: &str,
        declared: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, RangedReadError> {
        let path = Path::from(key);
        let store = std::sync::Arc::clone(&self.backend().store);
        let actual = store.head(&path).await?.size;
        if actual != declared {
            return Err(RangedReadError::SizeMismatch { declared, actual });
        }
        let pieces = stream::iter(ranges(declared, RANGE_SIZE)).map(move |range| {
            let (store, path) = (std::sync::Arc::clone(&store), path.clone());
            async move {
                let expected = range.end - range.start;
                let bytes = store.get_range(&path, range.clone()).await?;
                if bytes.len() as u64 != expected {
                    return Err(object_store::Error::Generic {
                        store: "kafka-lfs-proxy",
                        source: format!("range {range:?} came back with {} bytes", bytes.len())
                            .into(),
                    });
                }
                Ok(bytes)
            }
        });
        Ok(pieces.buffered(RANGES_IN_FLIGHT).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    #[test]
    fn ranges_cover_exactly_the_bytes() {
        assert_eq!(ranges(0, 4).count(), 0);
        assert_eq!(ranges(10, 4).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
        assert_eq!(ranges(8, 4).collect::<Vec<_>>(), vec![0..4, 4..8]);
    }

    #[tokio::test]
    async fn an_object_is_read_in_order_and_a_wrong_size_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let data: Vec<u8> = (0..(3 * RANGE_SIZE + 5)).map(|i| (i % 251) as u8).collect();
        store
            .put("ns/t/lfs/x", Bytes::from(data.clone()))
            .await
            .unwrap();
        let pieces: Vec<Bytes> = store
            .read_ranges("ns/t/lfs/x", data.len() as u64)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), data);
        let wrong = store.read_ranges("ns/t/lfs/x", 7).await;
        assert!(matches!(
            wrong,
            Err(RangedReadError::SizeMismatch { declared: 7, .. })
        ));
        let missing = store.read_ranges("ns/t/lfs/none", 7).await;
        assert!(matches!(
            missing,
            Err(RangedReadError::Store(object_store::Error::NotFound { .. }))
        ));
    }
}
