//! Session affinity with no shared store: sealed `Mcp-Session-Id` tokens route every call of a session to
//! its instance from any replica holding the key, restore the upstream's own id, and refuse tokens that
//! were tampered with, sealed with another key, or point at an instance that is gone.

use mcpgw_proto::v1::{LoadBalancing, Transport, proxy_message::Kind};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::*;

const KEY: &str = "7T2ULrhWSqF3WzSU2X7DZ7iZ3XHq8KFW3FSbrCzbYyE=";
const OTHER_KEY: &str = "b6a1f3a7c2d94e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";

fn table(version: u64, ups: &[FakeUpstream], transport: Transport) -> Table {
    let mut t = Table::new(version).server("alpha", transport, LoadBalancing::RoundRobin, "");
    for (i, up) in ups.iter().enumerate() {
        t = t.instance("alpha", &format!("i{i}"), &up.url(), 1);
    }
    t
}

async fn replica(cp: &mut FakeControlPlane, ups: &[FakeUpstream], key: &str) -> ProxyProcess {
    let proxy = ProxyProcess::start(&cp.url(), &["--session-key", key]).await;
    cp.push(table(1, ups, Transport::StreamableHttp).build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    proxy
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>, method: &str) -> reqwest::Response {
    let mut req = client.post(url).json(&json!({"jsonrpc": "2.0", "id": 1, "method": method}));
    if let Some(t) = token {
        req = req.header("mcp-session-id", t);
    }
    req.send().await.unwrap()
}

/// Index of the upstream that got the one request sent since the last look, and that request.
async fn landed(ups: &mut [FakeUpstream]) -> (usize, Recorded) {
    within("the request upstream", async {
        loop {
            for (i, up) in ups.iter_mut().enumerate() {
                if let Ok(r) = up.requests.try_recv() {
                    return (i, r);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
}

#[tokio::test]
async fn sessions_follow_their_instance_across_replicas_and_restarts() {
    let mut ups = Vec::new();
    for _ in 0..3 {
        ups.push(FakeUpstream::start().await);
    }
    let (mut cp_a, mut cp_b) = (FakeControlPlane::start().await, FakeControlPlane::start().await);
    let a = replica(&mut cp_a, &ups, KEY).await;
    let b = replica(&mut cp_b, &ups, KEY).await;
    let client = reqwest::Client::new();

    let mut sessions = Vec::new();
    for s in 0..12 {
        let first = if s % 2 == 0 { &a } else { &b };
        let resp = post(&client, &first.mcp_url("alpha"), None, "initialize").await;
        let token = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let (home, _) = landed(&mut ups).await;
        sessions.push((token, home));
    }
    let homes: std::collections::HashSet<_> = sessions.iter().map(|(_, h)| h).collect();
    assert_eq!(homes.len(), 3, "new sessions are balanced");
    for call in 0..4 {
        for (token, home) in &sessions {
            let via = if call % 2 == 0 { &b } else { &a };
            let resp = post(&client, &via.mcp_url("alpha"), Some(token), "tools/list").await;
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.headers()["mcp-session-id"].to_str().unwrap(),
                token,
                "the client keeps its token"
            );
            let (at, seen) = landed(&mut ups).await;
            assert_eq!(at, *home, "call {call} of a session lands on its instance");
            assert_eq!(
                seen.header("mcp-session-id"),
                Some(ups[at].session_id.as_str()),
                "upstream id restored"
            );
        }
    }

    // A proxy restarted with the same key keeps serving the sessions.
    drop(a);
    let mut cp_c = FakeControlPlane::start().await;
    let c = replica(&mut cp_c, &ups, KEY).await;
    let (token, home) = &sessions[0];
    assert_eq!(post(&client, &c.mcp_url("alpha"), Some(token), "tools/list").await.status(), 200);
    assert_eq!(landed(&mut ups).await.0, *home);

    // Another deployment's key cannot open them.
    let mut cp_d = FakeControlPlane::start().await;
    let stranger = replica(&mut cp_d, &ups, OTHER_KEY).await;
    let resp = post(&client, &stranger.mcp_url("alpha"), Some(token), "tools/list").await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["error"]["code"].as_i64(), body["error"]["data"]["reason"].as_str()),
        (Some(-32001), Some("session_not_found"))
    );
    assert!(ups.iter_mut().all(|u| u.drain().is_empty()), "a refused session reaches no upstream");
}

#[tokio::test]
async fn forged_truncated_and_orphaned_tokens_get_404() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await];
    let mut cp = FakeControlPlane::start().await;
    let proxy = replica(&mut cp, &ups, KEY).await;
    let client = reqwest::Client::new();
    let url = proxy.mcp_url("alpha");
    let token = post(&client, &url, None, "initialize").await.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let (home, _) = landed(&mut ups).await;

    let mut flipped = token.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let forged = [
        String::from_utf8(flipped).unwrap(),
        token[..token.len() - 4].to_owned(),
        token[..8].to_owned(),
        "not-a-token".to_owned(),
        ups[home].session_id.clone(),
        format!("{token}AAAA"),
    ];
    for bad in &forged {
        let resp = post(&client, &url, Some(bad), "tools/list").await;
        assert_eq!(resp.status(), 404, "{bad}");
    }
    assert!(ups.iter_mut().all(|u| u.drain().is_empty()), "no forged token reached an upstream");

    // The session's instance leaves the table: its sessions are gone, the others still work.
    let mut t = Table::new(2).server("alpha", Transport::StreamableHttp, LoadBalancing::RoundRobin, "");
    let other = 1 - home;
    t = t.instance("alpha", &format!("i{other}"), &ups[other].url(), 1);
    cp.push(t.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    assert_eq!(post(&client, &url, Some(&token), "tools/list").await.status(), 404);
    let fresh = post(&client, &url, None, "initialize").await;
    assert_eq!(fresh.status(), 200, "re-initializing lands on a live instance");
    assert_eq!(landed(&mut ups).await.0, other);
}

#[tokio::test]
async fn legacy_sse_clients_post_to_the_instance_holding_their_stream() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await];
    let (mut cp_a, mut cp_b) = (FakeControlPlane::start().await, FakeControlPlane::start().await);
    let a = ProxyProcess::start(&cp_a.url(), &["--session-key", KEY]).await;
    let b = ProxyProcess::start(&cp_b.url(), &["--session-key", KEY]).await;
    for cp in [&mut cp_a, &mut cp_b] {
        cp.push(table(1, &ups, Transport::Sse).build()).await;
        assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    }
    let client = reqwest::Client::new();
    let resp = client.get(format!("http://{}/mcp/alpha/sse", b.listen)).send();
    let mut senders = Vec::new();
    for up in &ups {
        let (tx, rx) = mpsc::channel(4);
        up.reply(Reply::Sse(rx));
        senders.push(tx);
    }
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let (home, seen) = landed(&mut ups).await;
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/upstream/mcp"));
    senders[home].send(Some("event: endpoint\ndata: /messages?sessionId=abc-123\n\n".into())).await.unwrap();
    let mut stream = resp.bytes_stream();
    use futures_util::StreamExt;
    let event = within("endpoint event", stream.next()).await.unwrap().unwrap();
    let event = String::from_utf8(event.to_vec()).unwrap();
    let uri =
        event.strip_prefix("event: endpoint\ndata: ").and_then(|r| r.strip_suffix("\n\n")).expect(&event);
    assert!(uri.starts_with("/mcp/alpha/message?sessionId="), "{uri}");
    assert!(!uri.contains("abc-123"), "the upstream session stays sealed");

    for via in [&a, &b, &a] {
        let resp = client
            .post(format!("http://{}{uri}", via.listen))
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let (at, seen) = landed(&mut ups).await;
        assert_eq!(at, home, "every POST reaches the instance holding the stream");
        assert_eq!(seen.path, "/messages?sessionId=abc-123");
    }
    let forged = client
        .post(format!("http://{}/mcp/alpha/message?sessionId=abc-123", a.listen))
        .json(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
}

#[tokio::test]
async fn streamable_http_clients_reach_a_legacy_sse_server_through_the_bridge() {
    use futures_util::StreamExt;
    let mut up = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &["--session-key", KEY, "--upstream-timeout", "10s"]).await;
    let t = Table::new(1).server("alpha", Transport::Sse, LoadBalancing::RoundRobin, "").instance(
        "alpha",
        "i0",
        &format!("http://{}/sse", up.addr),
        1,
    );
    cp.push(t.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let (events, rx) = mpsc::channel(8);
    up.reply(Reply::Sse(rx));
    let client = reqwest::Client::new();
    let url = proxy.mcp_url("alpha");

    // A modern request gets a non-modern 400, so dual-era clients fall back to initialize.
    let discover = client
        .post(&url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(discover.status(), 400);
    assert_eq!(discover.json::<Value>().await.unwrap()["error"]["data"]["reason"], "legacy_only");

    let init = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}))
                .send()
                .await
                .unwrap()
        }
    });
    let get = up.next_request().await;
    assert_eq!((get.method.as_str(), get.path.as_str()), ("GET", "/sse"));
    events.send(Some("event: endpoint\ndata: /messages?sessionId=abc\n\n".into())).await.unwrap();
    let posted = up.next_request().await;
    assert_eq!((posted.method.as_str(), posted.path.as_str()), ("POST", "/messages?sessionId=abc"));
    assert!(String::from_utf8_lossy(&posted.body).contains("initialize"));
    events
        .send(Some("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2024-11-05\"}}\n\n".into()))
        .await
        .unwrap();
    let init = init.await.unwrap();
    assert_eq!(init.status(), 200);
    let token = init.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let result: Value = init.json().await.unwrap();
    assert_eq!(result["result"]["protocolVersion"], "2024-11-05");

    let note = client
        .post(&url)
        .header("mcp-session-id", &token)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(note.status(), 202, "a notification is accepted");
    up.next_request().await;

    // Server-initiated messages reach the client's GET stream.
    let stream = client.get(&url).header("mcp-session-id", &token).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut stream = stream.bytes_stream();
    events
        .send(Some(
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"
                .into(),
        ))
        .await
        .unwrap();
    let got = within("a server notification on the GET stream", stream.next()).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&got).contains("list_changed"));

    let call = tokio::spawn({
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            client
                .post(url)
                .header("mcp-session-id", token)
                .json(&json!({"jsonrpc": "2.0", "id": "c-7", "method": "tools/call", "params": {"name": "echo"}}))
                .send()
                .await
                .unwrap()
        }
    });
    assert!(String::from_utf8_lossy(&up.next_request().await.body).contains("c-7"));
    // A second request with the id of one in flight would take its answer: refused, never sent upstream.
    let duplicate = client
        .post(&url)
        .header("mcp-session-id", &token)
        .json(&json!({"jsonrpc": "2.0", "id": "c-7", "method": "tools/call", "params": {"name": "echo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    assert!(up.drain().is_empty());
    events
        .send(Some("data: {\"jsonrpc\":\"2.0\",\"id\":\"c-7\",\"result\":{\"content\":[]}}\n\n".into()))
        .await
        .unwrap();
    let call = call.await.unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(call.json::<Value>().await.unwrap()["id"], "c-7");

    // The bridged stream lives in this proxy: another replica sends the client back to initialize.
    let mut cp_b = FakeControlPlane::start().await;
    let b = ProxyProcess::start(&cp_b.url(), &["--session-key", KEY]).await;
    cp_b.push(
        Table::new(1)
            .server("alpha", Transport::Sse, LoadBalancing::RoundRobin, "")
            .instance("alpha", "i0", &format!("http://{}/sse", up.addr), 1)
            .build(),
    )
    .await;
    assert!(matches!(cp_b.next_reply().await, Kind::Ack(_)));
    assert_eq!(post(&client, &b.mcp_url("alpha"), Some(&token), "tools/list").await.status(), 404);

    let deleted = client.delete(&url).header("mcp-session-id", &token).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        within("the upstream stream to close", up.stream_ends.recv()).await,
        Some(StreamEnd::ClosedByProxy)
    );
    assert_eq!(post(&client, &url, Some(&token), "tools/list").await.status(), 404);
}
