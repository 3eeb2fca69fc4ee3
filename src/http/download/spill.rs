//! Where a large download waits while it is verified: a private, unlinked
//! file in `DOWNLOAD_TEMP_DIR`, filled from storage and hashed at once; on
//! a local store, the stored file itself (`verify_in_place`).
//!
//! The object is read as ranges, several in flight (`lfs::ranged_read`);
//! each piece, in order, goes to two blocking threads at the same time:
//! one hashes (SHA-256 runs at about 1 GB/s on one core here, the slowest
//! step), the other writes the spill. Only once size and hash match is
//! the spill sent, read back in large pieces by a third. The bytes sent
//! are the bytes hashed: the spill is the proxy's own, no other process
//! can change it, whatever happens to the stored object meanwhile.
//!
//! Memory: the ranges in flight plus two pieces queued per thread, about
//! 32 MiB per download at most, whatever the object's size.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::verified_files;
use crate::lfs::ranged_read::RangedReadError;
use crate::lfs::store::BlobStore;
use crate::metrics as m;

/// Pieces queued for each of the hashing and spilling threads.
const QUEUED: usize = 2;
/// Size of the pieces the spill is read back and sent in.
const SEND_PIECE: usize = 4 * 1024 * 1024;

/// Why a download could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("{0}")]
    Integrity(String),
    #[error(transparent)]
    Store(object_store::Error),
    #[error("temporary storage: {0}")]
    Temp(std::io::Error),
}

/// Reads `key` (exactly `size` bytes) into a spill in `temp_dir` while
/// hashing it; returns the spill, rewound, when its SHA-256 is `sha256`.
pub async fn fetch_verified(
    store: &BlobStore,
    key: &str,
    sha256: &str,
    size: u64,
    temp_dir: &Path,
) -> Result<std::fs::File, SpillError> {
    let mut pieces = store.read_ranges(key, size).await.map_err(|e| match e {
        RangedReadError::SizeMismatch { .. } => SpillError::Integrity(e.to_string()),
        RangedReadError::Store(e) => SpillError::Store(e),
    })?;
    let spill = tempfile::tempfile_in(temp_dir).map_err(SpillError::Temp)?;
    let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(QUEUED);
    let (write_tx, mut write_rx) = mpsc::channel::<Bytes>(QUEUED);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        while let Some(piece) = hash_rx.blocking_recv() {
            h.update(&piece);
        }
        hex::encode(h.finalize())
    });
    let mut out = spill.try_clone().map_err(SpillError::Temp)?;
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        while let Some(piece) = write_rx.blocking_recv() {
            out.write_all(&piece)?;
        }
        Ok(())
    });
    let mut read = Ok(());
    while let Some(piece) = pieces.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                read = Err(SpillError::Store(e));
                break;
            }
        };
        // A closed queue means its thread stopped (a write failed): the
        // writer's own error says why, below.
        if hash_tx.send(piece.clone()).await.is_err() || write_tx.send(piece).await.is_err() {
            break;
        }
    }
    drop((hash_tx, write_tx, pieces));
    let joined = |e: tokio::task::JoinError| SpillError::Temp(std::io::Error::other(e));
    let written = writer.await.map_err(joined)?;
    let actual = hasher.await.map_err(joined)?;
    read?;
    written.map_err(SpillError::Temp)?;
    if actual != sha256 {
        return Err(SpillError::Integrity(format!(
            "sha256 is {actual}, the envelope declares {sha256}"
        )));
    }
    let mut spill = spill;
    spill.seek(SeekFrom::Start(0)).map_err(SpillError::Temp)?;
    Ok(spill)
}

/// Size of the pieces a local file is hashed in.
const HASH_PIECE: usize = 8 * 1024 * 1024;

