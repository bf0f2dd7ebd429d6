//! Clients of every protocol era through the proxy, against servers with two instances: results equal
//! to a direct connection for the Inspector CLI (legacy), the Python SDK (legacy, auto, pinned
//! 2026-07-28) and the TS SDK v2 (legacy, auto, pinned); the deprecated HTTP+SSE transport with
//! server-everything `sse`, the Inspector's and the TS SDK's `sse` transports, and a raw client whose
//! POSTs go through another replica; `Last-Event-ID` resumption with server-everything; and the
//! 2026-07-28 header check (a mismatch is the proxy's own 400 / -32020).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mcpgw_e2e::dataplane::{
    CuttablePost, LegacySseClient, PostEvent, SESSION_KEY, instances_body, register, ts_client, wait_healthy,
    wait_instances,
};
use mcpgw_e2e::mcp::{StreamEvent, headers, modern_body, modern_headers};
use mcpgw_e2e::peers::inspector_transport;
use mcpgw_e2e::{EverythingServer, Gateway, McpHttp, Proxy, PyServer, PyServerOpts, inspector, py_client};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{first_text, tool_names};

/// Starts a gateway whose proxy has [`SESSION_KEY`].
async fn gateway() -> Result<Gateway> {
    Gateway::start_with(&["--session-key", SESSION_KEY]).await
}

/// Registers `name` with one instance per URL and waits until the proxy routes them all.
async fn register_all(gw: &Gateway, name: &str, urls: &[String], transport: &str) -> Result<()> {
    let pairs: Vec<(&str, u32)> = urls.iter().map(|u| (u.as_str(), 1)).collect();
    let mut body = instances_body(name, &pairs);
    body["transport_type"] = json!(transport);
    register(&gw.cp, body).await?;
    wait_instances(&gw.proxy, name, urls.len()).await?;
    wait_healthy(&gw.proxy, name).await
}

