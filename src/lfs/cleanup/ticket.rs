//! The ticket an open multipart upload holds with the cleanup.

use std::sync::Arc;

use super::Cleanup;

/// An upload in flight. Settle it when the upload completed or was
/// aborted; dropped unsettled, its upload goes to the retry queue to be
/// aborted.
pub struct Ticket {
    pub(super) cleanup: Arc<Cleanup>,
    pub(super) id: u64,
    pub(super) settled: bool,
}

impl Ticket {
    /// The upload completed or was aborted: nothing is left.
    pub fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            self.cleanup.lock().in_flight.remove(&self.id);
        }
    }

    /// The abort failed: retry it later (unless shutdown took the upload
    /// over already).
    pub fn abort_failed(&mut self, error: &str) {
        if self.settled {
            return;
        }
        self.settled = true;
        let leftover = self.cleanup.lock().in_flight.remove(&self.id);
        if let Some(leftover) = leftover {
            self.cleanup.retry_later(leftover, error);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.abort_failed("upload cut off before it completed");
    }
}
