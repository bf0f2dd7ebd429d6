//! The load generator: closed-loop saturation, open-loop fixed rate with latency measured from each
//! request's scheduled time (no coordinated omission), SSE event timing, legacy session setup, and idle
//! SSE streams held open. Every latency is kept as a raw sample, and every answer is judged by one
//! verdict (`verdict::check`).

pub mod closed;
pub mod open;
pub mod setup;
pub mod sse_timing;
pub mod streams;
pub mod timeline;
pub mod verdict;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::Dist;

/// How long a run warms up (not counted) and then measures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

impl Window {
    /// The instants the measurement starts and ends, from now.
    pub fn instants(&self) -> (Instant, Instant) {
        let from = Instant::now() + self.warmup;
        (from, from + self.measure)
    }
}

/// One run against one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    /// Requests answered well inside the measurement window.
    pub requests: u64,
    /// Requests answered well in the whole run, warm-up included (for CPU per request).
    pub requests_total: u64,
    /// Requests that failed: no answer, a non-2xx answer, or a JSON-RPC error (`verdict::check`).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections the run opened (more than it runs when a server closes its keep-alive connections).
    pub connections: u64,
    /// Seconds measured.
    pub seconds: f64,
    pub rps: f64,
    pub latency: Dist,
}

impl RunResult {
    /// A run's figures from its latency samples (ns, measured requests only), all requests answered
    /// well, its errors, the connections it opened and the seconds measured.
    pub fn new(mut samples: Vec<u64>, total: u64, errors: Errors, connections: u64, seconds: f64) -> Self {
        Self {
            requests: samples.len() as u64,
            requests_total: total,
            errors: errors.count,
            first_error: errors.first,
            connections,
            seconds,
            rps: samples.len() as f64 / seconds,
            latency: Dist::from_ns(&mut samples),
        }
    }
}

/// Errors of a run, keeping the first one's text.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub first: Option<String>,
}

impl Errors {
    pub fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// A response's status and the start of its body, for error messages.
pub fn describe(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    format!("HTTP {status}: {text}")
}

pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
