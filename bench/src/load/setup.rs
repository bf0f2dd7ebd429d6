//! Legacy session setup: `initialize` then `notifications/initialized`, timed together, one after the
//! other on one keep-alive connection; each session is then deleted (not timed).

use std::time::Instant;

use super::{Errors, RunResult, Window, describe, ns, verdict};
use crate::http::Conn;
use crate::requests::Endpoint;

pub async fn run(ep: &Endpoint, window: Window) -> RunResult {
    let (from, end) = window.instants();
    let mut samples = Vec::new();
    let mut errors = Errors::default();
    let mut total = 0;
    let mut connections = 0;
    let init = ep.initialize();
    let mut conn = None;
    while Instant::now() < end {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::connect(ep.addr).await {
                Ok(c) => {
                    connections += 1;
                    conn.insert(c)
                }
                Err(e) => {
                    errors.add(|| format!("connect: {e}"));
                    break;
                }
            },
        };
        let t0 = Instant::now();
        match setup(c, ep, &init).await {
            Ok(session) => {
                let t1 = Instant::now();
                total += 1;
                if t0 >= from && t1 <= end {
                    samples.push(ns(t1 - t0));
                }
                if let Err(e) = delete(c, ep, &session).await {
                    errors.add(|| e);
                    conn = None;
                }
            }
            Err(e) => {
                errors.add(|| e);
                conn = None;
            }
        }
    }
    RunResult::new(samples, total, errors, connections, window.measure.as_secs_f64())
}

/// Opens a legacy session on `conn`; returns its id (as the client sees it).
pub async fn setup(conn: &mut Conn, ep: &Endpoint, init: &[u8]) -> Result<String, String> {
    let resp = conn.request(init).await.map_err(|e| format!("initialize: {e}"))?;
    verdict::check(&resp.head, &resp.body).map_err(|e| format!("initialize: {e}"))?;
    let Some(session) = resp.head.session_id else {
        return Err(format!("initialize without Mcp-Session-Id: {}", describe(resp.head.status, &resp.body)));
    };
    let resp = conn.request(&ep.initialized(&session)).await.map_err(|e| format!("initialized: {e}"))?;
    verdict::check(&resp.head, &resp.body).map_err(|e| format!("initialized: {e}"))?;
    if resp.head.status != 202 {
        return Err(format!(
            "initialized: {} (a notification is accepted with 202)",
            describe(resp.head.status, &resp.body)
        ));
    }
    Ok(session)
}

async fn delete(conn: &mut Conn, ep: &Endpoint, session: &str) -> Result<(), String> {
    let resp = conn.request(&ep.delete(session)).await.map_err(|e| format!("delete: {e}"))?;
    verdict::check(&resp.head, &resp.body).map_err(|e| format!("delete: {e}"))
}
