//! Idle SSE streams held open: GET streams of one legacy session, each counted once its first comment
//! arrived (the stream is open end to end), then left idle.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::{Errors, describe, verdict};
use crate::http::{BodyDecoder, Conn};
use crate::requests::Endpoint;
use crate::sse::drain_events;

/// Opens `n` more streams, `concurrency` at a time; returns the open connections and the failures.
pub async fn open(ep: &Endpoint, session: &str, n: usize, concurrency: usize) -> (Vec<Conn>, Errors) {
    let request: Arc<[u8]> = ep.get_stream(session).into();
    let mut held = Vec::with_capacity(n);
    let mut errors = Errors::default();
    let mut set = JoinSet::new();
    let mut started = 0;
    while held.len() + (errors.count as usize) < n {
        while started < n && set.len() < concurrency.max(1) {
            set.spawn(one(ep.addr, request.clone()));
            started += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(conn))) => held.push(conn),
            Some(Ok(Err(e))) => errors.add(|| e),
            Some(Err(e)) => errors.add(|| format!("task: {e}")),
            None => break,
        }
    }
    (held, errors)
}

async fn one(addr: std::net::SocketAddr, request: Arc<[u8]>) -> Result<Conn, String> {
    let mut conn = Conn::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    conn.send(&request).await.map_err(|e| format!("send: {e}"))?;
    let head = conn.read_head().await.map_err(|e| format!("head: {e}"))?;
    if !(200..300).contains(&head.status) || !head.event_stream {
        let body = conn.read_body(head.framing).await.unwrap_or_default();
        let not_sse = || format!("not an SSE answer: {}", describe(head.status, &body));
        return Err(verdict::check(&head, &body).err().unwrap_or_else(not_sse));
    }
    let mut decoder = BodyDecoder::new(head.framing);
    let mut buf = Vec::new();
    loop {
        let done = conn.next_body(&mut decoder, &mut buf).await.map_err(|e| format!("body: {e}"))?;
        let mut events = 0;
        let mut rpc_error = None;
        drain_events(&mut buf, |event| {
            events += 1;
            if rpc_error.is_none() && verdict::sse_has_rpc_error(event) {
                rpc_error = Some(describe(head.status, event));
            }
        });
        if let Some(e) = rpc_error {
            return Err(format!("JSON-RPC error event: {e}"));
        }
        if events > 0 {
            return Ok(conn);
        }
        if done {
            return Err("stream ended before its first event".into());
        }
    }
}
