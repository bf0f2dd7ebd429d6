//! Closed loop: every connection sends its next request as soon as the previous answer ended — for a
//! time window (saturation) or until a number of calls is spent (transparency), optionally with several
//! requests in flight on each connection (HTTP/1.1 pipelining, RFC 9112 §9.3.2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Errors, RunResult, Window, ns, verdict};
use crate::http::Conn;

/// When the workers stop, and which latencies they keep.
#[derive(Clone)]
enum Budget {
    /// Until `end`; latencies of requests inside `from..end` are kept.
    Until { from: Instant, end: Instant },
    /// Until the calls left are spent (shared by all workers); every latency is kept.
    Calls(Arc<AtomicU64>),
}

impl Budget {
    /// How many of `want` requests may start now (for `Calls`, taken from the budget); 0: stop.
    fn take(&self, want: u64) -> u64 {
        match self {
            Self::Until { end, .. } => u64::from(Instant::now() < *end).min(want),
            Self::Calls(left) => {
                let taken =
                    left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n - n.min(want)));
                taken.map_or(0, |n| n.min(want))
            }
        }
    }

    /// Gives back calls that were taken but never made.
    fn give_back(&self, calls: u64) {
        if let Self::Calls(left) = self {
            left.fetch_add(calls, Ordering::Relaxed);
        }
    }

    fn measured(&self, t0: Instant, t1: Instant) -> bool {
        match self {
            Self::Until { from, end } => t0 >= *from && t1 <= *end,
            Self::Calls(_) => true,
        }
    }
}

/// How a `calls` run sends.
#[derive(Debug, Clone, Copy)]
pub struct CallsShape {
    /// Requests sent back to back on a connection before its answers are read (1: no pipelining).
    pub in_flight: u64,
    /// Longest wait for one answer; a call without one is an error (and its connection is dropped).
    pub limit: Option<Duration>,
}

#[derive(Default)]
struct Worker {
    samples: Vec<u64>,
    total: u64,
    connections: u64,
    errors: Errors,
}

/// Runs one connection per entry of `requests` (each sends its own bytes over and over) for `window`.
pub async fn run(addr: SocketAddr, requests: Vec<Vec<u8>>, window: Window) -> RunResult {
    let (from, end) = window.instants();
    let shape = CallsShape { in_flight: 1, limit: None };
    let w = workers(addr, requests, Budget::Until { from, end }, shape).await;
    RunResult::new(w.samples, w.total, w.errors, w.connections, window.measure.as_secs_f64())
}

/// Makes `calls` requests over one connection per entry of `requests`, each connection sending its next
/// requests as soon as the previous answers ended. Every call counts: answered well, or an error; calls
/// a server closed the connection before (after an answer with `Connection: close`) are made again.
pub async fn calls(addr: SocketAddr, requests: Vec<Vec<u8>>, calls: u64, shape: CallsShape) -> RunResult {
    let started = Instant::now();
    let w = workers(addr, requests, Budget::Calls(Arc::new(AtomicU64::new(calls))), shape).await;
    RunResult::new(w.samples, w.total, w.errors, w.connections, started.elapsed().as_secs_f64())
}

async fn workers(addr: SocketAddr, requests: Vec<Vec<u8>>, budget: Budget, shape: CallsShape) -> Worker {
    let tasks: Vec<_> =
        requests.into_iter().map(|req| tokio::spawn(worker(addr, req, budget.clone(), shape))).collect();
    let mut all = Worker::default();
    for task in tasks {
        match task.await {
            Ok(w) => {
                all.samples.extend(w.samples);
                all.total += w.total;
                all.connections += w.connections;
                all.errors.merge(w.errors);
            }
            Err(e) => all.errors.add(|| format!("worker panicked: {e}")),
        }
    }
    all
}

async fn worker(addr: SocketAddr, req: Vec<u8>, budget: Budget, shape: CallsShape) -> Worker {
    let mut w = Worker { samples: Vec::with_capacity(1 << 16), ..Worker::default() };
    let in_flight = shape.in_flight.max(1);
    let batch = req.repeat(usize::try_from(in_flight).unwrap_or(1));
    let mut conn = None;
    loop {
        let n = budget.take(in_flight);
        if n == 0 {
            break;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => {
                    w.connections += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    // Each call taken fails: a server that refuses connections must not stall the run.
                    for _ in 0..n {
                        w.errors.add(|| format!("connect: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        let sent = usize::try_from(n).map_or(batch.len(), |n| n * req.len());
        if let Err(e) = c.send(&batch[..sent]).await {
            for _ in 0..n {
                w.errors.add(|| format!("send: {e}"));
            }
            conn = None;
            continue;
        }
        for answered in 0..n {
            let answer = match shape.limit {
                None => c.read_response().await,
                Some(limit) => tokio::time::timeout(limit, c.read_response())
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other(format!("no answer within {limit:?}")))),
            };
            let resp = match answer {
                Ok(resp) => resp,
                Err(e) => {
                    for _ in answered..n {
                        w.errors.add(|| format!("request: {e}"));
                    }
                    conn = None;
                    break;
                }
            };
            let t1 = Instant::now();
            match verdict::check(&resp.head, &resp.body) {
                Ok(()) => {
                    w.total += 1;
                    if budget.measured(t0, t1) {
                        w.samples.push(ns(t1 - t0));
                    }
                }
                Err(e) => w.errors.add(|| e),
            }
            if resp.head.close {
                // The server said it closes: requests sent after this one were never taken up.
                budget.give_back(n - answered - 1);
                conn = None;
                break;
            }
        }
    }
    w
}
