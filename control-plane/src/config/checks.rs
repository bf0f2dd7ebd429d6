//! Settings of the health checks and discovery: their defaults, human durations, and the replica's name.

use std::time::Duration;

use super::ConfigError;

/// Defaults of the active health checks; each server may override interval, timeout and thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthDefaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub concurrency: usize,
}

impl Default for HealthDefaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            concurrency: 16,
        }
    }
}

/// Parses a human duration for `flag`, refusing values outside `min..=max`.
pub fn parse_duration(
    flag: &'static str,
    raw: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let bad = |why: String| ConfigError::Duration { flag, value: raw.to_owned(), why };
    let d = humantime::parse_duration(raw.trim()).map_err(|e| bad(e.to_string()))?;
    if d < min || d > max {
        return Err(bad(format!(
            "{} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        )));
    }
    Ok(d)
}

pub(super) fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control-plane".to_owned());
    format!("{host}-{}", std::process::id())
}
