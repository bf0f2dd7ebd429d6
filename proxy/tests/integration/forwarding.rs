//! What crosses the proxy: headers and bodies both ways, SSE event by event, the era's cancellation rule,
//! and the errors a client can act on.

use futures_util::StreamExt;
use mcpgw_proto::v1::proxy_message::Kind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::*;

/// A proxy routing `alpha` to `upstream`, ready.
async fn routed(upstream: &FakeUpstream, extra: &[&str]) -> (FakeControlPlane, ProxyProcess) {
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), extra).await;
    cp.push(snapshot(1, &[("alpha", &format!("{}?fixed=1", upstream.url()))])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    (cp, proxy)
}

/// Opens a legacy session (as `principal`'s bearer credential, or anonymously): the upstream's id comes
/// back sealed in a token, which the upstream never sees.
async fn open_session(
    client: &reqwest::Client,
    proxy: &ProxyProcess,
    upstream: &mut FakeUpstream,
    principal: Option<&str>,
) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    let mut req = client.post(proxy.mcp_url("alpha")).json(&init);
    if let Some(key) = principal {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let token = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert_ne!(token, upstream.session_id, "the upstream's id is sealed");
    assert!(token.len() > 40, "{token}");
    assert_eq!(upstream.next_request().await.header("mcp-session-id"), None);
    token
}

/// A tools/call carrying its protocol version in `_meta`, as 2026-07-28 requires.
fn modern_call(id: u64, version: &str, tool: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": version,
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
    .into_bytes()
}

fn rpc_body(id: u64, padding: usize) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"message": "x".repeat(padding)}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn headers_and_bodies_cross_intact() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let client = reqwest::Client::new();
    let token = open_session(&client, &proxy, &mut upstream, Some(TEST_KEY)).await;
    let url = reqwest::Url::parse(&proxy.mcp_url("alpha")).unwrap();
    let own_origin = url.origin().ascii_serialization();
    for size in [0, 100 * 1024, 2 * 1024 * 1024] {
        let body = rpc_body(1, size);
        let resp = client
            .post(format!("{}?client=2", proxy.mcp_url("alpha")))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("origin", &own_origin)
            .header("authorization", format!("Bearer {TEST_KEY}"))
            .header("cookie", "sid=gateway-session")
            .header("mcp-session-id", &token)
            .header("mcp-protocol-version", "2025-11-25")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .header("mcp-param-region", "eu")
            .header("last-event-id", "ev-9")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["mcp-session-id"], token.as_str(), "the client keeps its token");
        let seen = upstream.next_request().await;
        assert_eq!(seen.body.len(), body.len(), "body of {size} bytes");
        assert!(seen.body == body, "body of {size} bytes arrives byte-identical");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/upstream/mcp?fixed=1", "the registered endpoint, not the client's query");
        assert_eq!(seen.header("host"), Some(upstream.addr.to_string().as_str()));
        for never in ["origin", "authorization", "cookie"] {
            assert_eq!(seen.header(never), None, "{never} must not reach the upstream");
        }
        for (name, value) in [
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", upstream.session_id.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "ev-9"),
        ] {
            assert_eq!(seen.header(name), Some(value), "{name}");
        }
    }
    // A chunked body (no Content-Length) arrives whole as well.
    let chunks = futures_util::stream::iter(
        [&b"{\"jsonrpc\":\"2.0\","[..], &b"\"id\":5,\"method\":\"ping\"}"[..]]
            .map(|c| Ok::<_, std::io::Error>(c.to_vec())),
    );
    let resp =
        client.post(proxy.mcp_url("alpha")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.next_request().await.body, br#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#);
}

