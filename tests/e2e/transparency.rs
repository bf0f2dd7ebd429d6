//! What the proxy forwards is exactly what the client sent, under sustained keep-alive load: every
//! request reaches the upstream once, byte for byte, with its method intact, while the upstream closes its
//! keep-alive connections under the proxy and the clients send each next request the moment the previous
//! response is complete. A proxy that reads ahead on the client connection (Pingora's idle probe) and
//! drops what it read sends the next request upstream as `OST /mcp …`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mcpgw_bench::http::Conn;
use mcpgw_e2e::fake::RecordingOptions;
use mcpgw_e2e::mcp::{modern_body, modern_headers};
use mcpgw_e2e::{Gateway, RecordingUpstream};
use serde_json::{Value, json};

/// Client connections, each sending its requests back to back.
const CONNECTIONS: usize = 16;
/// Requests per connection.
const PER_CONNECTION: usize = 1_250;
/// Requests the upstream answers on one connection before closing it.
const UPSTREAM_KEEPALIVE_REQUESTS: usize = 25;
/// First request id, far from the ids of the control plane's own discovery requests to the upstream.
const FIRST_ID: u64 = 1_000_000;

/// A `tools/call` with a ~1.1 KiB body (the size the corruption was first seen with): a 2026-07-28 request
/// for even ids (the proxy cancels it when the client leaves), a legacy one for odd ids (drained instead).
fn request(host: &str, path: &str, id: u64) -> (Vec<u8>, Vec<u8>) {
    let params = json!({"name": "echo", "arguments": {"message": "m".repeat(900), "n": id}});
    let (headers, message) = if id.is_multiple_of(2) {
        (modern_headers("tools/call", &params), modern_body(json!(id), "tools/call", params))
    } else {
        (Vec::new(), json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
    };
    let body = serde_json::to_vec(&message).unwrap_or_default();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    (bytes, body)
}

/// The socket address of a proxy URL, and the URL parsed.
fn proxy_addr(url: &str) -> Result<(SocketAddr, reqwest::Url)> {
    let parsed = reqwest::Url::parse(url)?;
    let host = parsed.host_str().context("proxy URL has no host")?;
    let addr = format!("{host}:{}", parsed.port().context("proxy URL has no port")?).parse()?;
    Ok((addr, parsed))
}

/// Sends `PER_CONNECTION` requests with ids `first..`, reconnecting only when the proxy closes; returns
/// the failures as text.
async fn client(addr: SocketAddr, path: String, first: u64) -> Vec<String> {
    let host = addr.to_string();
    let mut failures = Vec::new();
    let mut conn: Option<Conn> = None;
    for id in first..first + PER_CONNECTION as u64 {
        let (bytes, body) = request(&host, &path, id);
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures.push(format!("request {id}: connect: {e}"));
                    continue;
                }
            },
        };
        match c.request(&bytes).await {
            Ok(resp) => {
                let answer: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
                let expected = json!({"jsonrpc": "2.0", "id": id, "result": {"receivedBytes": body.len()}});
                if resp.head.status != 200 || answer != expected {
                    failures.push(format!(
                        "request {id}: HTTP {} {}",
                        resp.head.status,
                        String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)])
                    ));
                }
                if resp.head.close {
                    conn = None;
                }
            }
            Err(e) => {
                failures.push(format!("request {id}: {e}"));
                conn = None;
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_load_reaches_the_upstream_byte_for_byte() -> Result<()> {
    let upstream = RecordingUpstream::start_with(RecordingOptions {
        close_after: Some(UPSTREAM_KEEPALIVE_REQUESTS),
        ..Default::default()
    })
    .await?;
    let gw = Gateway::start_with(&["--threads", "1"]).await?;
    let url = gw.add_server("keepalive", &upstream.url(), "streamable_http").await?;
    let (addr, parsed) = proxy_addr(&url)?;
    let path = parsed.path().to_owned();

    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| tokio::spawn(client(addr, path.clone(), FIRST_ID + (c * PER_CONNECTION) as u64)))
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await?);
    }
    let total = CONNECTIONS * PER_CONNECTION;
    let received = upstream.received();
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    let mut corrupted = Vec::new();
    let mut calls = 0;
    for r in &received {
        if r.method != "POST" || r.target != "/mcp" {
            corrupted.push(format!("request line {:?} {:?}", r.method, r.target));
        }
        // The control plane's discovery requests (initialize, tools/list...) reach the upstream too.
        let id = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["id"].as_u64());
        let Some(id) = id.filter(|id| *id >= FIRST_ID) else { continue };
        calls += 1;
        *by_id.entry(id).or_default() += 1;
        let (_, sent) = request(&addr.to_string(), &path, id);
        if r.body != sent {
            corrupted.push(format!("request {id}: body differs from what the client sent"));
        }
    }
    let duplicated = by_id.values().filter(|n| **n > 1).count();
    eprintln!(
        "{total} calls on {CONNECTIONS} keep-alive connections (upstream closes every {UPSTREAM_KEEPALIVE_REQUESTS}): \
         {} failed answers, {calls} calls reached the upstream, {} requests corrupted, {duplicated} ids received twice",
        failures.len(),
        corrupted.len()
    );
    if !failures.is_empty() || !corrupted.is_empty() {
        bail!(
            "{} of {total} calls failed, {} requests reached the upstream corrupted; first failures: {:?}; \
             first corruptions: {:?}",
            failures.len(),
            corrupted.len(),
            &failures[..failures.len().min(5)],
            &corrupted[..corrupted.len().min(5)]
        );
    }
    ensure!(calls == total, "the upstream received {calls} requests for {total} calls");
    ensure!(duplicated == 0, "{duplicated} requests reached the upstream twice");
    Ok(())
}