/// One client run direct and through the proxy at once; the two documents must be equal.
async fn same<F, Fut>(what: &str, direct: &str, proxied: &str, run: F) -> Result<Value>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let started = Instant::now();
    let (d, p) =
        tokio::try_join!(run(direct.to_owned()), run(proxied.to_owned())).with_context(|| what.to_owned())?;
    assert_eq!(p, d, "{what}: through the proxy (left) vs direct (right)");
    eprintln!("{what}: same through the proxy ({:?})", started.elapsed());
    Ok(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_era_gets_direct_results_through_the_proxy() -> Result<()> {
    let gw = gateway().await?;
    // Two instances under one name (and one serverInfo name), so any balancing gives direct results.
    let (one, two) = tokio::try_join!(
        PyServer::start("py-era", PyServerOpts::default()),
        PyServer::start("py-era", PyServerOpts::default())
    )?;
    register_all(&gw, "py-era", &[one.url(), two.url()], "streamable_http").await?;
    let (direct, proxied) = (one.url(), gw.proxy.url("py-era"));
    let echo = r#"{"message":"every era"}"#;

    // Inspector CLI v1: legacy (initialize 2025-11-25, GET stream, DELETE).
    let listed = same("inspector tools/list", &direct, &proxied, |u| async move {
        inspector(&u, &["--method", "tools/list"]).await
    })
    .await?;
    assert!(tool_names(&listed).contains(&"slow".to_owned()), "{listed}");
    let called = same("inspector tools/call echo", &direct, &proxied, |u| async move {
        inspector(&u, &["--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=every era"])
            .await
    })
    .await?;
    assert_eq!(first_text(&called), Some("every era"), "{called}");

    // Python SDK and TS SDK v2 clients in each negotiation mode.
    let runs: [(&str, &str, &str); 6] = [
        ("py_client", "legacy", "2025-11-25"),
        ("py_client", "auto", "2026-07-28"),
        ("py_client", "2026-07-28", "2026-07-28"),
        ("ts_client", "legacy", "2025-11-25"),
        ("ts_client", "auto", "2026-07-28"),
        ("ts_client", "2026-07-28", "2026-07-28"),
    ];
    for (client, mode, version) in runs {
        for action in [&["list-tools"][..], &["call", "echo", echo]] {
            let what = format!("{client} --mode {mode} {action:?}");
            let doc = same(&what, &direct, &proxied, |u| async move {
                match client {
                    "py_client" => py_client(&u, mode, action).await,
                    _ => ts_client(&u, mode, action).await,
                }
            })
            .await?;
            assert_eq!(doc["protocolVersion"], version, "{what}: negotiated {doc}");
            if action[0] == "call" {
                assert_eq!(first_text(&doc["result"]), Some("every era"), "{what}: {doc}");
            } else {
                assert_eq!(tool_names(&doc).len(), tool_names(&listed).len(), "{what}: {doc}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_http_sse_clients_get_direct_results_through_the_proxy() -> Result<()> {
    let gw = gateway().await?;
    let (one, two) = tokio::try_join!(EverythingServer::start_sse(), EverythingServer::start_sse())?;
    let name = "everything-sse";
    register_all(&gw, name, &[one.url(), two.url()], "sse").await?;
    let replica = Proxy::start(&gw.cp.grpc_url(), &["--session-key", SESSION_KEY]).await?;
    wait_instances(&replica, name, 2).await?;
    let (direct, proxied) = (one.url(), format!("{}/sse", gw.proxy.url(name)));

    // Twice each, so round robin puts a stream on each instance.
    for round in 0..2 {
        let listed = same(
            &format!("inspector --transport sse tools/list #{round}"),
            &direct,
            &proxied,
            |u| async move { inspector_transport(&u, "sse", &["--method", "tools/list"]).await },
        )
        .await?;
        assert!(tool_names(&listed).contains(&"echo".to_owned()), "{listed}");
        let called = same(
            &format!("inspector --transport sse tools/call echo #{round}"),
            &direct,
            &proxied,
            |u| async move {
                inspector_transport(
                    &u,
                    "sse",
                    &["--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=old"],
                )
                .await
            },
        )
        .await?;
        assert_eq!(first_text(&called), Some("Echo: old"), "{called}");
    }
    same("ts_client --mode sse list-tools", &direct, &proxied, |u| async move {
        ts_client(&u, "sse", &["list-tools"]).await
    })
    .await?;

    // Raw: the endpoint event names the proxy's message URL with a token, and a POST through the other
    // replica reaches the instance holding the stream (its answer arrives on this stream).
    for round in 0..2 {
        let mut client = LegacySseClient::connect(&proxied).await?;
        let prefix = format!("/mcp/{name}/message?sessionId=");
        assert!(
            client.endpoint_data.starts_with(&prefix),
            "endpoint event not rewritten: {:?}",
            client.endpoint_data
        );
        let token = client.endpoint_data[prefix.len()..].to_owned();
        assert!(mcpgw_e2e::dataplane::looks_sealed(&token), "sessionId is not a sealed token: {token}");
        client.initialize().await?;
        client.endpoint = format!("{}/message?sessionId={token}", replica.url(name));
        let result =
            client.call_tool("echo", json!({"message": format!("via the other replica {round}")})).await?;
        assert_eq!(
            first_text(&result),
            Some(format!("Echo: via the other replica {round}").as_str()),
            "{result}"
        );
    }
    Ok(())
}

/// What a resumed `tools/call` delivered.
#[derive(Debug, PartialEq)]
struct Resumed {
    /// Progress value of the event the POST stream was cut after.
    cut_after: f64,
    /// Progress values delivered on the resumed GET, in order.
    resumed: Vec<f64>,
    /// Text of the final result.
    result: String,
}

/// Starts a long-running `tools/call` with progress in a new legacy session at `url`, cuts its POST
/// stream after the first progress event, resumes with `GET` + `Last-Event-ID`, and collects the rest.
async fn cut_and_resume(url: &str) -> Result<Resumed> {
    let mut client = McpHttp::new(url);
    client.initialize().await?;
    let session = client.session_id.clone().context("no session id")?;
    let version = client.protocol_version.clone().context("no version")?;
    let id = json!(77);
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "trigger-long-running-operation", "arguments": {"duration": 2, "steps": 4},
        "_meta": {"progressToken": "resume-me"}}});
    let mut post = CuttablePost::send(
        url,
        &headers(&[("Mcp-Session-Id", &session), ("MCP-Protocol-Version", &version)]),
        &call,
    );
    let (cut_id, cut_after) = loop {
        match post.next(Duration::from_secs(20)).await {
            Some(PostEvent::Head(status, h)) => {
                let ct = h.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                if status != StatusCode::OK || !ct.starts_with("text/event-stream") {
                    bail!("{url}: tools/call answered {status} {ct}");
                }
            }
            Some(PostEvent::Event(e)) => {
                let json = e.json().unwrap_or(Value::Null);
                if json["method"] == "notifications/progress" {
                    let id = e.id.clone().with_context(|| format!("progress event without an id: {e:?}"))?;
                    break (id, json["params"]["progress"].as_f64().unwrap_or(-1.0));
                }
            }
            other => bail!("{url}: POST stream ended before a progress event: {other:?}"),
        }
    };
    post.cut();

    // server-everything's event store replays what it has stored after the id and then stays silent
    // (later events of the old stream are stored, not sent), so the client polls as 2025-11-25 describes:
    // reconnect with the same Last-Event-ID until the replay holds the final response.
    let mut resume = client.clone();
    resume.extra_headers.push(("Last-Event-ID".to_owned(), cut_id.clone()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    while Instant::now() < deadline {
        attempts += 1;
        let mut stream = resume.open_get_stream().await?;
        if stream.status != StatusCode::OK {
            bail!("{url}: GET with Last-Event-ID {cut_id}: {} {:?}", stream.status, stream.body);
        }
        let mut resumed = Vec::new();
        while let StreamEvent::Event(e) = stream.next(Duration::from_millis(500)).await {
            let Some(json) = e.json() else { continue };
            if json["method"] == "notifications/progress" {
                resumed.push(json["params"]["progress"].as_f64().unwrap_or(-1.0));
            } else if json.get("id") == Some(&id) {
                let result = first_text(&json["result"]).with_context(|| format!("final response {json}"))?;
                eprintln!("{url}: resumed after {attempts} GET(s)");
                return Ok(Resumed { cut_after, resumed, result: result.to_owned() });
            }
        }
    }
    bail!(
        "{url}: no replay with the final response within 20 s ({attempts} GETs with Last-Event-ID {cut_id})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_a_cut_stream_on_its_instance() -> Result<()> {
    let gw = gateway().await?;
    let (one, two) = tokio::try_join!(EverythingServer::start(), EverythingServer::start())?;
    let name = "everything-resume";
    register_all(&gw, name, &[one.url(), two.url()], "streamable_http").await?;
    let direct = cut_and_resume(&one.url()).await.context("direct")?;
    eprintln!("direct: {direct:?}");
    // Two sessions, one per instance under round robin: the GET follows each to its own.
    for round in 0..2 {
        let proxied =
            cut_and_resume(&gw.proxy.url(name)).await.with_context(|| format!("proxied #{round}"))?;
        eprintln!("through the proxy #{round}: {proxied:?}");
        assert_eq!(proxied, direct, "resumption through the proxy (left) vs direct (right)");
    }
    assert_eq!(direct.cut_after, 1.0);
    assert_eq!(direct.resumed, vec![2.0, 3.0, 4.0], "direct resumption must deliver the remaining progress");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mismatch_is_refused_by_the_proxy_with_32020() -> Result<()> {
    let gw = gateway().await?;
    let upstream = PyServer::start("py-mismatch", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-mismatch", &upstream.url(), "streamable_http").await?;
    let params = json!({"name": "echo", "arguments": {"message": "m"}});
    let base = modern_headers("tools/call", &params);
    let with = |name: &str, value: &str| {
        let mut h: Vec<(String, String)> =
            base.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).cloned().collect();
        h.push((name.to_owned(), value.to_owned()));
        h
    };
    let cases = [
        ("Mcp-Name differs from params.name", with("Mcp-Name", "add")),
        ("Mcp-Method differs from method", with("Mcp-Method", "tools/list")),
        ("Mcp-Method in other case", with("Mcp-Method", "TOOLS/CALL")),
        ("Mcp-Name missing", base.iter().filter(|(k, _)| k != "Mcp-Name").cloned().collect()),
        ("MCP-Protocol-Version differs from _meta", with("MCP-Protocol-Version", "2026-07-29")),
    ];
    for (what, hdrs) in cases {
        let id = json!(what.len());
        let body = modern_body(id.clone(), "tools/call", params.clone());
        let direct = McpHttp::new(upstream.url()).post_with(&body, &hdrs).await?;
        let resp = McpHttp::new(&proxied).post_with(&body, &hdrs).await?;
        let json = resp.json().with_context(|| format!("{what}: {}", resp.text()))?;
        eprintln!("{what}: direct {} {}, proxy {} {json}", direct.status, direct.text(), resp.status);
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{what}: {json}");
        assert_eq!(json.pointer("/error/code"), Some(&json!(-32020)), "{what}: {json}");
        assert_eq!(json["id"], id, "{what}: {json}");
        // The proxy's own refusal (the upstream's -32020 has no data.reason).
        assert_eq!(json.pointer("/error/data/reason"), Some(&json!("header_mismatch")), "{what}: {json}");
    }
    // The matching request goes through.
    let (id, ok) = McpHttp::new(&proxied).modern("tools/call", params).await?;
    assert_eq!(first_text(&ok.response_for(&id).unwrap_or_default()["result"]), Some("m"), "{}", ok.text());
    Ok(())
}
