//! One shutdown idiom for every long-running part (the Kafka listeners and
//! sessions, the HTTP server, the health loops, the processor), after tokio
//! mini-redis's `shutdown.rs`.
//!
//! The binary's edge holds a [`ShutdownTrigger`]; every task that must stop
//! holds a [`Shutdown`] and selects on [`Shutdown::wait`] at the points where
//! stopping is safe (between requests, between accepts, between checks).
//! Draining what is already in progress is the owner's business: shutdown
//! only says "take no new work".

use std::sync::Arc;

use tokio::sync::watch;

/// Begins shutdown for every [`Shutdown`] it handed out.
#[derive(Clone)]
pub struct ShutdownTrigger(Arc<watch::Sender<bool>>);

impl Default for ShutdownTrigger {
    fn default() -> Self {
        ShutdownTrigger(Arc::new(watch::channel(false).0))
    }
}

impl ShutdownTrigger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A listener for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }

    /// Tells every listener, now and later, that shutdown has begun.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }
}

/// Resolves once shutdown has begun.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Waits for shutdown. Cancel-safe: may be polled in `select!` again
    /// and again; once shutdown has begun it resolves at once.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which only happens when
        // everything is stopping anyway.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trigger_even_after_it_fired() {
        let trigger = ShutdownTrigger::new();
        let mut early = trigger.subscribe();
        assert!(!early.is_shutdown());
        let waiting = tokio::spawn(async move { early.wait().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        trigger.begin();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        let mut late = trigger.subscribe();
        assert!(late.is_shutdown());
        tokio::time::timeout(Duration::from_secs(1), late.wait())
            .await
            .unwrap();
    }
}
