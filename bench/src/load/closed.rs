//! Closed-loop saturation: every connection sends its next request as soon as the previous answer ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Errors, RunResult, Window, describe, ns};
use crate::http::Conn;

struct Worker {
    samples: Vec<u64>,
    total: u64,
    errors: Errors,
}

/// Runs one connection per entry of `requests` (each sends its own bytes over and over).
pub async fn run(addr: SocketAddr, requests: Vec<Vec<u8>>, window: Window) -> RunResult {
    let (from, end) = window.instants();
    let tasks: Vec<_> = requests.into_iter().map(|req| tokio::spawn(worker(addr, req, from, end))).collect();
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    let mut total = 0;
    for task in tasks {
        match task.await {
            Ok(w) => {
                samples.extend(w.samples);
                total += w.total;
                errors.merge(w.errors);
            }
            Err(e) => errors.add(|| format!("worker panicked: {e}")),
        }
    }
    RunResult::new(samples, total, errors, &window)
}

async fn worker(addr: SocketAddr, req: Vec<u8>, from: Instant, end: Instant) -> Worker {
    let mut w = Worker { samples: Vec::with_capacity(1 << 16), total: 0, errors: Errors::default() };
    let mut conn = None;
    while Instant::now() < end {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    w.errors.add(|| format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match c.request(&req).await {
            Ok(resp) if resp.head.status < 300 => {
                let t1 = Instant::now();
                w.total += 1;
                if t0 >= from && t1 <= end {
                    w.samples.push(ns(t1 - t0));
                }
                if resp.head.close {
                    conn = None;
                }
            }
            Ok(resp) => {
                w.errors.add(|| describe(resp.head.status, &resp.body));
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