#[tokio::test]
async fn sse_events_stream_one_by_one() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let (events, rx) = mpsc::channel(4);
    upstream.reply(Reply::Sse(rx));
    let resp = reqwest::Client::new().post(proxy.mcp_url("alpha")).body(rpc_body(1, 0)).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    for i in 0..3 {
        let event = format!("event: message\ndata: {{\"progress\":{i}}}\n\n");
        events.send(Some(event.clone())).await.unwrap();
        // The next event is only produced after this one reached the client: nothing may sit in a buffer.
        let got = within("an SSE event through the proxy", body.next()).await.unwrap().unwrap();
        assert_eq!(got, event.as_bytes());
    }
    events.send(None).await.unwrap();
    assert!(within("end of stream", body.next()).await.is_none());
    upstream.next_request().await;
    assert_eq!(within("stream end", upstream.stream_ends.recv()).await, Some(StreamEnd::Completed));
}

#[tokio::test]
async fn get_streams_and_delete_pass_through() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let client = reqwest::Client::new();
    let token = open_session(&client, &proxy, &mut upstream, None).await;
    let (events, rx) = mpsc::channel(4);
    upstream.reply(Reply::Sse(rx));
    let resp = client
        .get(proxy.mcp_url("alpha"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &token)
        .header("last-event-id", "41")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.next_request().await;
    assert_eq!((seen.method.as_str(), seen.header("last-event-id")), ("GET", Some("41")));
    assert_eq!(seen.header("content-length"), None, "a GET carries no body framing");
    let mut body = resp.bytes_stream();
    events.send(Some("id: 42\ndata: {}\n\n".into())).await.unwrap();
    assert_eq!(within("GET stream event", body.next()).await.unwrap().unwrap(), &b"id: 42\ndata: {}\n\n"[..]);
    drop(body);
    assert_eq!(
        within("GET stream closed", upstream.stream_ends.recv()).await,
        Some(StreamEnd::ClosedByProxy)
    );

    let resp = client.delete(proxy.mcp_url("alpha")).header("mcp-session-id", &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.next_request().await;
    assert_eq!(
        (seen.method.as_str(), seen.header("mcp-session-id")),
        ("DELETE", Some(upstream.session_id.as_str()))
    );
}

async fn disconnect_mid_stream(protocol_version: &str) -> StreamEnd {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let (events, rx) = mpsc::channel(4);
    upstream.reply(Reply::Sse(rx));
    let resp = reqwest::Client::new()
        .post(proxy.mcp_url("alpha"))
        .header("mcp-protocol-version", protocol_version)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(modern_call(1, protocol_version, "echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    events.send(Some("data: first\n\n".into())).await.unwrap();
    within("first event", body.next()).await.unwrap().unwrap();
    drop(body);
    // Once the proxy has seen the client leave, its stream gauge drops back to zero.
    within("the proxy to notice the client left", async {
        loop {
            let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
            if metrics.contains("mcpgw_proxy_open_streams 0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    if protocol_version < "2026-07-28" {
        // Legacy: the proxy keeps reading, so the upstream can finish its work.
        let _ = events.send(Some("data: second\n\n".into())).await;
        let _ = events.send(None).await;
    }
    // Modern: the upstream sees the close with nothing more sent.
    within("upstream stream end", upstream.stream_ends.recv()).await.unwrap()
}

#[tokio::test]
async fn stateless_requests_must_match_their_routing_headers() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let client = reqwest::Client::new();
    let send = |method: &'static str, name: &'static str, body: Vec<u8>| {
        client
            .post(proxy.mcp_url("alpha"))
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .header("mcp-name", name)
            .body(body)
            .send()
    };
    for (method, name) in [("tools/list", "echo"), ("tools/call", "other"), ("TOOLS/CALL", "echo")] {
        let resp = send(method, name, modern_call(9, "2026-07-28", "echo")).await.unwrap();
        assert_eq!(resp.status(), 400, "{method} {name}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!((body["error"]["code"].as_i64(), body["id"].as_i64()), (Some(-32020), Some(9)));
    }
    let resp = send("tools/call", "echo", modern_call(10, "2026-07-28", "echo")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.next_request().await;
    assert_eq!(seen.body, modern_call(10, "2026-07-28", "echo"), "only the matching request went upstream");
    assert!(upstream.requests.try_recv().is_err());
}

#[tokio::test]
async fn a_modern_client_closing_its_stream_cancels_upstream() {
    assert_eq!(disconnect_mid_stream("2026-07-28").await, StreamEnd::ClosedByProxy);
}

#[tokio::test]
async fn a_legacy_client_disconnect_does_not_cancel_upstream() {
    assert_eq!(disconnect_mid_stream("2025-11-25").await, StreamEnd::Completed);
}

async fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn errors_a_client_can_act_on() {
    let upstream = FakeUpstream::start().await;
    upstream.reply(Reply::Hang);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cp = FakeControlPlane::start().await;
    let proxy =
        ProxyProcess::start(&cp.url(), &["--upstream-timeout", "300ms", "--max-request-body", "1024"]).await;

    let (status, body) = post(&proxy.mcp_url("alpha"), rpc_body(3, 0)).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (503, Some("not_ready")));

    cp.push(snapshot(1, &[("slow", &upstream.url()), ("dead", &format!("http://{dead}/mcp"))])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    let (status, body) = post(&proxy.mcp_url("nope"), rpc_body(42, 0)).await;
    assert_eq!(status, 404);
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 42, "the error answers the request's id");
    assert_eq!(body["error"]["code"], -32000);
    assert_eq!(body["error"]["data"]["reason"], "unknown_server");

    let resp = reqwest::get(format!("http://{}/elsewhere", proxy.listen)).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "route_not_found");
    assert!(body.get("jsonrpc").is_none(), "a non-JSON-RPC request gets a plain JSON error");
    let (status, body) = post(&format!("http://{}/elsewhere", proxy.listen), b"{not json".to_vec()).await;
    assert_eq!((status, &body["id"]), (404, &Value::Null), "an unparsable MCP POST gets a null id");

    let (status, body) = post(&proxy.mcp_url("dead"), rpc_body(4, 0)).await;
    assert_eq!((status, body["id"].as_u64()), (502, Some(4)));
    assert_eq!(body["error"]["data"]["reason"], "upstream_unreachable");

    let (status, body) = post(&proxy.mcp_url("slow"), rpc_body(5, 0)).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (504, Some("upstream_timeout")));

    // The body was refused unread, so its id is unknown: a JSON-RPC error with a null id.
    let (status, body) = post(&proxy.mcp_url("slow"), rpc_body(6, 2048)).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (413, Some("body_too_large")));
    assert_eq!((&body["jsonrpc"], &body["id"]), (&json!("2.0"), &Value::Null));
    let chunked = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b' '; 400])));
    let resp = reqwest::Client::new()
        .post(proxy.mcp_url("slow"))
        .body(reqwest::Body::wrap_stream(chunked))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "a chunked body over the limit is refused too");

    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        r#"mcpgw_proxy_requests_total{method="tools/call",server="-",status="404"} 1"#,
        r#"mcpgw_proxy_requests_total{method="tools/call",server="dead",status="502"} 1"#,
        r#"mcpgw_proxy_requests_total{method="tools/call",server="slow",status="504"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

