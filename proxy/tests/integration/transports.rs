//! Servers on message transports — legacy HTTP+SSE, WebSocket, stdio — bridged for Streamable HTTP
//! clients: each transport gets the same instance choice, retries, breaker and least-connections
//! accounting as forwarded requests, and bridges are bounded (caps, idle expiry, processes killed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mcpgw_proto::v1::{LoadBalancing, Transport, proxy_message::Kind};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const PYTHON: &str = "python3";

fn fixture() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stdio_server.py").to_owned()
}

/// What the in-test SSE and WebSocket servers answer (the stdio fixture answers the same).
fn answer(name: &str, message: &Value) -> Option<Value> {
    let id = message.get("id")?;
    let result = match message["method"].as_str()? {
        "initialize" => {
            json!({"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": {"name": name, "version": "1"}})
        }
        "tools/call" => match message["params"]["name"].as_str() {
            Some("whoami") => json!({"content": [{"type": "text", "text": name}]}),
            _ => json!({"content": [{"type": "text", "text": message["params"]["arguments"]["message"]}]}),
        },
        _ => json!({}),
    };
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// A legacy HTTP+SSE server: `GET /sse` opens a stream whose endpoint is `/message?sid=N`; each POST there
/// is accepted (202) and answered on the stream.
struct SseServer {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
}

impl SseServer {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let streams: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<String>>>> = Arc::default();
        let (count, next) = (open.clone(), Arc::new(AtomicUsize::new(0)));
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (streams, count, next) = (streams.clone(), count.clone(), next.clone());
                tokio::spawn(async move {
                    let _ = sse_conn(conn, name, streams, count, next).await;
                });
            }
        });
        Self { addr, open }
    }

    fn url(&self) -> String {
        format!("http://{}/sse", self.addr)
    }
}

async fn sse_conn(
    conn: TcpStream,
    name: &str,
    streams: Arc<Mutex<HashMap<usize, mpsc::UnboundedSender<String>>>>,
    open: Arc<AtomicUsize>,
    next: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut len = 0;
        loop {
            let mut h = String::new();
            conn.read_line(&mut h).await?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await?;
        if line.starts_with("GET") {
            let sid = next.fetch_add(1, Ordering::Relaxed);
            let (tx, mut rx) = mpsc::unbounded_channel();
            streams.lock().unwrap().insert(sid, tx);
            open.fetch_add(1, Ordering::Relaxed);
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let event = format!("event: endpoint\ndata: /message?sid={sid}\n\n");
            let mut out = conn.into_inner();
            let write = async |out: &mut TcpStream, event: String| {
                out.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await
            };
            let mut probe = [0u8; 1];
            let result = async {
                out.write_all(head.as_bytes()).await?;
                write(&mut out, event).await?;
                loop {
                    tokio::select! {
                        m = rx.recv() => match m {
                            Some(m) => write(&mut out, format!("event: message\ndata: {m}\n\n")).await?,
                            None => return Ok::<(), std::io::Error>(()),
                        },
                        n = out.read(&mut probe) => if matches!(n, Ok(0) | Err(_)) { return Ok(()) },
                    }
                }
            }
            .await;
            streams.lock().unwrap().remove(&sid);
            open.fetch_sub(1, Ordering::Relaxed);
            return result;
        }
        let sid: usize = path.rsplit('=').next().and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
        let stream = streams.lock().unwrap().get(&sid).cloned();
        let status = match (stream, serde_json::from_slice::<Value>(&body)) {
            (Some(stream), Ok(message)) => {
                if let Some(reply) = answer(name, &message) {
                    let _ = stream.send(reply.to_string());
                }
                "202 Accepted"
            }
            _ => "404 Not Found",
        };
        conn.get_mut()
            .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await?;
    }
}

/// A WebSocket server (subprotocol `mcp`): records the `Authorization` of each handshake.
struct WsServer {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
    authorization: Arc<Mutex<Vec<String>>>,
}

