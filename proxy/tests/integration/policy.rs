//! Authorization in the proxy: tenants, built-in and custom roles, API keys narrowed by their own
//! permissions. A server of another tenant or one no rule allows is missing; a forbidden tool, prompt or
//! resource is answered as missing and never reaches the upstream; restricted callers cannot smuggle a
//! message past the decision in a batch or a body with repeated keys.

use mcpgw_proto::v1::proxy_message::Kind;
use mcpgw_proto::v1::resource::Kind as RKind;
use mcpgw_proto::v1::{ApiKey, PermissionRule, Resource, Role};
use serde_json::{Value, json};

use crate::support::*;

fn key(id: &str, tenant: &str, roles: &[&str], permissions: Vec<PermissionRule>) -> Resource {
    Resource {
        kind: Some(RKind::ApiKey(ApiKey {
            id: id.into(),
            digest: mcpgw_proto::validate::api_key_digest(&format!("mcpgw_{id}")).to_vec(),
            name: id.into(),
            tenant_id: tenant.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            expires_at_unix: 0,
            permissions,
        })),
    }
}

fn rule(server: &str, tools: &[&str], resources: &[&str]) -> PermissionRule {
    let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    PermissionRule { server: server.into(), tools: list(tools), prompts: vec![], resources: list(resources) }
}

/// POSTs `body` to `url` as the holder of `mcpgw_<key>`.
async fn post(url: &str, key: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("authorization", format!("Bearer mcpgw_{key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn call(url: &str, key: &str, body: &str) -> (u16, Value) {
    let resp = post(url, key, body.to_owned()).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn tool_call(name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}})
        .to_string()
}

#[tokio::test]
async fn tenants_roles_and_narrowed_keys_decide_every_named_message() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url()), ("beta", &upstream.url())]);
    for r in &mut table.upserts {
        if let Some(RKind::Server(s)) = r.kind.as_mut() {
            s.tenant_id = if s.name == "alpha" { "acme".into() } else { "other".into() };
        }
    }
    table.upserts.push(Resource {
        kind: Some(RKind::Role(Role {
            id: "r1".into(),
            tenant_id: "acme".into(),
            name: "reader".into(),
            rules: vec![rule("alp*", &["get_*"], &["file:///docs/*"])],
        })),
    });
    table.upserts.push(key("user", "acme", &["user"], vec![]));
    table.upserts.push(key("reader", "acme", &["reader"], vec![]));
    table.upserts.push(key("narrow", "acme", &["admin"], vec![rule("alpha", &["echo"], &[])]));
    table.upserts.push(key("unknownrole", "acme", &["no-such-role"], vec![]));
    table.upserts.push(key("platform", "other", &["platform_admin"], vec![]));
    table.upserts.push(key("other", "other", &["user"], vec![]));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let (alpha, beta) = (proxy.mcp_url("alpha"), proxy.mcp_url("beta"));

    // Who reaches which server: another tenant's server looks missing.
    for (key, alpha_ok, beta_ok) in [
        ("user", true, false),
        ("reader", true, false),
        ("unknownrole", false, false),
        ("platform", true, true),
        ("other", false, true),
    ] {
        for (url, ok) in [(&alpha, alpha_ok), (&beta, beta_ok)] {
            let (status, body) = call(url, key, &tool_call("get_x")).await;
            assert_eq!(status == 200 && body.get("error").is_none(), ok, "{key} at {url}: {status} {body}");
            if ok {
                upstream.next_request().await;
            } else {
                assert_eq!(status, 404, "{key}: {body}");
                assert_eq!(body["error"]["data"]["reason"], "unknown_server");
            }
        }
    }

    // A forbidden tool is answered as a missing one (JSON-RPC -32602 with the request id), upstream untouched.
    for (key, tool, allowed) in [
        ("reader", "get_weather", true),
        ("reader", "set_weather", false),
        ("narrow", "echo", true),
        ("narrow", "get_weather", false),
    ] {
        let (status, body) = call(&alpha, key, &tool_call(tool)).await;
        if allowed {
            assert!(body.get("error").is_none(), "{key} {tool}: {body}");
            upstream.next_request().await;
        } else {
            assert_eq!(status, 200);
            assert_eq!(
                body,
                json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": format!("Unknown tool: {tool}")}})
            );
        }
    }
    let read = |uri: &str| {
        json!({"jsonrpc": "2.0", "id": 8, "method": "resources/read", "params": {"uri": uri}}).to_string()
    };
    let (_, body) = call(&alpha, "reader", &read("file:///etc/passwd")).await;
    assert_eq!(body["error"]["code"], -32002, "{body}");
    let (_, body) = call(&alpha, "reader", &read("file:///docs/a.md")).await;
    assert!(body.get("error").is_none(), "{body}");
    upstream.next_request().await;

    // Completion refs are decided like what they name.
    let complete = |r: Value| {
        json!({"jsonrpc": "2.0", "id": 11, "method": "completion/complete",
        "params": {"ref": r, "argument": {"name": "a", "value": ""}}})
        .to_string()
    };
    let (_, body) =
        call(&alpha, "reader", &complete(json!({"type": "ref/prompt", "name": "secret-prompt"}))).await;
    assert_eq!(body["error"]["message"], "Unknown prompt: secret-prompt", "{body}");
    let (_, body) =
        call(&alpha, "reader", &complete(json!({"type": "ref/resource", "uri": "file:///docs/{name}"})))
            .await;
    assert!(body.get("error").is_none(), "{body}");
    upstream.next_request().await;

    // No way around the decision for a restricted caller: a uri beside an allowed name, a repeated key
    // (in params or of the message itself), a batch.
    let both = json!({"jsonrpc": "2.0", "id": 9, "method": "resources/read",
                      "params": {"name": "file:///docs/a.md", "uri": "file:///etc/passwd"}});
    let (_, body) = call(&alpha, "reader", &both.to_string()).await;
    assert_eq!(body["error"]["code"], -32002, "the uri is what is decided: {body}");
    let repeated =
        r#"{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"get_x","name":"set_x"}}"#;
    let (status, body) = call(&alpha, "reader", repeated).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (400, Some("invalid_request")), "{body}");
    let repeated_method =
        r#"{"jsonrpc":"2.0","id":11,"method":"tools/list","method":"tools/call","params":{"name":"set_x"}}"#;
    let (status, body) = call(&alpha, "reader", repeated_method).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (400, Some("invalid_request")), "{body}");
    let batch = format!("[{}]", tool_call("set_x"));
    let (status, _) = call(&alpha, "reader", &batch).await;
    assert_eq!(status, 400, "a batch from a restricted caller");
    assert!(upstream.drain().is_empty(), "nothing forbidden reached the upstream");
}