/// The deterministic form of the same defect: the client's next request arrives while the proxy is still
/// waiting for the upstream's answer to the previous one (HTTP/1.1 pipelining, RFC 9112 §9.3.2). Both
/// requests must reach the upstream intact and be answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_during_the_previous_answer_is_kept_whole() -> Result<()> {
    let upstream =
        RecordingUpstream::start_with(RecordingOptions { gated: true, ..Default::default() }).await?;
    let gw = Gateway::start_with(&["--threads", "1"]).await?;
    let url = gw.add_server("pipelined", &upstream.url(), "streamable_http").await?;
    let (addr, parsed) = proxy_addr(&url)?;
    for first in [FIRST_ID, FIRST_ID + 11] {
        pipelined_pair(&upstream, addr, parsed.path(), first).await?;
    }
    Ok(())
}

/// Sends request `first` and, while its answer is held back, request `first + 1` on the same connection.
async fn pipelined_pair(
    upstream: &RecordingUpstream,
    addr: SocketAddr,
    path: &str,
    first: u64,
) -> Result<()> {
    let second = first + 1;
    let (request_a, body_a) = request(&addr.to_string(), path, first);
    let (request_b, body_b) = request(&addr.to_string(), path, second);

    let mut conn = Conn::connect(addr).await?;
    conn.send(&request_a).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream.received().iter().any(|r| r.body == body_a) {
        ensure!(Instant::now() < deadline, "the first request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The proxy now waits for the upstream's answer with the client connection idle. The second request
    // arrives meanwhile; the pause gives the proxy time to notice it before the answer comes (without the
    // pause a faulty proxy may escape, a correct one passes either way).
    conn.send(&request_b).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstream.release(2);

    let mut answers = Vec::new();
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let head = conn.read_head().await?;
            let body = conn.read_body(head.framing).await?;
            anyhow::Ok(format!("HTTP {} {}", head.status, String::from_utf8_lossy(&body)))
        })
        .await
        .unwrap_or_else(|_| Ok("no answer".into()))
        .unwrap_or_else(|e| format!("connection failed: {e}"));
        answers.push(answer);
    }
    let expected: Vec<String> = [(first, &body_a), (second, &body_b)]
        .into_iter()
        .map(|(id, body)| {
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"receivedBytes": body.len()}});
            format!("HTTP 200 {answer}")
        })
        .collect();
    let lines: Vec<String> = upstream
        .received()
        .into_iter()
        .filter(|r| r.body == body_a || r.body == body_b)
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    ensure!(
        answers == expected && lines == ["POST /mcp", "POST /mcp"],
        "requests {first} and {second}: answers {answers:?} (expected {expected:?}); the upstream received {lines:?}"
    );
    Ok(())
}

/// Id of the request each smuggling shape hides behind the first one.
const SMUGGLED_ID: u64 = 7_770_001;

