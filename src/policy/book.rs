//! The policy in force, and its reload.
//!
//! Every check reads the current [`PolicySet`] (an `Arc` behind a lock held
//! only to clone it), so a reload swaps the whole set at once: a request is
//! judged by one policy from start to end, connections are never touched.
//! A reload is asked for by SIGHUP, or found by polling the file's size,
//! modification time and inode (a Kubernetes ConfigMap update swaps a
//! symlink: the inode changes). A file that does not load leaves the old
//! policy in force and logs why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::file::{PolicyFileError, PolicySet};
use crate::metrics::POLICY_RELOADS_TOTAL;
use crate::shutdown::Shutdown;

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The policies in force; shared by the Kafka stage and the HTTP API.
pub struct PolicyBook {
    path: Option<PathBuf>,
    current: RwLock<Arc<PolicySet>>,
    seen: Mutex<Option<FileStamp>>,
}

impl PolicyBook {
    /// No policy: nothing is checked.
    pub fn none() -> Self {
        PolicyBook {
            path: None,
            current: RwLock::new(Arc::new(PolicySet::default())),
            seen: Mutex::new(None),
        }
    }

    /// Loads the file; an invalid file is an error (start-up stops).
    pub fn load(path: PathBuf) -> Result<Self, PolicyFileError> {
        let seen = stamp(&path);
        let set = PolicySet::load(&path)?;
        Ok(PolicyBook {
            path: Some(path),
            current: RwLock::new(Arc::new(set)),
            seen: Mutex::new(seen),
        })
    }

    /// A book over a set already built (tests, benchmarks).
    pub fn with(set: PolicySet) -> Self {
        let book = Self::none();
        *book.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        book
    }

    /// The policies in force now.
    pub fn current(&self) -> Arc<PolicySet> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the file again; on an error the policy in force stays.
    pub fn reload(&self) -> Result<(), PolicyFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let seen = stamp(path);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let set = PolicySet::load(path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// Reloads when the file on disk is not the one last read.
    fn reload_if_changed(&self) -> Option<Result<(), PolicyFileError>> {
        let path = self.path.as_ref()?;
        let now = stamp(path);
        if now == *self.seen.lock().unwrap_or_else(|e| e.into_inner()) {
            return None;
        }
        Some(self.reload())
    }

    /// Reloads on SIGHUP and, with `poll`, when the file changes, until
    /// shutdown.
    pub async fn watch(self: Arc<Self>, poll: Option<Duration>, mut shutdown: Shutdown) {
        use tokio::signal::unix::{signal, SignalKind};
        if self.path.is_none() {
            return;
        }
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; the policy file is reloaded only when it changes");
                None
            }
        };
        let mut tick = tokio::time::interval(poll.unwrap_or(Duration::from_secs(3600)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.wait() => return,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => Some((self.reload(), "SIGHUP")),
                _ = tick.tick(), if poll.is_some() => {
                    self.reload_if_changed().map(|r| (r, "file changed"))
                }
            };
            match outcome {
                None => {}
                Some((Ok(()), why)) => {
                    metrics::counter!(POLICY_RELOADS_TOTAL, "outcome" => "applied").increment(1);
                    tracing::info!(why, policies = ?self.current().names(), "policy file reloaded");
                }
                Some((Err(error), why)) => {
                    metrics::counter!(POLICY_RELOADS_TOTAL, "outcome" => "failed").increment(1);
                    tracing::error!(why, %error, "policy file not reloaded; the previous policy stays in force");
                }
            }
        }
    }
}