#[tokio::test]
async fn lists_show_exactly_what_the_caller_may_use_in_json_and_sse() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    table.upserts.push(Resource {
        kind: Some(RKind::Role(Role {
            id: "r1".into(),
            tenant_id: "default".into(),
            name: "reader".into(),
            rules: vec![rule("alpha", &["get_*"], &["file:///docs/*"])],
        })),
    });
    table.upserts.push(key("reader", "default", &["reader"], vec![]));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let url = proxy.mcp_url("alpha");
    let tools = json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [
        {"name": "get_a", "inputSchema": {}}, {"name": "set_b", "inputSchema": {}}, {"name": "get_c", "inputSchema": {}}],
        "nextCursor": "p2"}});
    let list = |method: &str| json!({"jsonrpc": "2.0", "id": 3, "method": method}).to_string();

    upstream.reply(Reply::Json(tools.to_string()));
    let (_, body) = call(&url, "reader", &list("tools/list")).await;
    let names: Vec<&str> =
        body["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["get_a", "get_c"], "{body}");
    assert_eq!(body["result"]["nextCursor"], "p2", "pagination is kept");
    upstream.next_request().await;

    let resources = json!({"jsonrpc": "2.0", "id": 3, "result": {"resources": [
        {"uri": "file:///docs/a.md", "name": "a"}, {"uri": "file:///etc/passwd", "name": "p"}]}});
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    upstream.reply(Reply::Sse(rx));
    tx.send(Some(format!("event: message\nid: 1\ndata: {resources}\n\n"))).await.unwrap();
    tx.send(None).await.unwrap();
    let resp = post(&url, "reader", list("resources/list")).await;
    let text = resp.text().await.unwrap();
    assert!(text.contains("file:///docs/a.md") && !text.contains("/etc/passwd"), "{text}");
    assert!(text.contains("event: message") && text.contains("id: 1"), "the event keeps its fields: {text}");
    upstream.next_request().await;
}

#[tokio::test]
async fn a_local_rate_limit_is_exact_and_answers_429_with_retry_after() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    table.upserts.push(Resource {
        kind: Some(RKind::RateLimit(mcpgw_proto::v1::RateLimit {
            id: "add-per-user".into(),
            tenant_id: "default".into(),
            scope: "user".into(),
            server: "alpha".into(),
            tool: "add".into(),
            requests: 3,
            per_ms: 60_000,
            burst: 3,
            ..Default::default()
        })),
    });
    table.upserts.push(key("first", "default", &["user"], vec![]));
    table.upserts.push(key("second", "default", &["user"], vec![]));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let url = proxy.mcp_url("alpha");
    for _ in 0..3 {
        let (status, body) = call(&url, "first", &tool_call("add")).await;
        assert_eq!(status, 200, "{body}");
        upstream.next_request().await;
    }
    let resp = post(&url, "first", tool_call("add")).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one request's worth of time (20 s): {retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["id"].as_u64(), body["error"]["data"]["reason"].as_str()),
        (Some(7), Some("rate_limited"))
    );
    // Another tool, another user: not counted by this limit.
    let (status, _) = call(&url, "first", &tool_call("echo")).await;
    assert_eq!(status, 200);
    upstream.next_request().await;
    let (status, _) = call(&url, "second", &tool_call("add")).await;
    assert_eq!(status, 200);
    upstream.next_request().await;
    assert!(upstream.drain().is_empty(), "the refused call never reached the upstream");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_proxy_rate_limited_total{limit=\"add-per-user\"} 1"), "{metrics}");
}

