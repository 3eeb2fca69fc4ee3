//! A count of things still in progress that can be awaited down to zero:
//! responses a client is still owed (re-authentication waits for them) and
//! open sessions (shutdown drains them).

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Outstanding {
    count: AtomicUsize,
    idle: Notify,
}

impl Outstanding {
    pub fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once the count is zero.
    pub async fn idle(&self) {
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_until_everything_is_done() {
        let outstanding = Arc::new(Outstanding::default());
        outstanding.idle().await;
        outstanding.add();
        outstanding.add();
        let waiter = tokio::spawn({
            let outstanding = Arc::clone(&outstanding);
            async move { outstanding.idle().await }
        });
        outstanding.done();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        outstanding.done();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
