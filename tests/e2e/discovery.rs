//! Capability discovery by the control plane matches what each real server lists itself, across pages:
//! server-everything (legacy only, Streamable HTTP and HTTP+SSE), the Python SDK server and the rmcp
//! fixture (dual-era, paginated). Times each discovery.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::{
    ADMIN_TOKEN, ControlPlane, EverythingServer, McpHttp, PyServer, PyServerOpts, RmcpServer, TestDb,
};
use reqwest::Method;
use serde_json::{Value, json};

const LISTS: [(&str, &str, &str); 4] = [
    ("tools/list", "tools", "tools"),
    ("resources/list", "resources", "resources"),
    ("resources/templates/list", "resourceTemplates", "resource_templates"),
    ("prompts/list", "prompts", "prompts"),
];

/// Registers `url`, discovers it through `POST /refresh`, and compares every list with the server's own
/// answer in the same era. Returns (tools, pages of the direct tools listing).
async fn check(
    cp: &ControlPlane,
    name: &str,
    url: &str,
    transport: &str,
    direct_url: &str,
) -> Result<(usize, usize)> {
    let body =
        json!({"name": name, "endpoint_url": url, "transport_type": transport, "auto_discover": false});
    let (status, created) = cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "register {name}: {status} {created}");
    let id = created["id"].as_str().context("id")?;
    let started = Instant::now();
    let (status, found) = cp.api(Method::POST, &format!("/api/v1/servers/{id}/refresh"), None).await?;
    let took = started.elapsed();
    ensure!(status == 200, "refresh {name}: {status} {found}\n{}", cp.describe());
    let era = found["discovery"]["protocol_version"].as_str().unwrap_or_default().to_owned();
    eprintln!("discovery of {name} ({transport}, era {era}): {took:?}");

    let mut direct = McpHttp::new(direct_url);
    let modern = era == "2026-07-28";
    if !modern {
        direct.initialize().await?;
    }
    let mut tool_pages = 0;
    for (method, key, field) in LISTS {
        let (items, pages) = match direct.list_all(method, key, modern).await {
            Ok(listed) => listed,
            // A server without the capability answers -32601; discovery stores nothing then.
            Err(e) if format!("{e:#}").contains("-32601") => (Vec::new(), 1),
            Err(e) => return Err(e.context(format!("{name}: direct {method}"))),
        };
        if method == "tools/list" {
            tool_pages = pages;
        }
        let stored = found[field].as_array().cloned().unwrap_or_default();
        ensure!(
            stored == items,
            "{name}: {method} differs\nthrough discovery: {}\ndirect ({pages} pages): {}",
            Value::from(stored),
            Value::from(items)
        );
    }
    if !modern {
        let _ = direct.delete_session().await;
    }
    Ok((found["tools"].as_array().map_or(0, Vec::len), tool_pages))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_matches_each_servers_own_lists() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start_with(&db, ADMIN_TOKEN, &["--health-interval", "1h"]).await?;
    let everything = EverythingServer::start().await?;
    let everything_sse = EverythingServer::start_sse().await?;
    let py = PyServer::start("py-disc", PyServerOpts::default()).await?;
    let rmcp = RmcpServer::start("rmcp-disc").await?;

    let (tools, _) =
        check(&cp, "everything", &everything.url(), "streamable_http", &everything.url()).await?;
    ensure!(tools >= 10, "server-everything lists its tools: {tools}");
    let (sse_tools, _) =
        check(&cp, "everything-sse", &everything_sse.url(), "sse", &everything.url()).await?;
    ensure!(sse_tools == tools, "the same tools over HTTP+SSE: {sse_tools} vs {tools}");
    let (py_tools, _) = check(&cp, "python", &py.url(), "streamable_http", &py.url()).await?;
    ensure!(py_tools >= 4, "echo, add, whoami, progress and more: {py_tools}");
    let (rmcp_tools, pages) = check(&cp, "rmcp", &rmcp.url(), "streamable_http", &rmcp.url()).await?;
    ensure!(rmcp_tools == 7 && pages == 3, "rmcp lists 7 tools over 3 pages: {rmcp_tools} in {pages}");

    let (_, found) = cp.api(Method::GET, "/api/v1/discovery/tools?tools=echo", None).await?;
    let names: Vec<&str> =
        found["servers"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    ensure!(names == ["everything", "everything-sse", "python", "rmcp"], "servers offering echo: {names:?}");
    Ok(())
}
