//! The table of open upload sessions: who owns each, what it has stored so
//! far, and expiry (an expired session's multipart upload is aborted, or its
//! stored object deleted, by whichever request or reaper pass finds it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::super::error::ApiError;
use super::super::middleware::Caller;
use super::super::target::{ExpectedChecksum, ProduceTarget};
use super::super::Sidecar;
use crate::lfs::checksum::StreamingDigest;
use crate::lfs::envelope::Envelope;
use crate::lfs::multipart::PartUpload;
use crate::lfs::offload::delete_orphans;
use crate::metrics as m;

/// How long an expired session is remembered (answering 410, not 404).
const TOMBSTONE_FOR: Duration = Duration::from_secs(3600);

/// The open sessions, by id.
#[derive(Default)]
pub struct UploadSessions {
    pub(super) sessions: Mutex<HashMap<String, Arc<Mutex<Session>>>>,
    /// Sessions holding a multipart upload or a stored object (not the
    /// tombstones of closed ones), bounded by `HttpConfig::max_sessions`.
    open: AtomicUsize,
}

pub(super) struct Session {
    pub(super) id: String,
    pub(super) owner: Caller,
    pub(super) target: ProduceTarget,
    /// The value held for the topic policy's JSON rule, when it has one.
    pub(super) value_check: Option<super::super::policy::ValueCheck>,
    pub(super) expected: ExpectedChecksum,
    pub(super) size: u64,
    pub(super) part_size: u64,
    pub(super) key: String,
    pub(super) created: DateTime<Utc>,
    pub(super) expires: Instant,
    pub(super) expires_at: DateTime<Utc>,
    pub(super) state: SessionState,
}

pub(super) enum SessionState {
    /// Parts are arriving.
    Receiving {
        upload: PartUpload,
        digest: Box<StreamingDigest>,
        received: u64,
        /// Etag and byte count of every stored part, in order.
        parts: Vec<(String, u64)>,
    },
    /// The object is complete; its envelope is not yet in Kafka.
    Stored { envelope: Envelope },
    /// Published, aborted or expired: nothing left to do.
    Closed { why: Closed },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    Expired,
    Finished,
}

pub(super) fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "upload_not_found",
        "no such upload session",
    )
}

pub(super) fn expired() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "upload_expired",
        "the upload session expired",
    )
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

    /// Gives back a place taken by `reserve` (a session closed, or never opened).
    pub(super) fn release(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// The caller's session `id`, expiring it first when its time is up.
    pub(super) async fn get(
        &self,
        sidecar: &Sidecar,
        id: &str,
        caller: Caller,
    ) -> Result<Arc<Mutex<Session>>, ApiError> {
        let session = self
            .sessions
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(not_found)?;
        {
            let mut s = session.lock().await;
            if s.owner != caller {
                return Err(not_found());
            }
            if s.expires <= Instant::now() {
                s.expire(sidecar).await;
                return Err(expired());
            }
            if let SessionState::Closed { why } = s.state {
                return Err(match why {
                    Closed::Expired => expired(),
                    Closed::Finished => not_found(),
                });
            }
        }
        Ok(session)
    }

    pub(super) async fn remove(&self, id: &str) {
        self.sessions.lock().await.remove(id);
    }

    /// Aborts expired sessions and forgets old tombstones; runs until the
    /// sidecar is dropped.
    pub async fn reap(sidecar: std::sync::Weak<Sidecar>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let Some(sidecar) = sidecar.upgrade() else {
                return;
            };
            let all: Vec<_> = sidecar
                .sessions
                .sessions
                .lock()
                .await
                .clone()
                .into_iter()
                .collect();
            let now = Instant::now();
            for (id, session) in all {
                let mut s = session.lock().await;
                if s.expires <= now {
                    s.expire(&sidecar).await;
                }
                if s.expires + TOMBSTONE_FOR <= now {
                    drop(s);
                    sidecar.sessions.remove(&id).await;
                }
            }
        }
    }
}

impl Session {
    /// Drops whatever the session holds in storage.
    async fn expire(&mut self, sidecar: &Sidecar) {
        match std::mem::replace(
            &mut self.state,
            SessionState::Closed {
                why: Closed::Expired,
            },
        ) {
            SessionState::Receiving { upload, .. } => {
                upload.abort().await;
                count_closed(&sidecar.sessions, true);
                tracing::info!(upload_id = %self.id, key = %self.key, "upload session expired; multipart upload aborted");
            }
            SessionState::Stored { .. } => {
                delete_orphans(&sidecar.lfs, std::slice::from_ref(&self.key)).await;
                count_closed(&sidecar.sessions, true);
                tracing::info!(upload_id = %self.id, key = %self.key, "upload session expired before its envelope was produced; object deleted");
            }
            closed @ SessionState::Closed { .. } => self.state = closed,
        }
    }
}

pub(super) fn count_closed(sessions: &UploadSessions, expired: bool) {
    sessions.release();
    metrics::gauge!(m::HTTP_UPLOAD_SESSIONS_OPEN).decrement(1.0);
    if expired {
        metrics::counter!(m::HTTP_UPLOAD_SESSIONS_EXPIRED).increment(1);
    }
}