/// Request-smuggling shapes sent to the running proxy (RFC 9112 §6.3, §11.2): each hides a second
/// `tools/call` behind framing two HTTP/1 readers could disagree on. The refused shapes are answered 400
/// and the connection closed; the two the RFC lets a server read (`Transfer-Encoding` with a
/// `Content-Length`) are read as chunked — one request whose body is what the chunks carry — and the
/// connection closed after its answer. Either way the hidden request never reaches the upstream as a request
/// of its own, and the proxy serves the next client normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_never_reach_the_upstream() -> Result<()> {
    let upstream = RecordingUpstream::start_with(RecordingOptions::default()).await?;
    let gw = Gateway::start_with(&["--threads", "1"]).await?;
    let url = gw.add_server("smuggling", &upstream.url(), "streamable_http").await?;
    let (addr, parsed) = proxy_addr(&url)?;
    let (host, path) = (addr.to_string(), parsed.path().to_owned());

    let hidden_body = json!({"jsonrpc": "2.0", "id": SMUGGLED_ID, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "smuggled"}}})
    .to_string();
    let hidden = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{hidden_body}",
        hidden_body.len()
    );
    let outer_body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let head = |version: &str, framing: &str| {
        format!(
            "POST {path} {version}\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\n{framing}\r\n"
        )
    };
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    // (shape, bytes, refused with 400)
    let cl_te_body = format!("0\r\n\r\n{hidden}");
    let te_cl_body = format!("{}0\r\n\r\n", chunk(&hidden));
    let len = outer_body.len();
    let shapes: Vec<(&str, String, bool)> = vec![
        (
            "CL.TE: Content-Length covers the hidden request, chunked ends before it",
            head(
                "HTTP/1.1",
                &format!("content-length: {}\r\ntransfer-encoding: chunked\r\n", cl_te_body.len()),
            ) + &cl_te_body,
            false,
        ),
        (
            "TE.CL: the hidden request is the chunk, Content-Length stops before it",
            head("HTTP/1.1", "transfer-encoding: chunked\r\ncontent-length: 4\r\n") + &te_cl_body,
            false,
        ),
        (
            "two Content-Lengths that disagree",
            head("HTTP/1.1", &format!("content-length: {len}\r\ncontent-length: {}\r\n", len + hidden.len()))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "a signed Content-Length",
            head("HTTP/1.1", &format!("content-length: +{len}\r\n")) + &outer_body + &hidden,
            true,
        ),
        (
            "chunked not the last transfer coding",
            head("HTTP/1.1", &format!("transfer-encoding: chunked, identity\r\ncontent-length: {len}\r\n"))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "an unknown transfer coding",
            head("HTTP/1.1", &format!("transfer-encoding: xchunked\r\ncontent-length: {len}\r\n"))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "a space before the colon of Transfer-Encoding",
            head("HTTP/1.1", &format!("transfer-encoding : chunked\r\ncontent-length: {len}\r\n"))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "Transfer-Encoding folded onto a second line",
            head("HTTP/1.1", &format!("content-length: {len}\r\ntransfer-encoding:\r\n chunked\r\n"))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "chunked in an HTTP/1.0 request",
            head("HTTP/1.0", "transfer-encoding: chunked\r\n") + &te_cl_body,
            true,
        ),
        (
            "two Host fields",
            head("HTTP/1.1", &format!("host: elsewhere.example\r\ncontent-length: {len}\r\n"))
                + &outer_body
                + &hidden,
            true,
        ),
        (
            "a chunk size past 64 bits",
            head("HTTP/1.1", "transfer-encoding: chunked\r\n")
                + "1000000000000000a\r\n"
                + &hidden
                + "\r\n0\r\n\r\n",
            false,
        ),
    ];

    let mut wrong = Vec::new();
    for (shape, bytes, refused) in &shapes {
        let mut conn = Conn::connect(addr).await?;
        conn.send(bytes.as_bytes()).await?;
        // Every answer on the connection until the proxy closes it (a `no close` if it keeps it open).
        let mut statuses = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(answer) = conn.read_response().await {
                statuses.push(answer.head.status);
            }
        })
        .await
        .is_ok();
        let expected_first = refused.then_some(400);
        let answered_once =
            statuses.len() <= 1 && (expected_first.is_none() || statuses.first() == expected_first.as_ref());
        eprintln!("{shape}: answers {statuses:?}, closed: {closed}");
        if !closed || !answered_once {
            wrong.push(format!("{shape}: answers {statuses:?}, closed: {closed}"));
        }
    }
    let reached: Vec<String> = upstream
        .received()
        .into_iter()
        .filter(|r| {
            let id = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["id"].as_u64());
            id == Some(SMUGGLED_ID)
        })
        .map(|r| format!("{} {} {}", r.method, r.target, String::from_utf8_lossy(&r.body)))
        .collect();
    ensure!(
        wrong.is_empty() && reached.is_empty(),
        "answers: {wrong:#?}; hidden requests upstream: {reached:#?}"
    );

    // The proxy is unharmed: the next client's call is answered and forwarded as sent.
    let (bytes, body) = request(&host, &path, FIRST_ID + 1);
    let answer = Conn::connect(addr).await?.request(&bytes).await?;
    let expected = json!({"jsonrpc": "2.0", "id": FIRST_ID + 1, "result": {"receivedBytes": body.len()}});
    ensure!(
        answer.head.status == 200 && serde_json::from_slice::<Value>(&answer.body)? == expected,
        "after the shapes, a call was answered HTTP {} {}",
        answer.head.status,
        String::from_utf8_lossy(&answer.body)
    );
    ensure!(
        upstream.received().iter().any(|r| r.body == body),
        "the call after the shapes never reached the upstream"
    );
    Ok(())
}
