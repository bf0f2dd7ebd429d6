//! Open loop at a fixed rate: a dispatcher releases request slots on a precise schedule (sleeping, then
//! yielding on its own core for the last stretch, as tokio timers tick in milliseconds) and idle
//! connections pick them up in order. Latency runs from the slot's scheduled time, so a request that
//! waited for a free connection is charged for the wait (wrk2's latency correction).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};

use super::{Errors, RunResult, Window, describe, ns};
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
        let conn = Conn::connect(addr).await;
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
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    let mut total = 0;
    for task in tasks {
        match task.await {
            Ok((s, t, e)) => {
                samples.extend(s);
                total += t;
                errors.merge(e);
            }
            Err(e) => errors.add(|| format!("worker panicked: {e}")),
        }
    }
    RunResult::new(samples, total, errors, &window)
}

async fn worker(
    conn: std::io::Result<Conn>,
    addr: SocketAddr,
    request: Arc<[u8]>,
    slots: Slots,
    from: Instant,
) -> (Vec<u64>, u64, Errors) {
    let mut samples = Vec::with_capacity(1 << 14);
    let mut errors = Errors::default();
    let mut total = 0;
    let mut conn = conn.ok();
    loop {
        let Some(scheduled) = slots.lock().await.recv().await else { break };
        if conn.is_none() {
            conn = Conn::connect(addr).await.ok();
        }
        let Some(c) = &mut conn else {
            errors.add(|| "connect failed".to_owned());
            continue;
        };
        match c.request(&request).await {
            Ok(resp) if resp.head.status < 300 => {
                total += 1;
                if scheduled >= from {
                    samples.push(ns(Instant::now() - scheduled));
                }
                if resp.head.close {
                    conn = None;
                }
            }
            Ok(resp) => {
                errors.add(|| describe(resp.head.status, &resp.body));
                if resp.head.close {
                    conn = None;
                }
            }
            Err(e) => {
                errors.add(|| format!("request: {e}"));
                conn = None;
            }
        }
    }
    (samples, total, errors)
}
