//! The durable list of leftovers a stopping proxy could not remove in time
//! (storage down or slow at shutdown), finished by the next start of any
//! replica.
//!
//! Each stop writes one JSON file, `_lfs_pending/pending-{uuid}.json`
//! (a JSON array of leftovers), in the store itself so that any replica
//! finds it. When the store cannot take it either, the file goes to the
//! fallback directory of the host (`KAFSCALE_LFS_PROXY_STORAGE_DIR`),
//! finished by a proxy started with the same directory. The prefix cannot
//! collide with objects: their keys are `{namespace}/{topic}/lfs/...`.
//!
//! Finishing is idempotent, so replicas starting together may both work on
//! one file: aborting an upload that is gone and deleting an object that is
//! gone both succeed. A file is rewritten with what is still left, and
//! deleted when nothing is.

use std::path::Path as FsPath;

use tokio::time::Instant;

use super::{count_removal, Leftover};
use crate::lfs::backend::Backend;

/// Key prefix (and fallback sub-directory) of ledger files.
pub const LEDGER_PREFIX: &str = "_lfs_pending";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger in the store: {0}")]
    Store(#[from] object_store::Error),
    #[error("ledger file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("ledger entry {name} is not a JSON list of leftovers: {source}")]
    Format {
        name: String,
        source: serde_json::Error,
    },
    #[error("the store did not answer by the deadline, and no fallback directory is set")]
    NoPlace,
}

/// Writes `entries` as one ledger file: in the store until `deadline`,
/// else in `fallback`. Returns where it went.
pub async fn record(
    backend: &Backend,
    fallback: Option<&FsPath>,
    entries: &[Leftover],
    deadline: Instant,
) -> Result<String, LedgerError> {
    let name = format!("pending-{}.json", uuid::Uuid::new_v4());
    let json = serde_json::to_vec(entries).expect("leftovers serialize");
    let key = format!("{LEDGER_PREFIX}/{name}");
    let in_store = tokio::time::timeout_at(deadline, backend.put_small(&key, json.clone())).await;
    let store_error = match in_store {
        Ok(Ok(())) => return Ok(format!("store:{key}")),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tracing::warn!(
        error = store_error,
        "cannot write the cleanup ledger to the store; using the fallback directory"
    );
    let Some(dir) = fallback else {
        return Err(LedgerError::NoPlace);
    };
    let dir = dir.join(LEDGER_PREFIX);
    let path = dir.join(&name);
    let file_error = |source| LedgerError::File {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(file_error)?;
    // Written aside and renamed, so a reader never sees half a file.
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::write(&partial, &json).map_err(file_error)?;
    std::fs::rename(&partial, &path).map_err(file_error)?;
    Ok(path.display().to_string())
}

/// One pass over every ledger file: each leftover is tried once; files
/// are rewritten with what is left, deleted when empty. Returns how many
/// leftovers are still waiting.
pub async fn finish_recorded(
    backend: &Backend,
    fallback: Option<&FsPath>,
) -> Result<usize, LedgerError> {
    let mut waiting = 0;
    for key in backend.list_keys(LEDGER_PREFIX).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let bytes = match backend.get_bytes(&key).await {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => continue, // another replica finished it
            Err(e) => return Err(e.into()),
        };
        let entries = parse(&key, &bytes)?;
        let left = try_each(backend, entries).await;
        waiting += left.len();
        if left.is_empty() {
            backend.delete_key(&key).await?;
        } else {
            let json = serde_json::to_vec(&left).expect("leftovers serialize");
            backend.put_small(&key, json).await?;
        }
    }
    if let Some(dir) = fallback.map(|d| d.join(LEDGER_PREFIX)) {
        let files = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(LedgerError::File {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !name.starts_with("pending-") || !name.ends_with(".json") {
                continue;
            }
            let file_error = |source| LedgerError::File {
                path: path.display().to_string(),
                source,
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(file_error(e)),
            };
            let left = try_each(backend, parse(&name, &bytes)?).await;
            waiting += left.len();
            if left.is_empty() {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(file_error(e)),
                }
            } else {
                let json = serde_json::to_vec(&left).expect("leftovers serialize");
                std::fs::write(&path, json).map_err(file_error)?;
            }
        }
    }
    Ok(waiting)
}

fn parse(name: &str, bytes: &[u8]) -> Result<Vec<Leftover>, LedgerError> {
    serde_json::from_slice(bytes).map_err(|source| LedgerError::Format {
        name: name.to_owned(),
        source,
    })
}

/// Tries every leftover once; returns those storage did not remove.
async fn try_each(backend: &Backend, entries: Vec<Leftover>) -> Vec<Leftover> {
    let mut left = Vec::new();
    for leftover in entries {
        match backend.remove(&leftover, &[]).await {
            Ok(removal) => {
                tracing::info!(
                    key = leftover.key(),
                    upload_id = leftover.upload_id(),
                    "recorded leftover removed"
                );
                count_removal(&leftover, removal);
            }
            Err(error) => {
                tracing::debug!(key = leftover.key(), %error, "recorded leftover not removed yet");
                left.push(leftover);
            }
        }
    }
    left
}
