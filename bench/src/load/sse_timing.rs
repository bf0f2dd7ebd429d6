//! SSE timing: each connection calls the fixture's `stream` tool back to back and times every event —
//! time to the first event from the request's send, and each event's transit from the moment the fixture
//! produced it (its stamp) to its arrival here.

use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use super::{Errors, Window, describe, ns, verdict};
use crate::http::{BodyDecoder, Conn};
use crate::sse::{drain_events, has_data, now_ns, stamp};
use crate::stats::Dist;

/// One SSE run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SseResult {
    pub streams: u64,
    pub events: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Request sent → first event received.
    pub first_event: Dist,
    /// Event produced by the fixture → received here.
    pub transit: Dist,
}

#[derive(Default)]
struct Worker {
    first: Vec<u64>,
    transit: Vec<u64>,
    streams: u64,
    errors: Errors,
}

/// `conns` connections each sending `request` (a `stream` tool call) back to back.
pub async fn run(addr: SocketAddr, request: Vec<u8>, conns: usize, window: Window) -> SseResult {
    let (from, end) = window.instants();
    let tasks: Vec<_> =
        (0..conns.max(1)).map(|_| tokio::spawn(worker(addr, request.clone(), from, end))).collect();
    let mut all = Worker::default();
    for task in tasks {
        match task.await {
            Ok(w) => {
                all.first.extend(w.first);
                all.transit.extend(w.transit);
                all.streams += w.streams;
                all.errors.merge(w.errors);
            }
            Err(e) => all.errors.add(|| format!("worker panicked: {e}")),
        }
    }
    SseResult {
        streams: all.streams,
        events: all.transit.len() as u64,
        errors: all.errors.count,
        first_error: all.errors.first,
        first_event: Dist::from_ns(&mut all.first),
        transit: Dist::from_ns(&mut all.transit),
    }
}

async fn worker(addr: SocketAddr, request: Vec<u8>, from: Instant, end: Instant) -> Worker {
    let mut w = Worker::default();
    let mut conn = match Conn::connect(addr).await {
        Ok(c) => c,
        Err(e) => {
            w.errors.add(|| format!("connect: {e}"));
            return w;
        }
    };
    while Instant::now() < end {
        let t0 = Instant::now();
        let measured = t0 >= from;
        if let Err(e) = one_stream(&mut conn, &request, t0, measured, &mut w).await {
            w.errors.add(|| e);
            match Conn::connect(addr).await {
                Ok(c) => conn = c,
                Err(_) => return w,
            }
        } else if measured {
            w.streams += 1;
        }
    }
    w
}

async fn one_stream(
    conn: &mut Conn,
    request: &[u8],
    t0: Instant,
    measured: bool,
    w: &mut Worker,
) -> Result<(), String> {
    conn.send(request).await.map_err(|e| format!("send: {e}"))?;
    let head = conn.read_head().await.map_err(|e| format!("head: {e}"))?;
    if !(200..300).contains(&head.status) || !head.event_stream {
        let body = conn.read_body(head.framing).await.unwrap_or_default();
        return Err(match verdict::check(&head, &body) {
            Err(e) => e,
            Ok(()) => format!("not an SSE answer: {}", describe(head.status, &body)),
        });
    }
    let mut decoder = BodyDecoder::new(head.framing);
    let mut buf = Vec::new();
    let mut first = true;
    let mut rpc_error = None;
    loop {
        let done = conn.next_body(&mut decoder, &mut buf).await.map_err(|e| format!("body: {e}"))?;
        let arrived = Instant::now();
        let arrived_ns = now_ns();
        drain_events(&mut buf, |event| {
            if !has_data(event) {
                return;
            }
            if rpc_error.is_none() && verdict::sse_has_rpc_error(event) {
                rpc_error = Some(describe(head.status, event));
            }
            if !measured {
                return;
            }
            if first {
                first = false;
                w.first.push(ns(arrived - t0));
            }
            if let Some(produced) = stamp(event) {
                w.transit.push(arrived_ns.saturating_sub(produced));
            }
        });
        if done {
            // An event the body ended in without its blank line is judged too.
            if rpc_error.is_none() && verdict::sse_has_rpc_error(&buf) {
                rpc_error = Some(describe(head.status, &buf));
            }
            // The stream is read to its end either way, so the connection stays usable.
            return rpc_error.map_or(Ok(()), |e| Err(format!("JSON-RPC error event: {e}")));
        }
    }
}
