//! stdio and WebSocket servers through `/mcp/{server}`, with real servers (server-everything in stdio
//! mode, the Python SDK server over stdio and over WebSocket) and real clients (Python SDK, TS SDK v2):
//! the same lists and results as the servers give directly, progress as it happens, cancellation, a
//! killed process, and the control plane's discovery reaching `/mcp`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::peers::{everything_stdio_command, py_stdio_command, stdio_programs};
use mcpgw_e2e::process::log_dir;
use mcpgw_e2e::{EverythingServer, Gateway, McpHttp, PyServer, PyServerOpts, poll_until, py_client};
use serde_json::{Value, json};

use crate::tool_names;

const WAIT: Duration = Duration::from_secs(30);

/// A gateway whose control plane and proxy may run the peers' stdio servers.
async fn gateway() -> Result<Gateway> {
    let programs = stdio_programs()?;
    Gateway::start_with_planes(&["--stdio-programs", &programs], &["--stdio-programs", &programs]).await
}

/// Registers `body` and waits until the proxy routes it; its MCP URL through the proxy.
async fn register(gw: &Gateway, body: Value) -> Result<String> {
    let name = body["name"].as_str().context("a name")?.to_owned();
    let (status, reply) = gw.cp.api(reqwest::Method::POST, "/api/v1/servers", Some(body)).await?;
    if status != 201 {
        bail!("registering {name}: HTTP {status}: {reply}");
    }
    gw.proxy.wait_routable(&name, WAIT).await?;
    Ok(gw.proxy.url(&name))
}

