//! A connection's timers, moved for every request without touching the runtime's timer wheel.
//!
//! A connection waits for like durations request after request (the next head, a head's last byte, the
//! upstream's answer), so each of its timers is set later and later. `Sleep::reset` moves the wheel's entry
//! every time (~160 instructions: the deadline turned into a tick, the entry taken out and put back); a
//! [`Deadline`] set later only notes the new instant, lets its entry fire at the earlier one, and moves it
//! then — once per timeout's length, not once per request. A deadline set earlier moves the entry at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep};

/// A timer that resolves once its deadline has passed (see the module's documentation).
#[derive(Debug)]
pub struct Deadline {
    /// The wheel's entry: due at or before `at`.
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    pub fn new(at: Instant) -> Self {
        Self { sleep: Box::pin(tokio::time::sleep_until(at)), at }
    }

    /// Moves the deadline to `at`.
    pub fn set(&mut self, at: Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        self.at = at;
    }

    /// `old` [`Self::set`] to `after` from now, or a new timer when there is none.
    pub fn after(old: Option<Self>, after: std::time::Duration) -> Self {
        let at = Instant::now() + after;
        match old {
            Some(mut deadline) => {
                deadline.set(at);
                deadline
            }
            None => Self::new(at),
        }
    }

    /// [`Self::after`] for the timer kept in `slot`.
    pub fn set_in(slot: &mut Option<Self>, after: std::time::Duration) -> &mut Self {
        let deadline = Self::after(slot.take(), after);
        slot.insert(deadline)
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if self.sleep.deadline() >= self.at {
                return Poll::Ready(());
            }
            // Due early: the deadline moved later since the entry was placed.
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_deadline_moved_later_is_not_passed_early() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_millis(20));
        deadline.set(start + Duration::from_millis(80));
        (&mut deadline).await;
        assert!(start.elapsed() >= Duration::from_millis(80), "resolved at {:?}", start.elapsed());
        // Once passed, a later deadline waits again.
        let again = Instant::now();
        deadline.set(again + Duration::from_millis(30));
        (&mut deadline).await;
        assert!(again.elapsed() >= Duration::from_millis(30), "resolved at {:?}", again.elapsed());
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_is_passed_then() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + Duration::from_secs(3600));
        deadline.set(start + Duration::from_millis(20));
        // The bound only ends a failing test: an hour's deadline left in place would hang it.
        tokio::time::timeout(Duration::from_secs(30), &mut deadline).await.expect("moved earlier");
        assert!(start.elapsed() >= Duration::from_millis(20));
        let mut slot = None;
        Deadline::set_in(&mut slot, Duration::from_secs(3600));
        Deadline::set_in(&mut slot, Duration::ZERO);
        tokio::time::timeout(Duration::from_secs(30), slot.as_mut().expect("made")).await.expect("due now");
    }
}
