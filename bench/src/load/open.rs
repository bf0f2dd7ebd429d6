//! Open loop at a fixed rate: a dispatcher releases request slots on a precise schedule (sleeping, then
//! yielding on its own core for the last stretch, as tokio timers tick in milliseconds) and idle
//! connections pick them up in order. Latency runs from the slot's scheduled time, so a request that
//! waited for a free connection is charged for the wait (wrk2's latency correction).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use super::{Errors, RunResult, Window, ns, verdict};
use crate::http::Conn;

/// Waits until `t` to within a few microseconds.
pub async fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > Duration::from_millis(3) {
            tokio::time::sleep(left - Duration::from_millis(2)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

type Slots = Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>;

/// Sends `request` at `rate` per second over up to `conns` connections.
pub async fn run(addr: SocketAddr, request: Vec<u8>, rate: f64, conns: usize, window: Window) -> RunResult {
    let (from, end) = window.instants();
    let (tx, rx) = mpsc::unbounded_channel();
    let slots: Slots = Arc::new(Mutex::new(rx));
    let request: Arc<[u8]> = request.into();
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let conn = Conn::connect(addr).await.ok();
        tasks.push(tokio::spawn(worker(conn, addr, request.clone(), slots.clone(), from)));
    }
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let start = Instant::now();
    let mut scheduled = 0u64;
    let mut at = start;
    while at < end {
        wait_until(at).await;
        if tx.send(at).is_err() {
            break;
        }
        scheduled += 1;
        at = start + interval.mul_f64(scheduled as f64);
    }
    drop(tx);
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
    RunResult::new(all.samples, all.total, all.errors, all.connections, window.measure.as_secs_f64())
}

#[derive(Default)]
struct Worker {
    samples: Vec<u64>,
    total: u64,
    connections: u64,
    errors: Errors,
}

async fn worker(
    conn: Option<Conn>,
    addr: SocketAddr,
    request: Arc<[u8]>,
    slots: Slots,
    from: Instant,
) -> Worker {
    let mut w = Worker { samples: Vec::with_capacity(1 << 14), ..Worker::default() };
    w.connections = u64::from(conn.is_some());
    let mut conn = conn;
    loop {
        let Some(scheduled) = slots.lock().await.recv().await else { break };
        if conn.is_none() {
            conn = Conn::connect(addr).await.ok();
            w.connections += u64::from(conn.is_some());
        }
        let Some(c) = &mut conn else {
            w.errors.add(|| "connect failed".to_owned());
            continue;
        };
        match c.request(&request).await {
            Ok(resp) => {
                let done = Instant::now();
                match verdict::check(&resp.head, &resp.body) {
                    Ok(()) => {
                        w.total += 1;
                        if scheduled >= from {
                            w.samples.push(ns(done - scheduled));
                        }
                    }
                    Err(e) => w.errors.add(|| e),
                }
                if resp.head.close {
                    conn = None;
                }
            }
            Err(e) => {
                w.errors.add(|| format!("request: {e}"));
                conn = None;
            }
        }
    }
    w
}