/// DNS-rebinding protection: a foreign `Host` gets 421 and a foreign `Origin` 403 before anything is
/// forwarded; the gateway's own origin and requests without `Origin` pass.
#[tokio::test]
async fn foreign_hosts_and_origins_are_refused() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let url = proxy.mcp_url("alpha");
    let own_origin = reqwest::Url::parse(&url).unwrap().origin().ascii_serialization();
    let client = reqwest::Client::new();
    let send = |host: Option<&str>, origin: Option<&str>| {
        let mut req = client.post(&url).header("content-type", "application/json").body(rpc_body(7, 0));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    let resp = send(Some("evil.example:8080"), Some("http://evil.example:8080")).await.unwrap();
    assert_eq!(resp.status(), 421);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["id"].as_u64(), body["error"]["data"]["reason"].as_str()),
        (Some(7), Some("misdirected_host"))
    );
    let resp = send(None, Some("http://evil.example")).await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["data"]["reason"], "forbidden_origin");
    assert!(upstream.drain().is_empty(), "nothing refused reaches the upstream");

    assert_eq!(send(None, None).await.unwrap().status(), 200);
    assert_eq!(send(Some("localhost"), Some(&own_origin)).await.unwrap().status(), 200);
    assert_eq!(upstream.drain().len(), 2);
}

