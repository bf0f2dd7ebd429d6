//! The health state machine of one instance: thresholds of consecutive results move it between unknown,
//! healthy and unhealthy. Pure, so the rules are unit-tested without I/O.

use crate::model::HealthStatus;

/// Consecutive results and the current verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    pub status: HealthStatus,
    pub successes: u32,
    pub failures: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Self { status: HealthStatus::Unknown, successes: 0, failures: 0 }
    }
}

/// Thresholds in force for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Successes that bring an unhealthy instance back.
    pub healthy: u32,
    /// Failures that take a healthy or unknown instance out.
    pub unhealthy: u32,
}

impl Tracker {
    /// Applies one probe result; returns whether the status changed.
    ///
    /// An unknown instance already takes traffic, so its first success makes it healthy at once; an
    /// unhealthy one needs `healthy` successes in a row to come back, and any instance becomes unhealthy
    /// after `unhealthy` failures in a row.
    pub fn observe(&mut self, ok: bool, thresholds: Thresholds) -> bool {
        let before = self.status;
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            match self.status {
                HealthStatus::Unknown => self.status = HealthStatus::Healthy,
                HealthStatus::Unhealthy if self.successes >= thresholds.healthy => {
                    self.status = HealthStatus::Healthy;
                }
                _ => {}
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.status != HealthStatus::Unhealthy && self.failures >= thresholds.unhealthy {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.status != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { healthy: 2, unhealthy: 3 };

    #[test]
    fn first_success_makes_an_unknown_instance_healthy() {
        let mut t = Tracker::default();
        assert!(t.observe(true, T));
        assert_eq!(t.status, HealthStatus::Healthy);
        assert!(!t.observe(true, T));
    }

    #[test]
    fn failures_and_recovery_follow_the_thresholds() {
        let mut t = Tracker { status: HealthStatus::Healthy, ..Default::default() };
        assert!(!t.observe(false, T));
        assert!(!t.observe(false, T));
        assert!(!t.observe(true, T), "a success resets the failure count");
        assert!(!t.observe(false, T));
        assert!(!t.observe(false, T));
        assert!(t.observe(false, T));
        assert_eq!(t.status, HealthStatus::Unhealthy);
        assert!(!t.observe(false, T));
        assert!(!t.observe(true, T));
        assert!(t.observe(true, T));
        assert_eq!(t.status, HealthStatus::Healthy);
    }

    #[test]
    fn an_unknown_instance_can_go_straight_to_unhealthy() {
        let mut t = Tracker::default();
        let one = Thresholds { healthy: 1, unhealthy: 1 };
        assert!(t.observe(false, one));
        assert_eq!(t.status, HealthStatus::Unhealthy);
        assert!(t.observe(true, one));
    }
}
