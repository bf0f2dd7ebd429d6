//! `/mcp` over three real servers (server-everything: legacy only; the Python SDK server and the rmcp
//! fixture: dual-era, rmcp paginated): real clients in every era list the merged, prefixed tools and call
//! one of each server, progress streams through, a legacy cancellation reaches only its upstream, a
//! session moves between two proxy replicas and survives a restart, and a catalog change reaches a client
//! listening on `/mcp`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::mcp::StreamEvent;
use mcpgw_e2e::peers::FastMcpProxy;
use mcpgw_e2e::process::log_dir;
use mcpgw_e2e::{
    EverythingServer, Gateway, McpHttp, Proxy, PyServer, PyServerOpts, RmcpServer, fastmcp, inspector,
    poll_until, py_client,
};
use serde_json::json;

use crate::{first_text, tool_names};

const KEY: &str = "7T2ULrhWSqF3WzSU2X7DZ7iZ3XHq8KFW3FSbrCzbYyE=";

struct Aggregate {
    gw: Gateway,
    everything_server: EverythingServer,
    py_server: PyServer,
    rmcp_server: RmcpServer,
}

impl Aggregate {
    /// Registers `everything`, `py` and `rmcp` and waits until `/mcp` lists tools of all three.
    async fn start(proxy_args: &[&str]) -> Result<Self> {
        let gw = Gateway::start_with(proxy_args).await?;
        let everything = EverythingServer::start().await?;
        let py = PyServer::start("py-agg", PyServerOpts::default()).await?;
        let rmcp = RmcpServer::start("rmcp-agg").await?;
        gw.add_server("everything", &everything.url(), "streamable_http").await?;
        gw.add_server("py", &py.url(), "streamable_http").await?;
        gw.add_server("rmcp", &rmcp.url(), "streamable_http").await?;
        let this = Self { gw, everything_server: everything, py_server: py, rmcp_server: rmcp };
        let url = this.url();
        poll_until("every server's tools on /mcp", Duration::from_secs(30), || async {
            let mut client = McpHttp::new(url.clone());
            client.initialize().await?;
            let (tools, _) = client.list_all("tools/list", "tools", false).await?;
            let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
            Ok(["everything_echo", "py_whoami", "rmcp_whoami"]
                .iter()
                .all(|n| names.contains(n))
                .then_some(()))
        })
        .await?;
        Ok(this)
    }

