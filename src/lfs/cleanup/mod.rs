//! Nothing dangles: every multipart upload the proxy starts ends completed
//! or aborted, and every object no envelope points to is deleted, also when
//! storage is down at that moment, the request is cut, or the process stops.
//!
//! * **In flight.** A multipart upload holds a [`Ticket`] from its start to
//!   its completion or abort. A ticket dropped unsettled (its request was
//!   cut: the client left, the session was closed at the shutdown deadline)
//!   hands its upload to the retry queue, so the abort happens anyway.
//! * **Retry queue.** An abort or delete that storage did not answer is
//!   retried with back-off (1 s doubling to 60 s, jittered) until it does.
//!   The queue is bounded ([`MAX_QUEUED`]); what does not fit is logged with
//!   its key and upload id and counted as dropped. The gauge
//!   `lfs_orphans_pending` says what is queued now.
//! * **Shutdown** ([`Cleanup::finish`]): no new upload starts; everything in
//!   flight or queued is tried once more within a short budget; what is
//!   left is written to the durable [`ledger`], which the next start of any
//!   replica finishes ([`Cleanup::resume`]).
//!
//! A queued delete of a completed object is skipped when the object was
//! written again after it was left (an idempotent producer's retry stores
//! under the same key): the newer object has an envelope.

pub mod ledger;
mod leftover;
mod ticket;

pub use leftover::Leftover;
pub use ticket::Ticket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::{Backend, Removal};
use crate::backoff::Backoff;
use crate::metrics as m;

/// Most aborts and deletes waiting for storage at once.
pub const MAX_QUEUED: usize = 10_000;

/// First and longest wait between attempts at one leftover.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Starting a multipart upload failed because the proxy is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the proxy is shutting down; no new upload starts")]
pub struct ShuttingDown;

struct Queued {
    leftover: Leftover,
    backoff: Backoff,
    due: Instant,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    in_flight: HashMap<u64, Leftover>,
    queue: Vec<Queued>,
    closed: bool,
}

/// The cleanup of one store: uploads in flight, the retry queue, the ledger.
pub struct Cleanup {
    backend: Arc<Backend>,
    state: Mutex<State>,
    wake: Notify,
    /// Where the ledger goes when the store itself cannot take it.
    fallback_dir: OnceLock<std::path::PathBuf>,
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Cleanup")
            .field("in_flight", &state.in_flight.len())
            .field("queued", &state.queue.len())
            .finish()
    }
}

/// What the shutdown flush did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Aborted or deleted within the budget.
    pub removed: usize,
    /// Written to the ledger for the next start.
    pub recorded: usize,
    /// Neither: logged with key and upload id, left to the bucket lifecycle rule.
    pub lost: usize,
}

