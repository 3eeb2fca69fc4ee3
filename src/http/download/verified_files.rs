//! Local files already verified, remembered by identity, so that repeated
//! downloads of one object (many consumers of one document) hash it once.
//!
//! The identity is device, inode, size, modification time and change time,
//! to the nanosecond. Every write to a file moves its modification and
//! change time, and the change time cannot be set back from user space
//! (setting the modification time moves it too), so a file whose identity
//! is unchanged has not been written since it was hashed (times advance
//! in clock ticks, so only files whose last change is a second old or more
//! are remembered: any later write then moves the times). A file replaced
//! by a rename has another inode. An entry also names the SHA-256 it
//! proved: a download declaring another one is hashed again (and refused).
//!
//! Shared by the whole process: an identity names one file whoever asks.
//! Bounded: the oldest entries leave first.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, OnceLock};

/// Entries kept (about 100 bytes each).
const CAPACITY: usize = 4096;

/// What makes a file the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Default)]
struct Entries {
    sha256: HashMap<Identity, String>,
    order: VecDeque<Identity>,
}

fn entries() -> &'static Mutex<Entries> {
    static ENTRIES: OnceLock<Mutex<Entries>> = OnceLock::new();
    ENTRIES.get_or_init(Mutex::default)
}

/// Whether the file with `identity` was verified to have `sha256`.
pub fn verified(identity: &Identity, sha256: &str) -> bool {
    let entries = entries().lock().unwrap_or_else(|e| e.into_inner());
    entries.sha256.get(identity).is_some_and(|s| s == sha256)
}

/// How long ago a file must have changed last to be remembered: file times
/// advance in clock ticks, so a write within the tick of the previous one
/// could keep the same times; a write after this long cannot.
const SETTLED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Remembers that the file with `identity` has `sha256`, if it changed
/// last `SETTLED_FOR` ago or more.
pub fn remember(identity: Identity, sha256: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let changed = std::time::Duration::new(
        identity.ctime.0.max(0) as u64,
        identity.ctime.1.clamp(0, 999_999_999) as u32,
    );
    if now.saturating_sub(changed) < SETTLED_FOR {
        return;
    }
    let mut entries = entries().lock().unwrap_or_else(|e| e.into_inner());
    if entries.sha256.insert(identity, sha256.to_owned()).is_none() {
        entries.order.push_back(identity);
    }
    while entries.order.len() > CAPACITY {
        if let Some(oldest) = entries.order.pop_front() {
            entries.sha256.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_makes_another_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one").unwrap();
        let first = Identity::of(&std::fs::metadata(&path).unwrap());
        remember(first, "aa");
        assert!(!verified(&first, "aa"), "changed just now: not remembered");
        std::thread::sleep(SETTLED_FOR + std::time::Duration::from_millis(50));
        remember(first, "aa");
        assert!(verified(&first, "aa"));
        assert!(!verified(&first, "bb"), "another hash is not proved");
        // Same size, written in place.
        std::fs::write(&path, b"two").unwrap();
        let second = Identity::of(&std::fs::metadata(&path).unwrap());
        assert_ne!(first, second);
        assert!(!verified(&second, "aa"));
    }
}