/// An upstream's 401 is about the gateway's credentials: its challenge (which names the upstream's own
/// authorization server) never reaches the client, who gets the gateway's error instead.
#[tokio::test]
async fn an_upstream_401_is_the_gateways_error() {
    let upstream = FakeUpstream::start().await;
    upstream.reply(Reply::Unauthorized);
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let resp = reqwest::Client::new()
        .post(proxy.mcp_url("alpha"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {TEST_KEY}"))
        .body(rpc_body(8, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("www-authenticate").is_none(), "the upstream's challenge is not relayed");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 8);
    assert_eq!(body["error"]["data"]["reason"], "upstream_auth_refused");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("refused the gateway's credentials") && !message.contains("upstream.internal"),
        "{message}"
    );
}

/// The upstream gets the credential registered for it — the server's, or its instance's own — and never
/// the client's; the credential shows nowhere in the proxy's views.
#[tokio::test]
async fn upstreams_get_their_registered_credential_not_the_clients() {
    use mcpgw_proto::v1::{StaticHeader, UpstreamCredential, upstream_credential};
    let credential = |name: &str, value: &str| {
        Some(UpstreamCredential {
            kind: Some(upstream_credential::Kind::StaticHeader(StaticHeader {
                name: name.into(),
                value: value.into(),
            })),
        })
    };
    let (mut shared, mut own) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &shared.url()), ("beta", &own.url())]);
    for resource in &mut table.upserts {
        match resource.kind.as_mut() {
            Some(mcpgw_proto::v1::resource::Kind::Server(s)) => {
                s.upstream_credential = credential("x-api-key", "server-secret-1");
            }
            Some(mcpgw_proto::v1::resource::Kind::Instance(i)) if i.server_id == "id-beta" => {
                i.upstream_credential = credential("authorization", "Bearer instance-secret-2");
            }
            _ => {}
        }
    }
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    for (server, upstream) in [("alpha", &mut shared), ("beta", &mut own)] {
        let resp = reqwest::Client::new()
            .post(proxy.mcp_url(server))
            .header("content-type", "application/json")
            .bearer_auth(TEST_KEY)
            .header("cookie", "sid=client")
            .body(rpc_body(9, 0))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{server}");
        let seen = upstream.next_request().await;
        assert_eq!(seen.header("cookie"), None);
        if server == "alpha" {
            assert_eq!(seen.header("x-api-key"), Some("server-secret-1"));
            assert_eq!(seen.header("authorization"), None, "the client's key stays at the gateway");
        } else {
            assert_eq!(
                seen.header("authorization"),
                Some("Bearer instance-secret-2"),
                "the instance's own wins"
            );
            assert_eq!(seen.header("x-api-key"), None);
        }
    }
    let routes = reqwest::get(proxy.admin_url("/routes")).await.unwrap().text().await.unwrap();
    assert!(!routes.contains("secret"), "{routes}");
}