fn texts(result: &Value) -> Vec<String> {
    let content = result.get("content").or_else(|| result["result"].get("content"));
    content
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(|b| b["text"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_and_websocket_servers_answer_as_they_do_directly() -> Result<()> {
    let gw = gateway().await?;
    let direct_py = PyServer::start("py-direct", PyServerOpts::default()).await?;
    let direct_everything = EverythingServer::start().await?;
    let ws = PyServer::start("py-ws", PyServerOpts { websocket: true, ..Default::default() }).await?;
    let py_stdio = register(
        &gw,
        json!({"name": "py-stdio", "transport_type": "stdio", "command": py_stdio_command("py-stdio")?}),
    )
    .await?;
    let everything_stdio = register(
        &gw,
        json!({"name": "everything-stdio", "transport_type": "stdio", "command": everything_stdio_command()?}),
    )
    .await?;
    let py_ws =
        register(&gw, json!({"name": "py-ws", "transport_type": "websocket", "endpoint_url": ws.url()}))
            .await?;
    let cases = [
        ("python stdio", py_stdio.as_str(), direct_py.url(), "echo", json!({"message": "über stdio"})),
        ("python websocket", py_ws.as_str(), direct_py.url(), "echo", json!({"message": "über ws"})),
        (
            "server-everything stdio",
            everything_stdio.as_str(),
            direct_everything.url(),
            "echo",
            json!({"message": "hi"}),
        ),
    ];
    for (what, via, direct, tool, args) in cases {
        let args = args.to_string();
        // Python SDK (auto: server/discover first, then initialize) and TS SDK v2 (legacy handshake).
        let py_via = py_client(via, "auto", &["list-tools"]).await.context(what)?;
        let py_direct = py_client(&direct, "legacy", &["list-tools"]).await?;
        assert_eq!(
            sorted(tool_names(&py_via)),
            sorted(tool_names(&py_direct)),
            "{what}: Python SDK tools/list"
        );
        let ts_via = ts_client(via, "legacy", &["list-tools"]).await.context(what)?;
        assert_eq!(sorted(tool_names(&ts_via)), sorted(tool_names(&py_direct)), "{what}: TS SDK tools/list");
        let called = py_client(via, "auto", &["call", tool, &args]).await?;
        let reference = py_client(&direct, "legacy", &["call", tool, &args]).await?;
        assert_eq!(texts(&called), texts(&reference), "{what}: Python SDK tools/call: {called}");
        let ts_called = ts_client(via, "legacy", &["call", tool, &args]).await?;
        assert_eq!(texts(&ts_called), texts(&reference), "{what}: TS SDK tools/call: {ts_called}");
        eprintln!("{what}: {} tools, {tool} → {:?}", tool_names(&py_via).len(), texts(&called));
    }

    // Progress arrives as it happens, not all at the end.
    let run = py_client(&py_stdio, "auto", &["progress", "progress", r#"{"steps": 3, "interval_ms": 300}"#])
        .await?;
    let at: Vec<f64> = run["progress"]
        .as_array()
        .context("progress events")?
        .iter()
        .filter_map(|e| e["t"].as_f64())
        .collect();
    assert_eq!(at.len(), 3, "{run}");
    assert!(at[2] - at[0] >= 0.45, "progress spread over the run, not batched: {at:?}");
    assert_eq!(texts(&run), ["done 3"], "{run}");

    // The control plane discovered them (over stdio and WebSocket): `/mcp` lists their tools.
    let all = format!("{}/mcp", gw.proxy.base_url());
    poll_until("stdio and WebSocket tools on /mcp", WAIT, || async {
        let names = tool_names(&py_client(&all, "auto", &["list-tools"]).await?);
        let want = ["py-stdio_echo", "py-ws_echo", "everything-stdio_echo"];
        Ok(want.iter().all(|w| names.iter().any(|n| n == w)).then_some(()))
    })
    .await?;
    let aggregated = py_client(&all, "auto", &["call", "py-ws_echo", r#"{"message": "via /mcp"}"#]).await?;
    assert_eq!(texts(&aggregated), ["via /mcp"], "{aggregated}");
    Ok(())
}

fn marker(name: &str) -> PathBuf {
    log_dir().join(name)
}

fn has(base: &Path, suffix: &str) -> bool {
    Path::new(&format!("{}.{suffix}", base.display())).exists()
}

async fn wait_marker(base: &Path, suffix: &str) -> Result<()> {
    poll_until(&format!("{}.{suffix}", base.display()), WAIT, || async {
        Ok(has(base, suffix).then_some(()))
    })
    .await
}

/// Pids of processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// A legacy client's `notifications/cancelled` reaches the stdio process of its session; a process
/// killed mid-call fails that call cleanly (a JSON-RPC error, no hang) and the next session works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_cancellation_and_a_killed_process() -> Result<()> {
    let gw = gateway().await?;
    let url = register(
        &gw,
        json!({"name": "py-cancel", "transport_type": "stdio", "command": py_stdio_command("py-cancel-proc")?}),
    )
    .await?;
    let mut client = McpHttp::new(&url);
    client.initialize().await?;
    // Another client on the same session (its calls run while this one sends more).
    let same_session = || {
        let mut other = McpHttp::new(&url);
        other.session_id = client.session_id.clone();
        other.protocol_version = client.protocol_version.clone();
        other
    };

    // Cancellation of the legacy era: the notification reaches the tool, which stops.
    let base = marker("stdio-cancelled");
    let slow = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"seconds": 20, "marker": base.to_string_lossy()}}});
    let call = {
        let other = same_session();
        tokio::spawn(async move { other.post(&slow).await })
    };
    wait_marker(&base, "started").await?;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9, "reason": "e2e"}});
    let resp = client.post(&cancel).await?;
    assert_eq!(resp.status.as_u16(), 202, "{}", resp.text());
    wait_marker(&base, "cancelled").await?;
    assert!(!has(&base, "done"));
    call.abort();

    // Killed mid-call: the call in flight gets the gateway's error at once, the session is gone, a new one works.
    let base = marker("stdio-killed");
    let slow = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"seconds": 20, "marker": base.to_string_lossy()}}});
    let call = {
        let other = same_session();
        tokio::spawn(async move { other.post(&slow).await })
    };
    wait_marker(&base, "started").await?;
    let pids = processes_with("--name py-cancel-proc");
    assert!(!pids.is_empty(), "the session's stdio process runs");
    for pid in &pids {
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    }
    let answer =
        tokio::time::timeout(WAIT, call).await.context("the call in flight was not answered")???;
    assert_eq!(answer.status.as_u16(), 502, "{}", answer.text());
    assert_eq!(answer.json()?["error"]["data"]["reason"], "upstream_failed");
    let echo = json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "x"}}});
    assert_eq!(client.post(&echo).await?.status.as_u16(), 404, "the session ended with its process");
    let mut again = McpHttp::new(&url);
    again.initialize().await?;
    let result = again.call("tools/call", json!({"name": "echo", "arguments": {"message": "back"}})).await?;
    assert_eq!(texts(&result), ["back"], "{result}");
    Ok(())
}
