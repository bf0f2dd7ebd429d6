//! Retry budget: retries of requests that never reached an upstream (connection refused, unresolvable) go
//! to another instance, but never more than a fraction of recent traffic, so a failing fleet is not hit
//! with a retry storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Retries allowed per window: `min_per_window` plus `ratio` of the requests seen.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_window: u64,
    started: Instant,
    /// Window number (seconds since start) in the high 24 bits, requests in the low 40.
    requests: AtomicU64,
    retries: AtomicU64,
}

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl RetryBudget {
    pub fn new(ratio: f64, min_per_window: u64) -> Self {
        Self {
            ratio,
            min_per_window,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn window(&self) -> u64 {
        self.started.elapsed().as_secs() & 0xff_ffff
    }

    /// Adds one to a windowed counter, restarting it when the window moved; returns the new count.
    fn bump(counter: &AtomicU64, window: u64) -> u64 {
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let next = if current >> COUNT_BITS == window { current + 1 } else { (window << COUNT_BITS) | 1 };
            match counter.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next & COUNT_MASK,
                Err(seen) => current = seen,
            }
        }
    }

    /// Counts a first attempt.
    pub fn record_request(&self) {
        Self::bump(&self.requests, self.window());
    }

    /// Takes one retry from the budget, if any is left.
    pub fn try_retry(&self) -> bool {
        self.try_retry_in(self.window())
    }

    fn try_retry_in(&self, window: u64) -> bool {
        let requests = self.requests.load(Ordering::Relaxed);
        let requests = if requests >> COUNT_BITS == window { requests & COUNT_MASK } else { 0 };
        let allowed = self.min_per_window + (requests as f64 * self.ratio) as u64;
        Self::bump(&self.retries, window) <= allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_floor_plus_a_ratio() {
        let b = RetryBudget::new(0.2, 3);
        let granted = (0..10).filter(|_| b.try_retry_in(7)).count();
        assert_eq!(granted, 3, "the floor only, without traffic");
        let b = RetryBudget::new(0.2, 3);
        (0..100).for_each(|_| {
            RetryBudget::bump(&b.requests, 7);
        });
        let granted = (0..100).filter(|_| b.try_retry_in(7)).count();
        assert_eq!(granted, 23);
        assert!(b.try_retry_in(8), "a new window starts afresh");
    }
}