impl Cleanup {
    pub(crate) fn new(backend: Arc<Backend>) -> Arc<Self> {
        Arc::new(Cleanup {
            backend,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            fallback_dir: OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-changed
        // (every change is one insert or remove), so a poisoned lock is used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the ledger is written when the store refuses it (S3 down at
    /// shutdown): a directory of this host, finished by a replica started
    /// with the same directory.
    pub fn set_fallback_dir(&self, dir: std::path::PathBuf) {
        let _ = self.fallback_dir.set(dir);
    }

    /// Whether new uploads may start.
    pub fn check_open(&self) -> Result<(), ShuttingDown> {
        if self.lock().closed {
            Err(ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Records an upload that has started; it stays in flight until its
    /// ticket is settled. After shutdown began, refused: the caller aborts.
    pub fn register(
        self: &Arc<Self>,
        leftover: Leftover,
    ) -> Result<Ticket, (ShuttingDown, Leftover)> {
        let mut state = self.lock();
        if state.closed {
            return Err((ShuttingDown, leftover));
        }
        state.next_ticket += 1;
        let id = state.next_ticket;
        state.in_flight.insert(id, leftover);
        Ok(Ticket {
            cleanup: Arc::clone(self),
            id,
            settled: false,
        })
    }

    /// Multipart uploads in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Aborts and deletes waiting for storage now.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// An object was completed under `key`: any queued delete of an
    /// earlier object under the same key no longer applies.
    pub fn stored(&self, key: &str) {
        let mut state = self.lock();
        let before = state.queue.len();
        state
            .queue
            .retain(|q| !matches!(&q.leftover, Leftover::Object { key: k, .. } if k == key));
        if state.queue.len() != before {
            set_pending_gauge(state.queue.len());
        }
    }

    /// Hands a leftover whose removal failed (or could not be tried) to the
    /// retry queue; counted as left until it is removed.
    pub fn retry_later(&self, leftover: Leftover, error: &str) {
        metrics::counter!(m::LFS_ORPHANS_LEFT).increment(1);
        tracing::warn!(
            key = leftover.key(),
            upload_id = leftover.upload_id(),
            error,
            "cannot remove {} now; retrying until storage answers",
            leftover.what()
        );
        self.enqueue(leftover, error);
    }

    /// Queues a check for what a request storage did not answer may have
    /// left (a create or completion that timed out may still be carried
    /// out by a stalled store); not counted as left unless found.
    pub fn check_later(&self, leftover: Leftover, error: &str) {
        tracing::info!(
            key = leftover.key(),
            error,
            "storage did not answer; checking later that no {} is left",
            leftover.what()
        );
        self.enqueue(leftover, error);
    }

    fn enqueue(&self, leftover: Leftover, error: &str) {
        let mut state = self.lock();
        if state.closed {
            metrics::counter!(m::LFS_ORPHANS_DROPPED).increment(1);
            tracing::error!(
                key = leftover.key(),
                upload_id = leftover.upload_id(),
                error,
                "after shutdown: {} left in storage (the bucket lifecycle rule removes it)",
                leftover.what()
            );
            return;
        }
        if state.queue.len() >= MAX_QUEUED {
            metrics::counter!(m::LFS_ORPHANS_DROPPED).increment(1);
            tracing::error!(
                key = leftover.key(),
                upload_id = leftover.upload_id(),
                error,
                "cleanup queue full: {} left in storage (the bucket lifecycle rule removes it)",
                leftover.what()
            );
            return;
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let due = Instant::now() + backoff.next_wait();
        state.queue.push(Queued {
            leftover,
            backoff,
            due,
        });
        set_pending_gauge(state.queue.len());
        drop(state);
        self.wake.notify_one();
    }

    /// Removes one leftover now; on failure it goes to the retry queue.
    pub async fn remove_or_retry(&self, leftover: Leftover) -> bool {
        match self.remove(&leftover).await {
            Ok(removal) => {
                count_removal(&leftover, removal);
                true
            }
            Err(error) => {
                self.retry_later(leftover, &error.to_string());
                false
            }
        }
    }

    /// Removes one leftover, sparing the uploads this process has in flight.
    async fn remove(&self, leftover: &Leftover) -> Result<Removal, object_store::Error> {
        let spared: Vec<String> = match leftover {
            Leftover::Unconfirmed { key } => self
                .lock()
                .in_flight
                .values()
                .filter_map(|l| match l {
                    Leftover::Multipart { key: k, upload_id } if k == key => {
                        Some(upload_id.clone())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        self.backend.remove(leftover, &spared).await
    }

    /// Retries queued leftovers as they fall due, until [`Cleanup::finish`]
    /// takes the queue over (it keeps going through the drain).
    pub async fn run(self: Arc<Self>) {
        loop {
            let (next, closed) = {
                let state = self.lock();
                (state.queue.iter().map(|q| q.due).min(), state.closed)
            };
            if closed {
                return;
            }
            tokio::select! {
                _ = self.wake.notified() => continue,
                _ = sleep_until(next) => {}
            }
            self.retry_due().await;
        }
    }

    /// One attempt at every queued leftover that is due.
    pub async fn retry_due(&self) {
        let now = Instant::now();
        let due: Vec<Queued> = {
            let mut state = self.lock();
            let (due, waiting) = std::mem::take(&mut state.queue)
                .into_iter()
                .partition(|q| q.due <= now);
            state.queue = waiting;
            due
        };
        for mut queued in due {
            match self.remove(&queued.leftover).await {
                Ok(removal) => {
                    tracing::info!(
                        key = queued.leftover.key(),
                        upload_id = queued.leftover.upload_id(),
                        "left-over {} removed on retry",
                        queued.leftover.what()
                    );
                    count_removal(&queued.leftover, removal);
                }
                Err(error) => {
                    tracing::debug!(key = queued.leftover.key(), %error, "cleanup retry failed");
                    queued.due = Instant::now() + queued.backoff.next_wait();
                    self.lock().queue.push(queued);
                }
            }
        }
        set_pending_gauge(self.lock().queue.len());
    }

    /// Shutdown: refuses new uploads, tries everything in flight or queued
    /// once more within `budget`, and writes what is left to the ledger.
    pub async fn finish(&self, budget: Duration) -> Flushed {
        let leftovers: Vec<Leftover> = {
            let mut state = self.lock();
            state.closed = true;
            self.wake.notify_one();
            let mut all: Vec<Leftover> = state.in_flight.drain().map(|(_, l)| l).collect();
            all.extend(state.queue.drain(..).map(|q| q.leftover));
            all
        };
        set_pending_gauge(0);
        if leftovers.is_empty() {
            return Flushed::default();
        }
        tracing::info!(
            count = leftovers.len(),
            "shutdown: removing unfinished uploads and orphaned objects"
        );
        let deadline = Instant::now() + budget;
        let attempts = leftovers.iter().map(|l| async move {
            let removed = tokio::time::timeout_at(deadline, self.backend.remove(l, &[])).await;
            match removed {
                Ok(Ok(removal)) => {
                    count_removal(l, removal);
                    None
                }
                Ok(Err(error)) => Some((l.clone(), error.to_string())),
                Err(_) => Some((l.clone(), "shutdown cleanup budget spent".to_owned())),
            }
        });
        let left: Vec<(Leftover, String)> = futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mut flushed = Flushed {
            removed: leftovers.len() - left.len(),
            ..Flushed::default()
        };
        if left.is_empty() {
            return flushed;
        }
        for (leftover, error) in &left {
            tracing::warn!(
                key = leftover.key(),
                upload_id = leftover.upload_id(),
                error,
                "shutdown: {} not removed; recording it for the next start",
                leftover.what()
            );
        }
        let entries: Vec<Leftover> = left.into_iter().map(|(l, _)| l).collect();
        let fallback = self.fallback_dir.get().map(|d| d.as_path());
        match ledger::record(&self.backend, fallback, &entries, deadline + budget).await {
            Ok(place) => {
                tracing::info!(count = entries.len(), %place, "shutdown: leftovers recorded for the next start");
                flushed.recorded = entries.len();
            }
            Err(error) => {
                for leftover in &entries {
                    tracing::error!(key = leftover.key(), upload_id = leftover.upload_id(), %error,
                        "shutdown: {} left in storage and not recorded (the bucket lifecycle rule removes it)", leftover.what());
                }
                metrics::counter!(m::LFS_ORPHANS_DROPPED).increment(entries.len() as u64);
                flushed.lost = entries.len();
            }
        }
        flushed
    }

    /// Start-up: finishes what earlier processes recorded in the ledger
    /// (in the store, and in the fallback directory), retrying until done
    /// or `shutdown`.
    pub async fn resume(self: Arc<Self>, mut shutdown: crate::shutdown::Shutdown) {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            let fallback = self.fallback_dir.get().cloned();
            match ledger::finish_recorded(&self.backend, fallback.as_deref()).await {
                Ok(0) => return,
                Ok(left) => tracing::debug!(left, "ledger entries still waiting for storage"),
                Err(error) => tracing::warn!(%error, "cannot read the cleanup ledger yet"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(backoff.next_wait()) => {}
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn set_pending_gauge(queued: usize) {
    metrics::gauge!(m::LFS_ORPHANS_PENDING).set(queued as f64);
}

pub(crate) fn count_removal(leftover: &Leftover, removal: Removal) {
    let outcome = match (leftover, removal) {
        (_, Removal::Superseded) => "superseded",
        (Leftover::Object { .. }, Removal::Done) => "deleted",
        (_, Removal::Done) => "aborted",
    };
    metrics::counter!(m::LFS_CLEANUPS_TOTAL, "outcome" => outcome).increment(1);
    if matches!(leftover, Leftover::Object { .. }) && removal == Removal::Done {
        metrics::counter!(m::LFS_ORPHANS_DELETED).increment(1);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
