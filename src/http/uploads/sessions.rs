//! How many sessions are open, and the reaper: every pass lists the
//! sessions in the store, ends the expired ones (whichever replica finds
//! one first; the others find it ended), forgets tombstones older than
//! `TOMBSTONE_FOR`, and recounts the open sessions.
//!
//! The bound on open sessions (`UPLOAD_SESSIONS_MAX`) is judged against
//! the last pass's count plus the sessions opened here since, minus those
//! ended here: exact for one replica; with several, a replica learns of
//! the others' sessions at its next pass (at most 30 s later).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;

use super::super::error::ApiError;
use super::super::Sidecar;
use crate::lfs::sessions::{self, SessionDir, TOMBSTONE_FOR};
use crate::metrics as m;

/// The open-session count.
#[derive(Default)]
pub struct UploadSessions {
    open: AtomicUsize,
}

impl UploadSessions {
    /// Takes one of the `max` places for a new session, or refuses with 429.
    /// The place is given back by [`UploadSessions::release`].
    pub(super) fn reserve(&self, max: usize) -> Result<(), ApiError> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_upload_sessions",
                    format!("{max} upload sessions are open; retry when one finishes or expires"),
                )
            })
    }

    /// Gives back a place (a session ended, or never opened).
    pub(super) fn release(&self) {
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Ends expired sessions and forgets old tombstones every `every`;
    /// runs until the sidecar is dropped.
    pub async fn reap(sidecar: std::sync::Weak<Sidecar>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(sidecar) = sidecar.upgrade() else {
                return;
            };
            match reap_once(&sidecar).await {
                Ok(open) => {
                    sidecar.sessions.open.store(open, Ordering::Release);
                    metrics::gauge!(m::HTTP_UPLOAD_SESSIONS_OPEN).set(open as f64);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list upload sessions; tried again at the next pass")
                }
            }
        }
    }
}

/// One pass; returns the number of sessions open.
async fn reap_once(sidecar: &Sidecar) -> Result<usize, object_store::Error> {
    let (store, namespace) = (&sidecar.lfs.store, &sidecar.lfs.namespace);
    let now = Utc::now().timestamp_millis();
    let mut open = 0;
    for id in sessions::session_ids(store, namespace).await? {
        let dir = SessionDir::new(store.clone(), namespace, &id);
        if let Some(end) = dir.end().await? {
            if now - end.at_ms >= TOMBSTONE_FOR.as_millis() as i64 {
                dir.remove().await?;
            }
            continue;
        }
        match dir.session().await? {
            Some(session) if session.expires_ms <= now => {
                super::finish::expire(sidecar, &dir, &session).await
            }
            Some(_) => open += 1,
            // Records without a session or a tombstone: left by a process
            // that died while clearing an ended session.
            None => dir.remove().await?,
        }
    }
    Ok(open)
}
