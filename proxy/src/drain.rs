//! Shutting down without failing what was accepted. On SIGTERM the proxy:
//!
//! 1. keeps serving, new connections included, for `--grace-period` (a load balancer notices the
//!    shutdown and sends new clients elsewhere meanwhile);
//! 2. then drains: the listeners stop accepting, idle keep-alive connections close, every long-lived
//!    stream (a GET stream, a legacy SSE session's stream, `/mcp`'s) ends cleanly so its client reconnects
//!    — to another replica — and requests in flight get `--shutdown-timeout` to finish;
//! 3. then exits. SIGINT exits at once.
//!
//! Pingora stops its listeners the moment its shutdown signal fires and then gives requests in flight its
//! own grace period, so the proxy watches the signals itself ([`Signals`]) and tells Pingora only when step 2
//! begins; Pingora's grace period is the in-flight deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

/// Resolves, for every holder, once the proxy drains.
#[derive(Clone)]
pub struct Draining(watch::Receiver<bool>);

impl Draining {
    /// Waits until the proxy drains (forever when it never does).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|draining| *draining).await.is_err() {
            // The signal watcher is gone without draining: the process is ending anyway.
            std::future::pending::<()>().await;
        }
    }
}

/// The process's shutdown signals, as Pingora's server waits for them.
pub struct Signals {
    grace: Duration,
    draining: watch::Sender<bool>,
}

impl Signals {
    /// The watcher, and the handle long-lived streams wait on.
    pub fn new(grace: Duration) -> (Self, Draining) {
        let (tx, rx) = watch::channel(false);
        (Self { grace, draining: tx }, Draining(rx))
    }
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            tracing::error!("Cannot watch SIGTERM and SIGINT; stopping.");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        tracing::info!(grace_period = ?self.grace, "SIGTERM: serving on for the grace period, then draining.");
        tokio::select! {
            _ = tokio::time::sleep(self.grace) => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        }
        tracing::info!(
            "Draining: no new connections; open streams end so their clients reconnect elsewhere."
        );
        self.draining.send_replace(true);
        ShutdownSignal::GracefulTerminate
    }
}

/// Tells connections waiting for their next request that the listener has stopped.
#[derive(Default)]
pub struct Closing {
    closed: AtomicBool,
    notify: Notify,
}

impl Closing {
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once the listener has stopped.
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a `close` between the two is not missed.
        notified.as_mut().enable();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_holder_sees_the_drain_even_after_it_began() {
        let (signals, draining) = Signals::new(Duration::ZERO);
        let early = draining.clone();
        let waiting = tokio::spawn(async move { early.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        signals.draining.send_replace(true);
        waiting.await.unwrap();
        // A stream that starts after the drain began ends at once.
        tokio::time::timeout(Duration::from_secs(1), draining.wait()).await.expect("resolves at once");
    }
}