#[tokio::test]
async fn a_slow_client_is_cut_at_the_body_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &["--request-body-timeout", "300ms"]).await;
    cp.push(snapshot(1, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let mut conn = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let head = "POST /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":";
    conn.write_all(head.as_bytes()).await.unwrap();
    // The rest never comes: the proxy answers 408 at its deadline and closes.
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    within("the proxy to cut the slow client", conn.read_to_end(&mut answer)).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250), "not before the deadline");
    assert!(upstream.drain().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_client_dripping_its_head_is_disconnected_at_the_head_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &["--request-head-timeout", "300ms"]).await;
    cp.push(snapshot(1, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let conn = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    cut_while_dripping(conn, &proxy, &mut upstream, 1).await;

    // A client that sends its head at once is served, several requests on one connection (the deadline
    // is re-armed per request and never fires for a quick head, however long the connection lives).
    let mut conn = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = format!(
        "POST /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for n in 0..3 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = within("an answer on the same connection", conn.read(&mut byte)).await.unwrap();
            assert_eq!(
                read,
                1,
                "request {n}: the connection closed after {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "request {n}: {head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a Content-Length answer");
        let mut answer = vec![0u8; length];
        within("the answer's body", conn.read_exact(&mut answer)).await.unwrap();
        upstream.next_request().await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }

    // The deadline holds for every request of a connection, not only its first: the same kept-alive
    // connection now drips its fourth head and is cut at the deadline.
    cut_while_dripping(conn, &proxy, &mut upstream, 2).await;
}

/// Drips a request head on `conn`, a header line every 50 ms (each read well within Pingora's per-read
/// timeout), and checks that the proxy (`--request-head-timeout 300ms`) cuts it at the deadline — not
/// before, not seconds later — with nothing forwarded, and has counted `timeouts` head timeouts so far.
async fn cut_while_dripping(
    conn: tokio::net::TcpStream,
    proxy: &ProxyProcess,
    upstream: &mut FakeUpstream,
    timeouts: u32,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = conn.into_split();
    let started = std::time::Instant::now();
    let drip = tokio::spawn(async move {
        write.write_all(b"POST /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\n").await?;
        for i in 0.. {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            write.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes()).await?;
        }
        std::io::Result::Ok(())
    });
    let mut rest = Vec::new();
    let _ = within("the proxy to cut the dripping client", read.read_to_end(&mut rest)).await;
    let elapsed = started.elapsed();
    drip.abort();
    assert!(elapsed >= std::time::Duration::from_millis(250), "not before the deadline: {elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(3), "at the deadline, not later: {elapsed:?}");
    assert!(upstream.drain().is_empty(), "the dripped request never reached the upstream");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    let counted = format!("mcpgw_proxy_request_head_timeouts_total {timeouts}");
    assert!(metrics.contains(&counted), "{metrics}");
}

/// Opens a TCP connection to `to` from the loopback address `from` (127.0.0.0/8 are all this host).
async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends a `ping` on `conn` and reads the answer's status line and body.
async fn ping_on(conn: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let request = format!(
        "POST /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("an answer", conn.read_to_end(&mut answer)).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connections_are_capped_per_client_address_and_in_total() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy =
        ProxyProcess::start(&cp.url(), &["--max-connections", "3", "--max-connections-per-client", "2"])
            .await;
    cp.push(snapshot(1, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    // Two idle connections from 127.0.0.1 hold its places; its third is refused with 429.
    let first = connect_from([127, 0, 0, 1], proxy.listen).await;
    let _second = connect_from([127, 0, 0, 1], proxy.listen).await;
    let open = |n: usize| {
        let url = proxy.admin_url("/metrics");
        async move {
            within("the proxy to take the connections", async {
                let line = format!("mcpgw_proxy_connections_open {n}\n");
                while !reqwest::get(&url).await.unwrap().text().await.unwrap().contains(&line) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            })
            .await
        }
    };
    open(2).await;
    let answer = ping_on(&mut connect_from([127, 0, 0, 1], proxy.listen).await).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("too_many_connections") && answer.contains("retry-after: 1"), "{answer}");
    // Another address is served, and fills the proxy: a fourth address gets 503.
    let mut other = connect_from([127, 0, 0, 2], proxy.listen).await;
    open(3).await;
    let answer = ping_on(&mut connect_from([127, 0, 0, 3], proxy.listen).await).await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_connections"), "{answer}");
    let answer = ping_on(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    upstream.next_request().await;
    // A closed connection frees its place.
    drop(first);
    let answer = within("a freed place", async {
        loop {
            let answer = ping_on(&mut connect_from([127, 0, 0, 1], proxy.listen).await).await;
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(answer.contains("\"id\":1"), "{answer}");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_proxy_connections_refused_total{cap=\"per_client\"}"), "{metrics}");
    assert!(metrics.contains("mcpgw_proxy_connections_refused_total{cap=\"total\"} 1"), "{metrics}");
}

/// The upstream gets a request in one write: its first read holds the whole head and the whole body
/// (Pingora's client flushed the head alone, so the upstream woke for a head without its body).
#[tokio::test]
async fn a_request_reaches_the_upstream_in_one_write() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first_tx, mut first_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let first_tx = first_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let _ = first_tx.send(buf[..n].to_vec());
                    // The rest of a request split over several reads would arrive here: the test then fails
                    // on the first read alone, whatever is answered.
                    let body = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if conn.write_all(&[head.as_bytes(), body].concat()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    cp.push(snapshot(1, &[("alpha", &format!("http://{addr}/mcp?fixed=1"))])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    let client = reqwest::Client::new();
    for padding in [10, 1_000, 20_000] {
        let body = rpc_body(1, padding);
        let resp = client
            .post(proxy.mcp_url("alpha"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{padding}: {}", resp.text().await.unwrap_or_default());
        let first = within("the upstream's first read", first_rx.recv()).await.unwrap();
        let at = first.windows(4).position(|w| w == b"\r\n\r\n").expect("the whole head in the first read");
        assert_eq!(&first[at + 4..], &body[..], "{padding}-character request: the body in the same read");
    }
}

/// `mcpgw_proxy_open_streams` as the admin listener shows it.
async fn open_streams(proxy: &ProxyProcess) -> u64 {
    let text = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("mcpgw_proxy_open_streams ").and_then(|v| v.trim().parse().ok()))
        .expect("the gauge is exported")
}

#[tokio::test]
async fn a_get_stream_relayed_to_its_end_leaves_its_connection_to_the_next_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = routed(&upstream, &[]).await;
    let client = reqwest::Client::new();
    let token = open_session(&client, &proxy, &mut upstream, None).await;
    let (events, rx) = mpsc::channel(4);
    upstream.reply(Reply::Sse(rx));
    let mut conn = tokio::net::TcpStream::connect(proxy.listen).await.unwrap();
    let get = format!(
        "GET /mcp/alpha HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: {token}\r\n\r\n"
    );
    conn.write_all(get.as_bytes()).await.unwrap();
    assert_eq!(upstream.next_request().await.method, "GET");

    // The stream goes on after its request's future ended (the relay), counted as open while it lives.
    events.send(Some("id: 1\ndata: {}\n\n".into())).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("data: {}") {
        let n = within("the stream's first event", conn.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert_eq!(open_streams(&proxy).await, 1);
    events.send(Some("id: 2\ndata: {}\n\n".into())).await.unwrap();
    events.send(None).await.unwrap();
    while !answer.ends_with(b"0\r\n\r\n") {
        let n = within("the stream's end", conn.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed before the stream's end: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    assert!(text.contains("id: 1\ndata: {}\n\n") && text.contains("id: 2\ndata: {}\n\n"), "{text}");
    assert_eq!(
        within("the upstream's stream end", upstream.stream_ends.recv()).await,
        Some(StreamEnd::Completed)
    );

    // The same connection then carries the next request, served by the task the relay handed it to.
    let pong = ping_on(&mut conn).await;
    assert!(pong.starts_with("HTTP/1.1 200"), "{pong}");
    assert_eq!(upstream.next_request().await.method, "POST");
    within("the stream no longer counted", async {
        while open_streams(&proxy).await != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
