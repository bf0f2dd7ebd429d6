//! Closed loop for fault injection: connections call until told to stop, and every call is kept with when
//! it ended, how long it took and whether it was answered well (`verdict::check`), so that a run can say
//! how many calls failed in any window and when the service recovered from a fault.
//!
//! A connection that cannot connect, or whose connection breaks, fails the call it was making and moves
//! on to the next target (a client's failover between replicas; with one target it reconnects).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::verdict;
use crate::http::Conn;

/// Where calls go: an address and the request bytes sent there.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub request: Vec<u8>,
}

/// One call: when it ended (since the loop started), how long it took, and what went wrong if anything.
#[derive(Debug, Clone)]
pub struct Call {
    pub ended: Duration,
    pub took: Duration,
    pub error: Option<String>,
}

/// A running loop.
pub struct Loop {
    stop: Arc<AtomicBool>,
    /// Calls ended so far, answered well or not.
    done: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<JoinHandle<Vec<Call>>>,
}

/// Pause after a refused connection, so that a service that is down is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(5);

impl Loop {
    /// Starts `connections` connections; connection `i` starts on target `i % targets.len()`. A call
    /// without an answer within `limit` fails (and its connection is dropped).
    pub fn start(targets: Vec<Target>, connections: usize, limit: Duration) -> Self {
        assert!(!targets.is_empty(), "a loop needs a target");
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let targets = Arc::new(targets);
        let tasks = (0..connections)
            .map(|i| {
                let shared = Shared { stop: stop.clone(), done: done.clone(), started, limit };
                tokio::spawn(worker(targets.clone(), i % targets.len(), shared))
            })
            .collect();
        Self { stop, done, started, tasks }
    }

    /// Calls ended so far.
    pub fn calls(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `n` more calls than now have ended (the load went on through whatever happens
    /// meanwhile), or `timeout` passed; returns whether they did.
    pub async fn advance(&self, n: u64, timeout: Duration) -> bool {
        let target = self.calls() + n;
        let deadline = Instant::now() + timeout;
        while self.calls() < target {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Time since the loop started (to mark when a fault was injected, on the calls' clock).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every connection after its current call and returns every call, in the order they ended.
    pub async fn stop(self) -> Timeline {
        self.stop.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        for task in self.tasks {
            match task.await {
                Ok(mine) => calls.extend(mine),
                Err(e) => calls.push(Call {
                    ended: self.started.elapsed(),
                    took: Duration::ZERO,
                    error: Some(format!("load worker panicked: {e}")),
                }),
            }
        }
        calls.sort_by_key(|c| c.ended);
        Timeline { calls }
    }
}

/// What every worker of a loop shares.
struct Shared {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    started: Instant,
    limit: Duration,
}

async fn worker(targets: Arc<Vec<Target>>, mut at: usize, shared: Shared) -> Vec<Call> {
    let Shared { stop, done, started, limit } = shared;
    let mut calls = Vec::with_capacity(1 << 14);
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::SeqCst) {
        let target = &targets[at];
        let t0 = Instant::now();
        let outcome = async {
            let c = match &mut conn {
                Some(c) => c,
                None => conn.insert(Conn::connect(target.addr).await.map_err(|e| format!("connect: {e}"))?),
            };
            c.send(&target.request).await.map_err(|e| format!("send: {e}"))?;
            let answer = tokio::time::timeout(limit, c.read_response())
                .await
                .map_err(|_| format!("no answer within {limit:?}"))?
                .map_err(|e| format!("read: {e}"))?;
            Ok::<_, String>(answer)
        }
        .await;
        let error = match outcome {
            Ok(answer) => {
                if answer.head.close {
                    conn = None;
                }
                verdict::check(&answer.head, &answer.body).err()
            }
            Err(e) => {
                // The connection is gone or useless: fail over to the next target.
                conn = None;
                at = (at + 1) % targets.len();
                if e.starts_with("connect") {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                Some(e)
            }
        };
        calls.push(Call { ended: started.elapsed(), took: t0.elapsed(), error });
        done.fetch_add(1, Ordering::SeqCst);
    }
    calls
}

/// Every call of a stopped loop, in the order they ended.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub calls: Vec<Call>,
}

impl Timeline {
    pub fn total(&self) -> usize {
        self.calls.len()
    }

    pub fn failed(&self) -> usize {
        self.calls.iter().filter(|c| c.error.is_some()).count()
    }

    /// Calls answered well.
    pub fn ok(&self) -> usize {
        self.total() - self.failed()
    }

    /// Failed calls that ended within `from..to`.
    pub fn failed_in(&self, from: Duration, to: Duration) -> usize {
        self.calls.iter().filter(|c| c.error.is_some() && c.ended >= from && c.ended < to).count()
    }

    /// Calls answered well that ended after `t`.
    pub fn ok_after(&self, t: Duration) -> usize {
        self.calls.iter().filter(|c| c.error.is_none() && c.ended >= t).count()
    }

    /// How long after `t` calls kept failing: from `t` to the end of the last failed call after it (zero
    /// when none failed after `t`).
    pub fn recovery_after(&self, t: Duration) -> Duration {
        self.calls
            .iter()
            .filter(|c| c.error.is_some() && c.ended >= t)
            .map(|c| c.ended - t)
            .max()
            .unwrap_or_default()
    }

    /// The distinct errors, at most `n`, with how many calls had each.
    pub fn errors(&self, n: usize) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for e in self.calls.iter().filter_map(|c| c.error.as_deref()) {
            // The kind of error, not its details (ports, ids).
            let kind: String = e.chars().take(60).collect();
            if let Some((_, count)) = out.iter_mut().find(|(k, _)| *k == kind) {
                *count += 1;
            } else if out.len() < n {
                out.push((kind, 1));
            }
        }
        out
    }

    /// The longest a call took.
    pub fn slowest(&self) -> Duration {
        self.calls.iter().map(|c| c.took).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ms: u64, ok: bool) -> Call {
        Call {
            ended: Duration::from_millis(ms),
            took: Duration::from_millis(1),
            error: (!ok).then(|| "connect: refused".to_owned()),
        }
    }

    #[test]
    fn windows_and_recovery() {
        let t = Timeline { calls: vec![call(10, true), call(20, false), call(30, false), call(40, true)] };
        assert_eq!((t.total(), t.failed(), t.ok()), (4, 2, 2));
        assert_eq!(t.failed_in(Duration::from_millis(15), Duration::from_millis(25)), 1);
        assert_eq!(t.ok_after(Duration::from_millis(35)), 1);
        assert_eq!(t.recovery_after(Duration::from_millis(15)), Duration::from_millis(15));
        assert_eq!(t.recovery_after(Duration::from_millis(35)), Duration::ZERO);
        assert_eq!(t.errors(5), [("connect: refused".to_owned(), 2)]);
    }
}
