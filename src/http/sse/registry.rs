//! The open SSE streams of this replica: caps per caller and in all, and
//! the deadline of each stream opened with a JWT.
//!
//! Continuous authorization (as Zilla's sse binding does it): a stream
//! opened with a bearer JWT ends when the token expires. Before that the
//! stream sends a `challenge` event; the client answers with a `POST` to
//! the stream's path, `Content-Type: application/x-challenge-response`
//! and a fresh token for the same caller (issuer and subject). The fresh
//! token's expiry then applies to every stream that caller has open on
//! this replica, so one answer renews all streams sharing an HTTP/2
//! connection. Renewals reach only the replica that serves the streams:
//! behind a load balancer, send them on the same (HTTP/2) connection or
//! make the balancer sticky.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokio::sync::watch;

use super::super::error::ApiError;
use super::super::middleware::Caller;

type CallerId = Option<[u8; 32]>;

struct Entry {
    id: u64,
    deadline: watch::Sender<Option<u64>>,
}

/// Open streams by caller.
pub struct StreamRegistry {
    max_per_caller: usize,
    max_total: usize,
    open: Mutex<HashMap<CallerId, Vec<Entry>>>,
    next_id: AtomicU64,
}

/// A stream's place in the registry; dropping it closes the place.
pub struct OpenStream {
    registry: Arc<StreamRegistry>,
    caller: CallerId,
    id: u64,
    /// When the stream's credential expires (seconds since the Unix
    /// epoch); `None`: never (API key or no authentication).
    pub deadline: watch::Receiver<Option<u64>>,
}

impl StreamRegistry {
    pub fn new(max_per_caller: usize, max_total: usize) -> Arc<StreamRegistry> {
        Arc::new(StreamRegistry {
            max_per_caller,
            max_total,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CallerId, Vec<Entry>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new stream of `caller`, or refuses with 429.
    pub fn open(
        self: &Arc<Self>,
        caller: Caller,
        expires_at: Option<u64>,
    ) -> Result<OpenStream, ApiError> {
        let mut open = self.lock();
        let total: usize = open.values().map(Vec::len).sum();
        if total >= self.max_total {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("this proxy serves {total} streams, its maximum"),
            ));
        }
        let mine = open.entry(caller.0).or_default();
        if mine.len() >= self.max_per_caller {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "this caller has {} streams open here, the maximum per caller",
                    mine.len()
                ),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (deadline, watching) = watch::channel(expires_at);
        mine.push(Entry { id, deadline });
        Ok(OpenStream {
            registry: Arc::clone(self),
            caller: caller.0,
            id,
            deadline: watching,
        })
    }

    /// Moves the deadline of every open stream of `caller` to
    /// `expires_at` (never earlier); returns how many streams it renewed.
    pub fn renew(&self, caller: Caller, expires_at: u64) -> usize {
        let open = self.lock();
        let Some(mine) = open.get(&caller.0) else {
            return 0;
        };
        for entry in mine {
            entry.deadline.send_modify(|d| {
                if let Some(d) = d {
                    *d = (*d).max(expires_at);
                }
            });
        }
        mine.len()
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(mine) = open.get_mut(&self.caller) {
            mine.retain(|e| e.id != self.id);
            if mine.is_empty() {
                open.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_per_caller_and_in_all_and_places_are_returned() {
        let r = StreamRegistry::new(2, 3);
        let (a, b) = (Caller(Some([1; 32])), Caller(Some([2; 32])));
        let a1 = r.open(a, None).unwrap();
        let _a2 = r.open(a, None).unwrap();
        assert_eq!(r.open(a, None).err().unwrap().code, "too_many_streams");
        let _b1 = r.open(b, None).unwrap();
        assert!(r.open(b, None).is_err(), "total of 3 reached");
        drop(a1);
        let _b2 = r.open(b, None).unwrap();
        assert_eq!(r.count(), 3);
    }

    #[test]
    fn renewal_moves_every_stream_of_the_caller_and_only_later() {
        let r = StreamRegistry::new(5, 5);
        let (a, b) = (Caller(Some([1; 32])), Caller(Some([2; 32])));
        let s1 = r.open(a, Some(100)).unwrap();
        let s2 = r.open(a, Some(120)).unwrap();
        let other = r.open(b, Some(100)).unwrap();
        assert_eq!(r.renew(a, 110), 2);
        assert_eq!(*s1.deadline.borrow(), Some(110));
        assert_eq!(*s2.deadline.borrow(), Some(120), "never earlier");
        assert_eq!(*other.deadline.borrow(), Some(100));
        assert_eq!(r.renew(Caller(Some([9; 32])), 500), 0);
    }
}