/// A local store's object, verified where it lies: opened once, its size
/// checked, hashed through that descriptor on a blocking thread (unless
/// this very file was verified before: `verified_files`), and returned
/// rewound, to be sent through the same descriptor. No spill:
/// the proxy and object_store replace objects by renaming a new file onto
/// the key, which an open descriptor does not see; a file changed in place
/// while it was hashed (size or modification time moved) is refused.
pub async fn verify_in_place(
    path: std::path::PathBuf,
    sha256: &str,
    size: u64,
) -> Result<std::fs::File, SpillError> {
    let expected = sha256.to_owned();
    let checked = tokio::task::spawn_blocking(move || -> Result<std::fs::File, SpillError> {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpillError::Store(object_store::Error::NotFound {
                    path: path.display().to_string(),
                    source: Box::new(e),
                }))
            }
            Err(e) => return Err(SpillError::Store(local_error(&path, e))),
        };
        let before = file
            .metadata()
            .map_err(|e| SpillError::Store(local_error(&path, e)))?;
        if before.len() != size {
            return Err(SpillError::Integrity(format!(
                "storage holds {} bytes, {size} declared",
                before.len()
            )));
        }
        let identity = verified_files::Identity::of(&before);
        if verified_files::verified(&identity, &expected) {
            metrics::counter!(m::HTTP_DOWNLOAD_VERIFIED_REUSED_TOTAL).increment(1);
            return Ok(file);
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; HASH_PIECE];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| SpillError::Store(local_error(&path, e)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let after = file
            .metadata()
            .map_err(|e| SpillError::Store(local_error(&path, e)))?;
        if verified_files::Identity::of(&after) != identity {
            return Err(SpillError::Integrity(
                "the file changed while it was verified".into(),
            ));
        }
        let actual = hex::encode(h.finalize());
        if actual != expected {
            return Err(SpillError::Integrity(format!(
                "sha256 is {actual}, the envelope declares {expected}"
            )));
        }
        verified_files::remember(identity, &expected);
        file.seek(SeekFrom::Start(0)).map_err(SpillError::Temp)?;
        Ok(file)
    });
    checked
        .await
        .map_err(|e| SpillError::Temp(std::io::Error::other(e)))?
}

fn local_error(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// A response body that sends the spill, read ahead by a blocking thread.
pub fn body(mut spill: std::fs::File) -> Body {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUED);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; SEND_PIECE];
        let mut filled = 0;
        while filled < SEND_PIECE {
            match spill.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        buf.truncate(filled);
        // The client went away: stop reading.
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
    });
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Body::from_stream(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_an_object_with_the_declared_size_and_hash_is_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(dir.path(), 5 << 20).unwrap();
        let data: Vec<u8> = (0..9 * 1024 * 1024 + 3).map(|i| (i % 253) as u8).collect();
        let sha = hex::encode(Sha256::digest(&data));
        store
            .put("ns/t/lfs/o", Bytes::from(data.clone()))
            .await
            .unwrap();
        let size = data.len() as u64;
        let mut spill = fetch_verified(&store, "ns/t/lfs/o", &sha, size, dir.path())
            .await
            .unwrap();
        let mut back = Vec::new();
        spill.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);

        let zeros = "0".repeat(64);
        let wrong_hash = fetch_verified(&store, "ns/t/lfs/o", &zeros, size, dir.path());
        assert!(matches!(wrong_hash.await, Err(SpillError::Integrity(_))));
        let wrong_size = fetch_verified(&store, "ns/t/lfs/o", &sha, size - 1, dir.path());
        assert!(matches!(wrong_size.await, Err(SpillError::Integrity(_))));
        let missing = fetch_verified(&store, "ns/t/lfs/none", &sha, size, dir.path()).await;
        assert!(matches!(
            missing,
            Err(SpillError::Store(object_store::Error::NotFound { .. }))
        ));
    }

    #[tokio::test]
    async fn a_local_file_is_verified_where_it_lies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        let data: Vec<u8> = (0..HASH_PIECE + 77).map(|i| (i % 249) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let sha = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        let mut file = verify_in_place(path.clone(), &sha, size).await.unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "rewound, whole");
        let zeros = "0".repeat(64);
        assert!(matches!(
            verify_in_place(path.clone(), &zeros, size).await,
            Err(SpillError::Integrity(_))
        ));
        assert!(matches!(
            verify_in_place(path.clone(), &sha, size + 1).await,
            Err(SpillError::Integrity(_))
        ));
        assert!(matches!(
            verify_in_place(dir.path().join("none"), &sha, size).await,
            Err(SpillError::Store(object_store::Error::NotFound { .. }))
        ));
    }
}