    fn url(&self) -> String {
        format!("{}/mcp", self.gw.proxy.base_url())
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_list_merged_tools_and_call_each_server() -> Result<()> {
    let agg = Aggregate::start(&[]).await?;
    let url = agg.url();
    let legacy = py_client(&url, "legacy", &["list-tools"]).await?;
    let names = sorted(tool_names(&legacy));
    for expected in [
        "everything_echo",
        "everything_trigger-long-running-operation",
        "py_add",
        "py_whoami",
        "rmcp_numbered-5",
    ] {
        ensure!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    let prefixes = ["everything_", "py_", "rmcp_", "gateway_"];
    ensure!(names.iter().all(|n| prefixes.iter().any(|p| n.starts_with(p))), "{names:?}");
    // Every client and era sees the same merged list.
    for mode in ["auto", "2026-07-28"] {
        let listed = py_client(&url, mode, &["list-tools"]).await?;
        ensure!(sorted(tool_names(&listed)) == names, "python --mode {mode}: {listed}");
    }
    for mode in ["legacy", "auto"] {
        let listed = ts_client(&url, mode, &["list-tools"]).await?;
        ensure!(sorted(tool_names(&listed)) == names, "ts --mode {mode}: {listed}");
    }
    let inspected = inspector(&url, &["--method", "tools/list"]).await?;
    ensure!(sorted(tool_names(&inspected)) == names, "inspector: {inspected}");
    let fast = fastmcp(&["list", &url, "--auth", "none"]).await?;
    ensure!(sorted(tool_names(&fast)) == names, "fastmcp: {fast}");

    // FastMCP's aggregating proxy on the same servers names them the same way (the gateway's own tools
    // are ours alone), and answers the same.
    let reference = FastMcpProxy::start(&[
        ("everything", agg.everything_server.url()),
        ("py", agg.py_server.url()),
        ("rmcp", agg.rmcp_server.url()),
    ])
    .await?;
    let theirs = sorted(tool_names(&fastmcp(&["list", &reference.url(), "--auth", "none"]).await?));
    // FastMCP 4.1.2's client cannot list server-everything (its era probe ends in "Server not
    // initialized"); the comparison covers the servers both list.
    let listed_by_both = |n: &&String| ["py_", "rmcp_"].iter().any(|p| n.starts_with(p));
    let ours: Vec<String> = names.iter().filter(listed_by_both).cloned().collect();
    let theirs_both: Vec<String> = theirs.iter().filter(listed_by_both).cloned().collect();
    ensure!(
        !ours.is_empty() && ours == theirs_both,
        "/mcp {ours:?}\nFastMCP {theirs:?}\n{}",
        reference.describe()
    );
    for (tool, args) in [("py_add", r#"{"a":2,"b":3}"#), ("rmcp_echo", r#"{"message":"same"}"#)] {
        let via_us = py_client(&url, "legacy", &["call", tool, args]).await?;
        let via_them = py_client(&reference.url(), "legacy", &["call", tool, args]).await?;
        ensure!(via_us["result"] == via_them["result"], "{tool}: {via_us} vs FastMCP {via_them}");
    }

    // One call to each server, in each era, under the prefixed names.
    for mode in ["legacy", "2026-07-28"] {
        let echoed = py_client(&url, mode, &["call", "everything_echo", r#"{"message":"hi"}"#]).await?;
        ensure!(first_text(&echoed["result"]) == Some("Echo: hi"), "{mode}: {echoed}");
        let who = py_client(&url, mode, &["call", "py_whoami", "{}"]).await?;
        ensure!(first_text(&who["result"]) == Some("py-agg"), "{mode}: {who}");
        let rmcp = py_client(&url, mode, &["call", "rmcp_echo", r#"{"message":"via rmcp"}"#]).await?;
        ensure!(first_text(&rmcp["result"]) == Some("via rmcp"), "{mode}: {rmcp}");
    }
    let ts = ts_client(&url, "legacy", &["call", "py_add", r#"{"a":2,"b":3}"#]).await?;
    ensure!(first_text(&ts["result"]) == Some("5.0"), "{ts}");
    let fast = fastmcp(&["call", &url, "rmcp_whoami", "--auth", "none"]).await?;
    ensure!(fast.to_string().contains("rmcp-agg"), "{fast}");

    // A prompt and a resource, renamed back on the way.
    let mut client = McpHttp::new(url.clone());
    client.initialize().await?;
    let (prompts, _) = client.list_all("prompts/list", "prompts", false).await?;
    let simple = prompts
        .iter()
        .find(|p| {
            p["name"].as_str().is_some_and(|n| n.starts_with("everything_"))
                && p["arguments"].as_array().is_none_or(|a| a.iter().all(|a| a["required"] != true))
        })
        .with_context(|| format!("a prompt of server-everything without required arguments: {prompts:?}"))?;
    let prompt = client.call("prompts/get", json!({"name": simple["name"]})).await?["result"].clone();
    ensure!(prompt["messages"].as_array().is_some_and(|m| !m.is_empty()), "{prompt}");
    let (resources, _) = client.list_all("resources/list", "resources", false).await?;
    let uri = resources.first().and_then(|r| r["uri"].as_str()).context("a resource")?.to_owned();
    for mode in [false, true] {
        let read = if mode {
            let (id, resp) = McpHttp::new(url.clone()).modern("resources/read", json!({"uri": uri})).await?;
            resp.response_for(&id).with_context(|| format!("{resp:?}"))?["result"].clone()
        } else {
            client.call("resources/read", json!({"uri": uri})).await?["result"].clone()
        };
        ensure!(read["contents"][0]["uri"] == uri.as_str(), "modern {mode}: {read}");
        if mode {
            ensure!(read["cacheScope"] == "private" && read["resultType"] == "complete", "{read}");
        }
    }

    // Progress arrives spread over the call, as it is emitted.
    let progress =
        py_client(&url, "legacy", &["progress", "py_progress", r#"{"steps":4,"interval_ms":250}"#]).await?;
    let times: Vec<f64> =
        progress["progress"].as_array().context("progress")?.iter().filter_map(|p| p["t"].as_f64()).collect();
    ensure!(times.len() == 4, "{progress}");
    let result_at = progress["resultAt"].as_f64().context("resultAt")?;
    ensure!(times[3] - times[0] >= 0.45 && result_at - times[0] >= 0.45, "bunched: {progress}");
    Ok(())
}

fn marker(name: &str) -> std::path::PathBuf {
    log_dir().join(name)
}

fn exists(base: &Path, suffix: &str) -> bool {
    Path::new(&format!("{}.{suffix}", base.display())).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reaches_only_its_upstream() -> Result<()> {
    let gw = Gateway::start().await?;
    let (a, b) = (
        PyServer::start("py-a", PyServerOpts::default()).await?,
        PyServer::start("py-b", PyServerOpts::default()).await?,
    );
    gw.add_server("pya", &a.url(), "streamable_http").await?;
    gw.add_server("pyb", &b.url(), "streamable_http").await?;
    let url = format!("{}/mcp", gw.proxy.base_url());
    let mut client = McpHttp::new(url.clone());
    poll_until("both servers on /mcp", Duration::from_secs(30), || async {
        let mut probe = McpHttp::new(url.clone());
        probe.initialize().await?;
        let (tools, _) = probe.list_all("tools/list", "tools", false).await?;
        Ok((tools.iter().filter(|t| t["name"].as_str().is_some_and(|n| n.ends_with("_slow"))).count() == 2)
            .then_some(()))
    })
    .await?;
    client.initialize().await?;
    let (ma, mb) = (marker("agg-cancel-a"), marker("agg-cancel-b"));
    let call = |id: u64, tool: &str, base: &Path| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": tool, "arguments": {"seconds": 3.0, "marker": base.to_string_lossy()}}})
    };
    let twin = || {
        let mut c = McpHttp::new(url.clone());
        c.session_id = client.session_id.clone();
        c.protocol_version = client.protocol_version.clone();
        c
    };
    let (ca, cb) = (twin(), twin());
    let (body_a, body_b) = (call(1, "pya_slow", &ma), call(2, "pyb_slow", &mb));
    let first = tokio::spawn(async move { ca.post(&body_a).await });
    let second = tokio::spawn(async move { cb.post(&body_b).await });
    poll_until("both slow calls started", Duration::from_secs(15), || async {
        Ok((exists(&ma, "started") && exists(&mb, "started")).then_some(()))
    })
    .await?;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1, "reason": "test"}});
    let resp = client.post(&cancel).await?;
    ensure!(resp.status.as_u16() == 202, "{resp:?}");
    poll_until("py-a cancelled", Duration::from_secs(15), || async {
        Ok(exists(&ma, "cancelled").then_some(()))
    })
    .await?;
    let _ = first.await;
    let finished = second.await??;
    let answer = finished.response_for(&json!(2)).context("py-b's answer")?;
    ensure!(first_text(&answer["result"]) == Some("slept 3.0"), "{answer}");
    ensure!(exists(&mb, "done") && !exists(&mb, "cancelled"), "py-b must run to its end");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_between_replicas_and_survives_a_restart() -> Result<()> {
    let agg = Aggregate::start(&["--session-key", KEY]).await?;
    let other = Proxy::start(&agg.gw.cp.grpc_url(), &["--session-key", KEY]).await?;
    other.wait_routable("rmcp", Duration::from_secs(10)).await?;
    let urls = [agg.url(), format!("{}/mcp", other.base_url())];
    let mut client = McpHttp::new(urls[0].clone());
    client.initialize().await?;
    let session = client.session_id.clone().context("a session")?;
    let via = |url: &str| {
        let mut c = McpHttp::new(url.to_owned());
        c.session_id = Some(session.clone());
        c.protocol_version = client.protocol_version.clone();
        c
    };
    for i in 0..6 {
        let via = via(&urls[i % 2]);
        let tool = ["everything_echo", "py_echo", "rmcp_echo"][i % 3];
        let result = via.call_tool(tool, json!({"message": format!("call {i}")})).await?;
        let text = first_text(&result).unwrap_or_default();
        ensure!(text.ends_with(&format!("call {i}")), "call {i} via replica {}: {result}", i % 2);
    }
    let started = Instant::now();
    let listen = other.listen_addr();
    drop(other);
    let other =
        Proxy::start_closed_at(&agg.gw.cp.grpc_url(), listen, &["--anonymous", "--session-key", KEY]).await?;
    other.wait_routable("py", Duration::from_secs(10)).await?;
    let result = via(&urls[1]).call_tool("py_whoami", json!({})).await?;
    ensure!(first_text(&result) == Some("py-agg"), "after the restart ({:?}): {result}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_list_changed_reaches_the_client_on_mcp() -> Result<()> {
    let gw = Gateway::start().await?;
    let py = PyServer::start("py-changing", PyServerOpts::default()).await?;
    gw.add_server("changing", &py.url(), "streamable_http").await?;
    let url = format!("{}/mcp", gw.proxy.base_url());
    poll_until("changing's tools on /mcp", Duration::from_secs(30), || async {
        let mut probe = McpHttp::new(url.clone());
        probe.initialize().await?;
        let (tools, _) = probe.list_all("tools/list", "tools", false).await?;
        Ok(tools.iter().any(|t| t["name"] == "changing_add_tool").then_some(()))
    })
    .await?;
    let mut client = McpHttp::new(url.clone());
    client.initialize().await?;
    let mut stream = client.open_get_stream().await?;
    // The control plane starts watching a discovered server within 2 s (its reconcile interval): a change
    // made before that is only seen by the next rediscovery, so a change unseen for 5 s is made again
    // under a new name.
    let mut found = None;
    for attempt in 0..6 {
        let name = format!("fresh-{attempt}");
        let changed = Instant::now();
        let added =
            client.call_tool("changing_add_tool", json!({"tool_name": name, "text": "new here"})).await?;
        ensure!(first_text(&added) == Some(format!("added {name}").as_str()), "{added}");
        while changed.elapsed() < Duration::from_secs(5) {
            match stream.next(Duration::from_millis(500)).await {
                StreamEvent::Event(e) if e.data.contains("notifications/tools/list_changed") => {
                    let (tools, _) = client.list_all("tools/list", "tools", false).await?;
                    if tools.iter().any(|t| t["name"] == format!("changing_{name}").as_str()) {
                        found = Some((name.clone(), changed.elapsed()));
                        break;
                    }
                }
                StreamEvent::Ended => anyhow::bail!("the /mcp GET stream ended"),
                _ => {}
            }
        }
        if found.is_some() {
            break;
        }
    }
    let (name, took) = found.context("no list_changed showing an added tool")?;
    eprintln!("the server's list_changed reached the /mcp client as a new list {took:?} after the change");
    let fresh = client.call_tool(&format!("changing_{name}"), json!({})).await?;
    ensure!(first_text(&fresh) == Some("new here"), "{fresh}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_change_reaches_the_listening_client() -> Result<()> {
    let gw = Gateway::start().await?;
    let py = PyServer::start("py-first", PyServerOpts::default()).await?;
    gw.add_server("first", &py.url(), "streamable_http").await?;
    let url = format!("{}/mcp", gw.proxy.base_url());
    poll_until("first's tools on /mcp", Duration::from_secs(30), || async {
        let mut probe = McpHttp::new(url.clone());
        probe.initialize().await?;
        let (tools, _) = probe.list_all("tools/list", "tools", false).await?;
        Ok(tools.iter().any(|t| t["name"] == "first_whoami").then_some(()))
    })
    .await?;
    let mut client = McpHttp::new(url.clone());
    client.initialize().await?;
    let mut stream = client.open_get_stream().await?;
    let rmcp = RmcpServer::start("rmcp-later").await?;
    let added = Instant::now();
    gw.cp.register("later", &rmcp.url(), "streamable_http").await?;
    // The registration itself changes nothing listed; its discovery does.
    let notified = loop {
        match stream.next(Duration::from_secs(30)).await {
            StreamEvent::Event(e) if e.data.contains("notifications/tools/list_changed") => {
                let (tools, _) = client.list_all("tools/list", "tools", false).await?;
                if tools.iter().any(|t| t["name"] == "later_numbered-1") {
                    break added.elapsed();
                }
            }
            StreamEvent::Event(_) => continue,
            other => anyhow::bail!("no list_changed showing the new tools on the GET stream: {other:?}"),
        }
    };
    eprintln!("list_changed on /mcp {notified:?} after the registration, the new tools listed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_several_servers_offer_goes_to_a_live_one() -> Result<()> {
    let gw = Gateway::start().await?;
    let mut a = mcpgw_e2e::dataplane::PyInstance::start("py-first", PyServerOpts::default()).await?;
    let b = PyServer::start("py-second", PyServerOpts::default()).await?;
    for (name, url, priority) in [("first", a.url(), 0), ("second", b.url(), 1)] {
        let body = json!({"name": name, "endpoint_url": url, "name_prefix": "never", "priority": priority});
        let (status, created) = gw.cp.api(reqwest::Method::POST, "/api/v1/servers", Some(body)).await?;
        ensure!(status == 201, "{status} {created}");
        gw.proxy.wait_routable(name, Duration::from_secs(10)).await?;
    }
    let url = format!("{}/mcp", gw.proxy.base_url());
    poll_until("both catalogs on /mcp", Duration::from_secs(30), || async {
        let mut probe = McpHttp::new(url.clone());
        probe.initialize().await?;
        let (tools, _) = probe.list_all("tools/list", "tools", false).await?;
        let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        // One `whoami` for both servers, no prefixed names, and both catalogs in (the gateway's own
        // get_server lists each server's tools).
        let mut both = true;
        for server in ["first", "second"] {
            let got = probe.call_tool("gateway_get_server", json!({"name": server})).await?;
            both &= got["structuredContent"]["tools"].as_array().is_some_and(|t| !t.is_empty());
        }
        Ok((both
            && names.iter().filter(|n| **n == "whoami").count() == 1
            && !names.iter().any(|n| n.starts_with("first_")))
        .then_some(()))
    })
    .await?;
    let mut client = McpHttp::new(url.clone());
    client.initialize().await?;
    let who = client.call_tool("whoami", json!({})).await?;
    ensure!(first_text(&who) == Some("py-first"), "the preferred server: {who}");
    a.kill().await?;
    for mode in ["legacy", "modern"] {
        let who = if mode == "legacy" {
            client.call_tool("whoami", json!({})).await?
        } else {
            let (id, resp) =
                McpHttp::new(url.clone()).modern("tools/call", json!({"name": "whoami"})).await?;
            resp.response_for(&id).with_context(|| format!("{resp:?}"))?["result"].clone()
        };
        ensure!(first_text(&who) == Some("py-second"), "{mode}, with the first server gone: {who}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sse_clients_use_mcp_too() -> Result<()> {
    let agg = Aggregate::start(&[]).await?;
    let sse_url = format!("{}/mcp/sse", agg.gw.proxy.base_url());
    let listed = ts_client(&sse_url, "sse", &["list-tools"]).await?;
    let names = sorted(tool_names(&listed));
    for expected in ["everything_echo", "py_whoami", "rmcp_echo", "gateway_search_tools"] {
        ensure!(names.iter().any(|n| n == expected), "{expected} missing: {listed}");
    }
    for (tool, args, text) in [
        ("py_whoami", "{}", "py-agg"),
        ("everything_echo", r#"{"message":"over sse"}"#, "Echo: over sse"),
        ("rmcp_echo", r#"{"message":"rmcp over sse"}"#, "rmcp over sse"),
    ] {
        let called = ts_client(&sse_url, "sse", &["call", tool, args]).await?;
        ensure!(first_text(&called["result"]) == Some(text), "{tool}: {called}");
    }
    let inspected =
        mcpgw_e2e::peers::inspector_transport(&sse_url, "sse", &["--method", "tools/list"]).await?;
    ensure!(sorted(tool_names(&inspected)) == names, "inspector over HTTP+SSE: {inspected}");
    Ok(())
}
