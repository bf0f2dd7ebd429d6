//! Errors the proxy answers itself: status codes with a JSON-RPC error envelope carrying the request's id,
//! and bodies that reach the upstream untouched.

use std::time::{Duration, Instant};

use anyhow::Result;
use mcpgw_e2e::{Gateway, McpHttp, McpResponse, RecordingUpstream, SilentUpstream, free_port};
use serde_json::{Value, json};

/// The body is `{"jsonrpc":"2.0","id":<id>,"error":{"code":<int>,"message":<string>}}`.
fn assert_jsonrpc_error(what: &str, resp: &McpResponse, id: &Value) {
    let body = resp.json().unwrap_or_else(|e| panic!("{what}: {e:#}"));
    eprintln!("{what}: {} {body}", resp.status);
    assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
    assert_eq!(&body["id"], id, "{what}: id not echoed: {body}");
    assert!(body.pointer("/error/code").is_some_and(Value::is_i64), "{what}: no integer error.code: {body}");
    assert!(body.pointer("/error/message").is_some_and(Value::is_string), "{what}: no error.message: {body}");
    assert!(body.get("result").is_none(), "{what}: {body}");
}

fn request(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_server_is_404_with_jsonrpc_error() -> Result<()> {
    let gw = Gateway::start().await?;
    let client = McpHttp::new(gw.proxy.url("no-such-server"));
    for id in [json!(42), json!("req-7")] {
        let resp = client.post(&request(id.clone())).await?;
        assert_eq!(resp.status.as_u16(), 404, "body {}", resp.text());
        assert_jsonrpc_error("unknown server", &resp, &id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() -> Result<()> {
    let gw = Gateway::start().await?;
    let closed = free_port()?;
    let url = gw.add_server("down", &format!("http://127.0.0.1:{closed}/mcp"), "streamable_http").await?;
    let resp = McpHttp::new(url).post(&request(json!(7))).await?;
    assert_eq!(resp.status.as_u16(), 502, "body {}", resp.text());
    assert_jsonrpc_error("unreachable upstream", &resp, &json!(7));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_504_after_upstream_timeout() -> Result<()> {
    let gw = Gateway::start_with(&["--upstream-timeout", "1s"]).await?;
    let silent = SilentUpstream::start().await?;
    let url = gw.add_server("silent", &silent.url(), "streamable_http").await?;
    let start = Instant::now();
    let resp = McpHttp::new(url).post(&request(json!(8))).await?;
    let took = start.elapsed();
    assert_eq!(resp.status.as_u16(), 504, "after {took:?}, body {}", resp.text());
    assert_jsonrpc_error("upstream timeout", &resp, &json!(8));
    assert!(took >= Duration::from_millis(900), "504 before the 1 s timeout: {took:?}");
    assert!(took < Duration::from_secs(10), "504 only after {took:?}");
    assert!(silent.accepted() >= 1, "the request never reached the silent upstream");
    Ok(())
}

/// A JSON-RPC `tools/call` whose body is exactly `size` bytes, with unusual spacing and non-ASCII text so
/// that any re-serialisation on the way shows.
fn body_of_size(id: u64, size: usize) -> Vec<u8> {
    let head = format!(
        "{{ \"jsonrpc\" :\"2.0\",\t\"id\": {id} , \"method\":\"tools/call\",\n \"params\":{{\"name\":\"echo\", \"arguments\": {{\"message\":\""
    );
    let tail = "\"}}\r\n}  ";
    let filler = "Grüße, 世界! \\u00e9 ";
    let mut body = head.into_bytes();
    while body.len() + filler.len() + tail.len() <= size {
        body.extend_from_slice(filler.as_bytes());
    }
    while body.len() + tail.len() < size {
        body.push(b'x');
    }
    body.extend_from_slice(tail.as_bytes());
    assert_eq!(body.len(), size);
    serde_json::from_slice::<Value>(&body).expect("the generated body is JSON");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_reach_the_upstream_byte_identical() -> Result<()> {
    let gw = Gateway::start_with(&["--max-request-body", "4194304"]).await?;
    let upstream = RecordingUpstream::start().await?;
    let url = gw.add_server("recorder", &upstream.url(), "streamable_http").await?;
    let client = McpHttp::new(url);
    for (id, size) in [(100u64, 100 * 1024), (101, 2 * 1024 * 1024)] {
        let body = body_of_size(id, size);
        let resp = client.post_bytes(body.clone(), &[]).await?;
        assert_eq!(resp.status.as_u16(), 200, "{size} bytes: body {}", resp.text());
        assert_eq!(resp.json()?["result"]["receivedBytes"], json!(size), "{}", resp.text());
        let received = upstream.received();
        let got = received.iter().find(|r| r.body.len() == size);
        let got = got.unwrap_or_else(|| {
            panic!(
                "no {size}-byte body upstream; got {:?}",
                received.iter().map(|r| r.body.len()).collect::<Vec<_>>()
            )
        });
        assert!(got.body == body, "the {size}-byte body was altered on the way");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() -> Result<()> {
    let gw = Gateway::start_with(&["--max-request-body", "65536"]).await?;
    let upstream = RecordingUpstream::start().await?;
    let url = gw.add_server("limited", &upstream.url(), "streamable_http").await?;
    let client = McpHttp::new(url);

    let small = client.post_bytes(body_of_size(1, 1024), &[]).await?;
    assert_eq!(small.status.as_u16(), 200, "a small body: {}", small.text());

    let resp = client.post_bytes(body_of_size(2, 100 * 1024), &[]).await?;
    assert_eq!(resp.status.as_u16(), 413, "body {}", resp.text());
    if !resp.body.is_empty() {
        // The proxy may refuse before reading the id: then it is null.
        let id = resp.json()?.get("id").cloned().unwrap_or(Value::Null);
        assert!(id == json!(2) || id.is_null(), "413 body id {id}");
        assert_jsonrpc_error("body over the limit", &resp, &id);
    }
    let sizes: Vec<usize> = upstream.received().iter().map(|r| r.body.len()).collect();
    assert!(sizes.iter().all(|&n| n <= 65536), "an oversized body reached the upstream: {sizes:?}");
    Ok(())
}
