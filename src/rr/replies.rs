//! Replies by correlation id: the callers waiting for them, and the
//! finished ones kept for a bounded time.
//!
//! Every replica keeps every reply it reads (not only those to its own
//! requests), so an async `Location` or an idempotent retry can be served
//! by any replica behind the load balancer. The book is bounded twice:
//! finished replies leave after the TTL, and the oldest leave first when
//! their bytes pass the limit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::wire::Reply;

struct Entry {
    reply: watch::Sender<Option<Arc<Reply>>>,
    /// The request digest this replica produced under the id, if it did.
    digest: Option<String>,
    /// When the entry was made or finished; pending entries expire too.
    touched: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Finished ids, oldest first, with their size.
    finished: VecDeque<(Instant, String, usize)>,
    bytes: usize,
}

/// What the book knows of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Unknown,
    /// Produced here, no reply yet; with the request digest.
    Pending(Option<String>),
    /// The reply, and the digest of the request produced here, if any.
    Finished(Arc<Reply>, Option<String>),
}

pub struct ReplyBook {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_bytes: usize,
}

impl ReplyBook {
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        ReplyBook {
            inner: Mutex::new(Inner::default()),
            ttl,
            max_bytes,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters more than losing the book; carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` for a request this replica is about to produce, unless
    /// it already knows it: then it returns what it knows (the caller
    /// replays or waits instead of producing). `digest` identifies the
    /// request for idempotency checks.
    pub fn claim(&self, id: &str, digest: &str) -> Known {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.entries.get_mut(id) {
            Some(e) => {
                if let Some(reply) = e.reply.borrow().clone() {
                    return Known::Finished(reply, e.digest.clone());
                }
                if e.digest.is_some() {
                    return Known::Pending(e.digest.clone());
                }
                e.digest = Some(digest.to_owned());
                e.touched = now;
            }
            None => {
                inner.entries.insert(
                    id.to_owned(),
                    Entry {
                        reply: watch::channel(None).0,
                        digest: Some(digest.to_owned()),
                        touched: now,
                    },
                );
            }
        }
        Known::Unknown
    }

    /// Forgets an id whose request was never produced.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if inner
            .entries
            .get(id)
            .is_some_and(|e| e.reply.borrow().is_none())
        {
            inner.entries.remove(id);
        }
    }

    pub fn known(&self, id: &str) -> Known {
        let inner = self.lock();
        match inner.entries.get(id) {
            None => Known::Unknown,
            Some(e) => match e.reply.borrow().clone() {
                Some(reply) => Known::Finished(reply, e.digest.clone()),
                None if e.digest.is_some() => Known::Pending(e.digest.clone()),
                None => Known::Unknown,
            },
        }
    }

    /// The reply to `id`, waiting up to `timeout` for it to arrive.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<Arc<Reply>> {
        let mut rx = {
            let mut inner = self.lock();
            let entry = inner.entries.entry(id.to_owned()).or_insert_with(|| Entry {
                reply: watch::channel(None).0,
                digest: None,
                touched: Instant::now(),
            });
            entry.reply.subscribe()
        };
        let waited = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(reply)) => reply.clone(),
            _ => None,
        }
    }

    /// Records a reply read from Kafka and wakes its waiters. A second
    /// reply to the same id (a worker's retry) is ignored: the first wins.
    pub fn complete(&self, id: String, reply: Reply) {
        let size = reply.size();
        let reply = Arc::new(reply);
        let mut inner = self.lock();
        let now = Instant::now();
        let entry = inner.entries.entry(id.clone()).or_insert_with(|| Entry {
            reply: watch::channel(None).0,
            digest: None,
            touched: now,
        });
        if entry.reply.borrow().is_some() {
            return;
        }
        entry.reply.send_replace(Some(reply));
        entry.touched = now;
        inner.finished.push_back((now, id, size));
        inner.bytes += size;
        self.evict(&mut inner, now);
    }

    /// Drops expired entries: finished ones past the TTL, pending ones
    /// nobody waits for past the TTL.
    pub fn sweep(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        self.evict(&mut inner, now);
        let ttl = self.ttl;
        inner.entries.retain(|_, e| {
            e.reply.borrow().is_some()
                || e.reply.receiver_count() > 0
                || now.duration_since(e.touched) < ttl
        });
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _, size)) = inner.finished.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && inner.bytes <= self.max_bytes {
                break;
            }
            let size = *size;
            if let Some((_, id, _)) = inner.finished.pop_front() {
                inner.entries.remove(&id);
            }
            inner.bytes -= size;
        }
    }

    /// Finished replies held, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.finished.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn reply(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: Bytes::copy_from_slice(body.as_bytes()),
            request_digest: None,
        }
    }

    #[tokio::test]
    async fn a_waiter_gets_the_reply_and_it_stays_for_others() {
        let book = Arc::new(ReplyBook::new(Duration::from_secs(60), 1 << 20));
        assert_eq!(book.claim("a", "d"), Known::Unknown);
        assert_eq!(book.known("a"), Known::Pending(Some("d".into())));
        assert_eq!(book.claim("a", "other"), Known::Pending(Some("d".into())));
        let waiter = {
            let book = Arc::clone(&book);
            tokio::spawn(async move { book.wait("a", Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        book.complete("a".into(), reply("one"));
        book.complete("a".into(), reply("second reply is ignored"));
        assert_eq!(&waiter.await.unwrap().unwrap().body[..], b"one");
        match book.known("a") {
            Known::Finished(r, digest) => {
                assert_eq!(&r.body[..], b"one");
                assert_eq!(digest.as_deref(), Some("d"));
            }
            other => panic!("{other:?}"),
        }
        assert!(book
            .wait("nobody", Duration::from_millis(10))
            .await
            .is_none());
    }

    #[tokio::test]
    async fn oldest_replies_leave_when_bytes_pass_the_bound() {
        let book = ReplyBook::new(Duration::from_secs(60), 300);
        for i in 0..5 {
            book.complete(format!("r{i}"), reply(&"x".repeat(100)));
        }
        let (count, bytes) = book.held();
        assert!(bytes <= 300 && count == 1, "{count} {bytes}");
        assert_eq!(book.known("r0"), Known::Unknown);
        assert!(matches!(book.known("r4"), Known::Finished(..)));
    }

    #[tokio::test]
    async fn replies_expire_after_the_ttl() {
        let book = ReplyBook::new(Duration::from_millis(20), 1 << 20);
        book.complete("old".into(), reply("x"));
        book.claim("pending", "");
        tokio::time::sleep(Duration::from_millis(30)).await;
        book.sweep();
        assert_eq!(book.known("old"), Known::Unknown);
        assert_eq!(book.held(), (0, 0));
        assert!(book.lock().entries.is_empty());
    }
}
