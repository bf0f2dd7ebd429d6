//! Plain forwarding: real clients get through `/mcp/{server}` exactly what they get from the upstream.

use anyhow::Result;
use mcpgw_e2e::{EverythingServer, Gateway, PyServer, PyServerOpts, inspector, py_client};
use serde_json::Value;

use crate::{first_text, tool_names};

/// Runs the same client action direct and proxied (concurrently) and requires identical JSON.
async fn py_same(direct: &str, proxied: &str, mode: &str, action: &[&str]) -> Result<Value> {
    let (d, p) = tokio::try_join!(py_client(direct, mode, action), py_client(proxied, mode, action))?;
    assert_eq!(
        p, d,
        "py_client --mode {mode} {action:?}: through the proxy (left) differs from direct (right)"
    );
    Ok(p)
}

async fn inspector_same(direct: &str, proxied: &str, args: &[&str]) -> Result<Value> {
    let (d, p) = tokio::try_join!(inspector(direct, args), inspector(proxied, args))?;
    assert_eq!(p, d, "inspector {args:?}: through the proxy (left) differs from direct (right)");
    Ok(p)
}

/// Python SDK client (auto and legacy) and Inspector CLI: same tools/list and tools/call echo results.
async fn clients_see_the_same(direct: &str, proxied: &str, expected_echo: &str) -> Result<()> {
    for mode in ["auto", "legacy"] {
        let tools = py_same(direct, proxied, mode, &["list-tools"]).await?;
        assert!(tool_names(&tools).iter().any(|n| n == "echo"), "no echo tool in {tools}");
        let call =
            py_same(direct, proxied, mode, &["call", "echo", r#"{"message":"hello through mcpgw"}"#]).await?;
        assert_eq!(first_text(&call["result"]), Some(expected_echo), "echo result: {call}");
    }
    let tools = inspector_same(direct, proxied, &["--method", "tools/list"]).await?;
    assert!(tool_names(&tools).iter().any(|n| n == "echo"), "no echo tool in {tools}");
    let call = inspector_same(
        direct,
        proxied,
        &["--method", "tools/call", "--tool-name", "echo", "--tool-arg", "message=hello through mcpgw"],
    )
    .await?;
    assert_eq!(first_text(&call), Some(expected_echo), "inspector echo result: {call}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_through_proxy_matches_direct() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = EverythingServer::start().await?;
    let proxied = gw.add_server("everything", &upstream.url(), "streamable_http").await?;
    clients_see_the_same(&upstream.url(), &proxied, "Echo: hello through mcpgw").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_server_through_proxy_matches_direct() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-pass", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-pass", &upstream.url(), "streamable_http").await?;
    clients_see_the_same(&upstream.url(), &proxied, "hello through mcpgw").await?;
    // auto mode found the modern era through the proxy, as it does directly.
    let doc = py_client(&proxied, "auto", &["call", "whoami"]).await?;
    assert_eq!(doc["protocolVersion"], "2026-07-28", "{doc}");
    assert_eq!(first_text(&doc["result"]), Some("py-pass"), "{doc}");
    Ok(())
}