impl WsServer {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let authorization: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, seen) = (open.clone(), authorization.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (count, seen) = (count.clone(), seen.clone());
                tokio::spawn(async move {
                    // The handshake callback's error type is the library's.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                                    mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        seen.lock().unwrap().push(header("authorization"));
                        if header("sec-websocket-protocol").split(',').any(|p| p.trim() == "mcp") {
                            resp.headers_mut().insert("sec-websocket-protocol", "mcp".parse().unwrap());
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(conn, callback).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    while let Some(Ok(frame)) = ws.next().await {
                        let Message::Text(text) = frame else { continue };
                        let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                        if let Some(reply) = answer(name, &message)
                            && ws.send(Message::text(reply.to_string())).await.is_err()
                        {
                            break;
                        }
                    }
                    count.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        Self { addr, open, authorization }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// One JSON-RPC request: status, the session token answered, the body.
async fn rpc(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    id: u64,
    method: &str,
    params: Value,
) -> (u16, Option<String>, Value) {
    let mut req = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(token) = token {
        req = req.header("mcp-session-id", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let token = resp.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, token, body)
}

async fn initialize(client: &reqwest::Client, url: &str) -> String {
    let params = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let (status, token, body) = rpc(client, url, None, 1, "initialize", params).await;
    assert_eq!(status, 200, "initialize: {body}");
    assert!(body["result"]["serverInfo"]["name"].is_string(), "{body}");
    token.expect("a session token")
}

async fn tool(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    arguments: Value,
) -> (u16, Value) {
    let (status, _, body) =
        rpc(client, url, Some(token), 2, "tools/call", json!({"name": name, "arguments": arguments})).await;
    (status, body)
}

fn text(body: &Value) -> &str {
    body["result"]["content"][0]["text"].as_str().unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
}

async fn gone(pid: u32) {
    within(&format!("process {pid} to end"), async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn proxy_with(
    cp: &mut FakeControlPlane,
    table: mcpgw_proto::v1::RoutingUpdate,
    extra: &[&str],
) -> ProxyProcess {
    let proxy = ProxyProcess::start(&cp.url(), extra).await;
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    proxy
}

#[tokio::test]
async fn stdio_sessions_each_run_a_process_of_their_own() {
    let mut cp = FakeControlPlane::start().await;
    let table = Table::new(1)
        .server("local", Transport::Stdio, LoadBalancing::RoundRobin, "")
        .stdio_instance("local", "i0", PYTHON, &[&fixture(), "local"], &[("FIXTURE_SECRET", "s3cret")])
        .build();
    let proxy = proxy_with(&mut cp, table, &["--stdio-programs", PYTHON]).await;
    let (client, url) = (reqwest::Client::new(), proxy.mcp_url("local"));
    let a = initialize(&client, &url).await;
    let b = initialize(&client, &url).await;
    let pid = |body: &Value| text(body).split(' ').nth(1).unwrap().parse::<u32>().unwrap();
    let (status, who_a) = tool(&client, &url, &a, "whoami", json!({})).await;
    assert_eq!(status, 200, "{who_a}");
    let (_, who_b) = tool(&client, &url, &b, "whoami", json!({})).await;
    assert_ne!(pid(&who_a), pid(&who_b), "one process per session");
    assert_eq!(text(&tool(&client, &url, &a, "echo", json!({"message": "hi"})).await.1), "hi");
    // Its environment is the command's, plus PATH; nothing of the proxy's own (its session key, tokens).
    assert_eq!(text(&tool(&client, &url, &a, "env", json!({"name": "FIXTURE_SECRET"})).await.1), "s3cret");
    assert_eq!(text(&tool(&client, &url, &a, "env", json!({"name": "MCPGW_TEST_MARKER"})).await.1), "");
    assert_ne!(text(&tool(&client, &url, &a, "env", json!({"name": "PATH"})).await.1), "");
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains("stdio fixture local ready"), "stderr reaches the proxy's log");

    // A crash ends its session cleanly: the call in flight gets a gateway error, the token 404.
    let (status, crashed) = tool(&client, &url, &a, "crash", json!({})).await;
    assert_eq!(status, 502, "{crashed}");
    assert_eq!(crashed["error"]["data"]["reason"], "upstream_failed");
    gone(pid(&who_a)).await;
    assert_eq!(tool(&client, &url, &a, "echo", json!({"message": "x"})).await.0, 404);
    let again = initialize(&client, &url).await;
    assert_eq!(text(&tool(&client, &url, &again, "echo", json!({"message": "back"})).await.1), "back");
    // The other session never noticed.
    assert_eq!(text(&tool(&client, &url, &b, "echo", json!({"message": "b"})).await.1), "b");

    // DELETE ends the session and its process.
    let deleted = client.delete(&url).header("mcp-session-id", &b).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    gone(pid(&who_b)).await;
}

#[tokio::test]
async fn stdio_programs_must_be_allowed_on_the_proxy() {
    let mut cp = FakeControlPlane::start().await;
    let table = Table::new(1)
        .server("local", Transport::Stdio, LoadBalancing::RoundRobin, "")
        .stdio_instance("local", "i0", PYTHON, &[&fixture()], &[])
        .build();
    let proxy = proxy_with(&mut cp, table, &[]).await;
    let params = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let (status, _, body) =
        rpc(&reqwest::Client::new(), &proxy.mcp_url("local"), None, 1, "initialize", params).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["data"]["reason"], "stdio_not_allowed");
}

#[tokio::test]
async fn idle_bridges_end_and_their_processes_with_them() {
    let mut cp = FakeControlPlane::start().await;
    let table = Table::new(1)
        .server("local", Transport::Stdio, LoadBalancing::RoundRobin, "")
        .stdio_instance("local", "i0", PYTHON, &[&fixture(), "idle"], &[])
        .build();
    let proxy =
        proxy_with(&mut cp, table, &["--stdio-programs", PYTHON, "--bridge-idle-timeout", "1s"]).await;
    let (client, url) = (reqwest::Client::new(), proxy.mcp_url("local"));
    let token = initialize(&client, &url).await;
    let (_, who) = tool(&client, &url, &token, "whoami", json!({})).await;
    let pid: u32 = text(&who).split(' ').nth(1).unwrap().parse().unwrap();
    gone(pid).await;
    assert_eq!(tool(&client, &url, &token, "echo", json!({"message": "x"})).await.0, 404);
    let routes = proxy
        .wait_routes("the bridge to leave its instance", |v| {
            v["servers"][0]["instances"][0]["active_requests"] == 0
        })
        .await;
    assert_eq!(routes["servers"][0]["transport"], "stdio");
}

#[tokio::test]
async fn websocket_sessions_speak_mcp_with_the_gateways_credential() {
    let ws = WsServer::start("ws-a").await;
    let mut cp = FakeControlPlane::start().await;
    let mut table = Table::new(1)
        .server("sock", Transport::Websocket, LoadBalancing::RoundRobin, "")
        .instance("sock", "i0", &ws.url(), 1)
        .build();
    for resource in &mut table.upserts {
        if let Some(Kind2::Server(s)) = resource.kind.as_mut() {
            s.upstream_credential = Some(mcpgw_proto::v1::UpstreamCredential {
                kind: Some(mcpgw_proto::v1::upstream_credential::Kind::StaticHeader(
                    mcpgw_proto::v1::StaticHeader {
                        name: "authorization".into(),
                        value: "Bearer upstream-secret".into(),
                    },
                )),
            });
        }
    }
    let proxy = proxy_with(&mut cp, table, &[]).await;
    let (client, url) = (reqwest::Client::new(), proxy.mcp_url("sock"));
    let token = initialize(&client, &url).await;
    assert_eq!(text(&tool(&client, &url, &token, "echo", json!({"message": "über"})).await.1), "über");
    assert_eq!(ws.open.load(Ordering::Relaxed), 1);
    assert_eq!(ws.authorization.lock().unwrap().as_slice(), ["Bearer upstream-secret"]);
    let deleted = client.delete(&url).header("mcp-session-id", &token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    within("the WebSocket to close", async {
        while ws.open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

type Kind2 = mcpgw_proto::v1::resource::Kind;

/// A transport's live instance (named `name`) and one that cannot be reached.
enum Fleet {
    Sse(Vec<SseServer>),
    Ws(Vec<WsServer>),
    Stdio,
}

impl Fleet {
    async fn start(transport: Transport) -> Self {
        match transport {
            Transport::Sse => {
                Self::Sse(vec![SseServer::start("live-a").await, SseServer::start("live-b").await])
            }
            Transport::Websocket => {
                Self::Ws(vec![WsServer::start("live-a").await, WsServer::start("live-b").await])
            }
            _ => Self::Stdio,
        }
    }

    /// The routing table with `live` instances (of live-a, live-b) and a dead one.
    fn table(&self, version: u64, transport: Transport, live: usize) -> mcpgw_proto::v1::RoutingUpdate {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut table = Table::new(version).server("t", transport, LoadBalancing::LeastConnections, "");
        let names = ["live-a", "live-b"];
        for (i, name) in names.iter().enumerate().take(live) {
            table = match self {
                Self::Sse(s) => table.instance("t", name, &s[i].url(), 1),
                Self::Ws(s) => table.instance("t", name, &s[i].url(), 1),
                Self::Stdio => table.stdio_instance("t", name, PYTHON, &[&fixture(), name], &[]),
            };
        }
        match self {
            Self::Sse(_) => table.instance("t", "dead", &format!("http://{dead}/sse"), 1),
            Self::Ws(_) => table.instance("t", "dead", &format!("ws://{dead}/ws"), 1),
            Self::Stdio => table.stdio_instance("t", "dead", "/nonexistent/mcp-server", &[], &[]),
        }
        .build()
    }
}

/// The same resilience on every message transport: a session opened on an instance that cannot be
/// reached is opened on another (nothing was sent), the dead instance's breaker opens, and least
/// connections counts open sessions.
#[tokio::test]
async fn every_message_transport_retries_breaks_and_balances() {
    for transport in [Transport::Sse, Transport::Websocket, Transport::Stdio] {
        let fleet = Fleet::start(transport).await;
        let mut cp = FakeControlPlane::start().await;
        let allowed = format!("{PYTHON},/nonexistent/mcp-server");
        let proxy = proxy_with(&mut cp, fleet.table(1, transport, 1), &["--stdio-programs", &allowed]).await;
        let (client, url) = (reqwest::Client::new(), proxy.mcp_url("t"));
        let mut tokens = Vec::new();
        for _ in 0..6 {
            let token = initialize(&client, &url).await;
            assert_eq!(
                text(&tool(&client, &url, &token, "whoami", json!({})).await.1).split(' ').next(),
                Some("live-a"),
                "{transport:?}"
            );
            tokens.push(token);
        }
        let routes = proxy
            .wait_routes("the dead instance's breaker to open", |v| {
                v["servers"][0]["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["id"] == "dead" && i["breaker"] != "closed")
            })
            .await;
        let live = routes["servers"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "live-a")
            .cloned()
            .unwrap();
        assert_eq!(live["active_requests"], 6, "{transport:?}: open sessions count in flight: {routes}");

        // A second live instance takes every new session until it holds as many as the first.
        cp.push(fleet.table(2, transport, 2)).await;
        assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
        for _ in 0..4 {
            let token = initialize(&client, &url).await;
            let who = tool(&client, &url, &token, "whoami", json!({})).await.1;
            assert_eq!(text(&who).split(' ').next(), Some("live-b"), "{transport:?}: least connections");
            tokens.push(token);
        }
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// 10,000 `initialize` POSTs to a legacy SSE server hold at most the principal's cap of upstream streams;
/// the rest are refused (429) without reaching the upstream, and file descriptors and memory stay bounded.
#[tokio::test]
async fn ten_thousand_initializes_are_capped() {
    const CAP: usize = 50;
    let sse = SseServer::start("capped").await;
    let mut cp = FakeControlPlane::start().await;
    let table = Table::new(1)
        .server("old", Transport::Sse, LoadBalancing::RoundRobin, "")
        .instance("old", "i0", &sse.url(), 1)
        .build();
    let cap = CAP.to_string();
    let proxy = proxy_with(&mut cp, table, &["--max-streams-per-principal", &cap]).await;
    let pid = proxy.pid();
    let url = proxy.mcp_url("old");
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    // Warm up (the connection pool, the first table) before taking the baseline.
    let warm = initialize(&client, &url).await;
    assert_eq!(client.delete(&url).header("mcp-session-id", &warm).send().await.unwrap().status(), 200);
    within("the warm-up stream to close", async {
        while sse.open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (fds_before, rss_before) = (fd_count(pid), rss_kib(pid));
    let params = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let statuses: Vec<(u16, Option<String>)> = futures_util::stream::iter(0..10_000u64)
        .map(|i| {
            let (client, url, params) = (client.clone(), url.clone(), params.clone());
            async move {
                let (status, token, _) = rpc(&client, &url, None, i, "initialize", params).await;
                (status, token)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ok: Vec<&String> =
        statuses.iter().filter(|(s, _)| *s == 200).filter_map(|(_, t)| t.as_ref()).collect();
    let refused = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((ok.len(), refused), (CAP, 10_000 - CAP), "the cap holds");
    assert_eq!(sse.open.load(Ordering::Relaxed), CAP, "only admitted sessions reach the upstream");
    let (fds_after, rss_after) = (fd_count(pid), rss_kib(pid));
    println!("10,000 initializes: fds {fds_before} -> {fds_after}, RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(fds_after <= fds_before + CAP + 64, "file descriptors bounded: {fds_before} -> {fds_after}");
    assert!(rss_after <= rss_before + 64 * 1024, "memory bounded: {rss_before} KiB -> {rss_after} KiB");
    for token in ok {
        assert_eq!(client.delete(&url).header("mcp-session-id", token).send().await.unwrap().status(), 200);
    }
    within("every upstream stream to close", async {
        while sse.open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let _ = initialize(&client, &url).await;
}

/// Stopping the proxy kills the stdio processes of its sessions: none is left behind.
#[tokio::test]
async fn shutdown_kills_stdio_processes() {
    let mut cp = FakeControlPlane::start().await;
    let table = Table::new(1)
        .server("local", Transport::Stdio, LoadBalancing::RoundRobin, "")
        .stdio_instance("local", "i0", PYTHON, &[&fixture(), "bye"], &[])
        .build();
    let proxy = proxy_with(&mut cp, table, &["--stdio-programs", PYTHON]).await;
    let (client, url) = (reqwest::Client::new(), proxy.mcp_url("local"));
    let mut pids = Vec::new();
    for _ in 0..3 {
        let token = initialize(&client, &url).await;
        let (_, who) = tool(&client, &url, &token, "whoami", json!({})).await;
        pids.push(text(&who).split(' ').nth(1).unwrap().parse::<u32>().unwrap());
        // From now on its stdin closing (the proxy exiting) would not end it: only a kill does.
        assert_eq!(text(&tool(&client, &url, &token, "linger", json!({})).await.1), "lingering");
    }
    assert!(pids.iter().all(|p| alive(*p)));
    let status =
        std::process::Command::new("kill").args(["-TERM", &proxy.pid().to_string()]).status().unwrap();
    assert!(status.success());
    for pid in pids {
        gone(pid).await;
    }
}

/// A 2026-07-28 request (no session) to a stdio server.
async fn modern(client: &reqwest::Client, url: &str, id: u64, name: &str, arguments: Value) -> (u16, Value) {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    });
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments, "_meta": meta}});
    let resp = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", name)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// Requests without a session — a 2026-07-28 client's, and calls through `/mcp` — go to one bridge the
/// gateway holds per caller and server (one process for a stdio server), answered with the client's id;
/// `server/discover` says the server is reached through sessions, so dual-era clients open one instead.
#[tokio::test]
async fn sessionless_requests_share_the_callers_bridge() {
    let mut cp = FakeControlPlane::start().await;
    let mut table = Table::new(1)
        .server("local", Transport::Stdio, LoadBalancing::RoundRobin, "")
        .stdio_instance("local", "i0", PYTHON, &[&fixture(), "shared"], &[])
        .build();
    let tools = ["echo", "whoami"].map(|t| json!({"name": t, "inputSchema": {"type": "object"}}).to_string());
    table.upserts.push(mcpgw_proto::v1::Resource {
        kind: Some(Kind2::Catalog(mcpgw_proto::v1::Catalog {
            server_id: "id-local".into(),
            digest: vec![1],
            protocol_version: "2025-11-25".into(),
            capabilities_json: r#"{"tools":{}}"#.into(),
            tools: tools.to_vec(),
            ..Default::default()
        })),
    });
    let proxy = proxy_with(&mut cp, table, &["--stdio-programs", PYTHON]).await;
    let (client, url) = (reqwest::Client::new(), proxy.mcp_url("local"));
    let (status, first) = modern(&client, &url, 41, "whoami", json!({})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], 41, "the client's own id");
    assert_eq!(first["result"]["resultType"], "complete", "completed for a 2026-07-28 client");
    let (_, second) = modern(&client, &url, 41, "whoami", json!({})).await;
    assert_eq!(text(&first), text(&second), "one process serves the caller's sessionless requests");
    let concurrent = futures_util::future::join_all(
        (0..8).map(|i| modern(&client, &url, 1, "echo", json!({"message": format!("m{i}")}))),
    )
    .await;
    for (i, (status, body)) in concurrent.iter().enumerate() {
        assert_eq!((*status, text(body), &body["id"]), (200, format!("m{i}").as_str(), &json!(1)), "{body}");
    }
    // Its routing headers must match its body, as on any server.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let mismatched = client
        .post(&url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status(), 400);
    assert_eq!(mismatched.json::<Value>().await.unwrap()["error"]["data"]["reason"], "header_mismatch");
    let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}});
    let resp = client.post(&url).json(&discover).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["data"]["reason"], "legacy_only");

    // Through /mcp: the aggregated name is routed to the stdio server on the same kind of bridge.
    let agg = format!("http://{}/mcp", proxy.listen);
    let (status, echoed) = modern(&client, &agg, 5, "local_echo", json!({"message": "via /mcp"})).await;
    assert_eq!((status, text(&echoed)), (200, "via /mcp"), "{echoed}");
}