fn global_limit(id: &str, server: &str, requests: u32, fail_open: bool) -> Resource {
    Resource {
        kind: Some(RKind::RateLimit(mcpgw_proto::v1::RateLimit {
            id: id.into(),
            tenant_id: "default".into(),
            scope: "tenant".into(),
            server: server.into(),
            requests,
            per_ms: 60_000,
            burst: requests,
            global: true,
            fail_open,
            ..Default::default()
        })),
    }
}

/// POSTs a `tools/call` as `mcpgw_first`: the status, `Retry-After` and the error's reason.
async fn limited_call(url: &str) -> (u16, Option<String>, Value) {
    let resp = post(url, "first", tool_call("add")).await;
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, retry, body["error"]["data"]["reason"].clone())
}

#[tokio::test]
async fn a_global_rate_limit_spends_leased_budget_and_fails_closed_or_open_as_configured() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    cp.set_budget(None);
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url()), ("beta", &upstream.url())]);
    table.upserts.push(global_limit("closed-alpha", "alpha", 3, false));
    table.upserts.push(global_limit("open-beta", "beta", 2, true));
    table.upserts.push(key("first", "default", &["user"], vec![]));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let (alpha, beta) = (proxy.mcp_url("alpha"), proxy.mcp_url("beta"));

    // No budget can be leased: the closed limit refuses, the open one falls back to the proxy's own bucket.
    let (status, retry, reason) = limited_call(&alpha).await;
    assert_eq!((status, retry.as_deref(), reason.as_str()), (503, Some("1"), Some("rate_limit_unavailable")));
    for _ in 0..2 {
        assert_eq!(limited_call(&beta).await.0, 200);
        upstream.next_request().await;
    }
    let (status, _, reason) = limited_call(&beta).await;
    assert_eq!((status, reason.as_str()), (429, Some("rate_limited")), "the local bucket of 2 is spent");
    assert!(upstream.drain().is_empty(), "nothing refused reached the upstream");

    // The budget returns: leasing resumes within a second, with no restart, and spends exactly the budget.
    cp.set_budget(Some(3));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut admitted = 0;
    loop {
        let (status, retry, reason) = limited_call(&alpha).await;
        match status {
            200 => {
                admitted += 1;
                upstream.next_request().await;
            }
            503 => {
                assert!(std::time::Instant::now() < deadline, "leasing did not resume");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            _ => {
                assert_eq!((status, reason.as_str()), (429, Some("rate_limited")));
                let retry: u64 = retry.expect("Retry-After").parse().unwrap();
                assert!((1..=60).contains(&retry), "the control plane's wait: {retry}");
                break;
            }
        }
    }
    assert_eq!(admitted, 3, "exactly the leased budget");
    assert!(upstream.drain().is_empty());
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        "mcpgw_proxy_rate_limit_unavailable_total{limit=\"open-beta\",mode=\"open\"} 3",
        "mcpgw_proxy_rate_limited_total{limit=\"closed-alpha\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        metrics.contains("mcpgw_proxy_rate_limit_unavailable_total{limit=\"closed-alpha\",mode=\"closed\"}")
    );
}

#[tokio::test]
async fn long_lived_streams_are_capped_per_principal() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &["--max-streams-per-principal", "2"]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    table.upserts.push(key("streamer", "default", &["user"], vec![]));
    table.upserts.push(key("other", "default", &["user"], vec![]));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let url = proxy.mcp_url("alpha");
    let open = |who: &'static str| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Option<String>>(4);
        upstream.reply(Reply::Sse(rx));
        let url = url.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(&url)
                .header("authorization", format!("Bearer mcpgw_{who}"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap();
            (resp, tx)
        }
    };
    let (first, first_tx) = open("streamer").await;
    let (second, _second_tx) = open("streamer").await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    upstream.clear_replies();
    let third = reqwest::Client::new()
        .get(&url)
        .header("authorization", "Bearer mcpgw_streamer")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "too_many_streams", "{body}");
    let (other, _other_tx) = open("other").await;
    assert_eq!(other.status(), 200, "another caller has its own places");
    // The first stream ends: its place is free again.
    first_tx.send(None).await.unwrap();
    drop(first.bytes().await);
    within("a place to free up", async {
        loop {
            let (resp, _tx) = open("streamer").await;
            if resp.status() == 200 {
                break;
            }
            upstream.clear_replies();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
