//! t. Transparency under keep-alive load: many 2026-07-28 `tools/call`s with a ~1.1 KiB body on 16
//! keep-alive connections through the proxy (`--threads 1`) to a fixture that closes every 25th keep-alive
//! connection it serves, counting every call that is not answered well; any error fails the run.
//!
//! Two shapes: each connection sends its next call the moment the previous answer is complete, and (a
//! tenth of the calls) two calls in flight per connection (HTTP/1.1 pipelining), so that a request always
//! arrives while the proxy is still answering the one before — where its idle probe once ate the first
//! byte of the next request (the upstream got `OST /mcp` and answered 405). The same calls go to the
//! fixture directly for comparison.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::load::closed::{self, CallsShape};
use crate::orchestrate::stack::{CLOSING_SERVER, Via};
use crate::report::{Check, Section, fmt};

/// Characters of the `echo` message: the request body is then ~1.1 KiB, the size the lost byte was
/// first seen with.
const MESSAGE_CHARS: usize = 820;
/// Longest wait for one answer; a call without one is an error.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// The pipelined shape makes this share of the calls (it meets the race on every second request, so
/// it needs far fewer).
const PIPELINED_SHARE: u64 = 10;

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    let mut s = Section::new(
        "t",
        "transparency under keep-alive load (2026-07-28 tools/call, upstream closing its connections)",
        &[
            "via",
            "shape",
            "calls",
            "answered well",
            "errors",
            "seconds",
            "calls/s",
            "p50 µs",
            "p99 µs",
            "connections",
        ],
    );
    let shapes = [
        ("keep-alive", 1, p.transparency_calls),
        ("pipelined ×2", 2, (p.transparency_calls / PIPELINED_SHARE).max(1)),
    ];
    // The proxy first: it is what the scenario is for, and the direct runs then cannot warm it.
    let mut endpoints = ctx.stack.endpoints(CLOSING_SERVER);
    endpoints.retain(|(via, _)| *via != Via::Nginx);
    endpoints.sort_by_key(|(via, _)| *via != Via::Proxy);
    let mut body_bytes = 0;
    for (via, ep) in endpoints {
        let request = ep.stateless_call("echo", &format!(r#"{{"message":"{}"}}"#, "m".repeat(MESSAGE_CHARS)));
        body_bytes = memchr::memmem::find(&request, b"\r\n\r\n").map_or(0, |head| request.len() - head - 4);
        for (shape, in_flight, calls) in shapes {
            let requests = vec![request.clone(); p.transparency_connections];
            let r =
                closed::calls(ep.addr, requests, calls, CallsShape { in_flight, limit: Some(CALL_LIMIT) })
                    .await;
            ctx.stack.check_alive()?;
            s.rows.push(vec![
                via.label().into(),
                shape.into(),
                calls.to_string(),
                r.requests_total.to_string(),
                r.errors.to_string(),
                fmt(r.seconds),
                fmt(r.rps),
                fmt(r.latency.p50_us),
                fmt(r.latency.p99_us),
                r.connections.to_string(),
            ]);
            s.count_errors(format!("{shape} via {}", via.label()), r.errors, r.first_error.as_deref());
            if via == Via::Proxy {
                let figure = format!("errors through the proxy, {shape} ({calls} calls)");
                s.checks.push(Check::new("t", figure, r.errors as f64, "errors").target("0", r.errors == 0));
            }
            s.push_raw(
                json!({"via": via, "shape": shape, "in_flight": in_flight, "calls": calls, "result": r}),
            );
        }
    }
    s.notes.push(format!(
        "`tools/call`s of `echo` (2026-07-28, headers MCP-Protocol-Version, Mcp-Method, Mcp-Name; {body_bytes}-byte body) on {} keep-alive connections per run; keep-alive: each connection sends its next call as soon as the previous answer ended; pipelined ×2: two calls sent back to back, then both answers read. Clients reconnect only when the server closes; the fixture closes every connection after {} requests (`Connection: close`; a pipelined call it never took up is made again). An error is a call without an answer within {} s, a non-2xx answer or a JSON-RPC error. Connections = connections the client opened.",
        p.transparency_connections,
        p.transparency_close_after,
        CALL_LIMIT.as_secs()
    ));
    Ok(s)
}
