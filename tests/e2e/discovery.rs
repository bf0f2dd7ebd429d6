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

/// A proxy named by `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` would resolve endpoint names itself, out of the
/// SSRF guard's reach: the control plane's MCP client never uses one. The "proxy" here counts every
/// connection it is offered; discovery and health checks must reach the server without it.
#[tokio::test]
async fn discovery_ignores_proxy_variables() -> Result<()> {
    let trap = tokio::net::TcpListener::bind(mcpgw_e2e::localhost(0)).await?;
    let proxy_url = format!("http://{}", trap.local_addr()?);
    let offered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = offered.clone();
    let accepting = tokio::spawn(async move {
        while let Ok((socket, _)) = trap.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let db = TestDb::new();
    let env: Vec<(&str, &str)> =
        ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .into_iter()
            .map(|name| (name, proxy_url.as_str()))
            .chain([("NO_PROXY", ""), ("no_proxy", "")])
            .collect();
    let cp = ControlPlane::start_with_env(&db, ADMIN_TOKEN, &["--health-interval", "200ms"], &env).await?;
    let py = PyServer::start("py-noproxy", PyServerOpts::default()).await?;
    let body = json!({"name": "direct", "endpoint_url": py.url(), "auto_discover": false});
    let (status, created) = cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "register: {status} {created}");
    let id = created["id"].as_str().context("id")?;
    let (status, found) = cp.api(Method::POST, &format!("/api/v1/servers/{id}/refresh"), None).await?;
    ensure!(status == 200, "discovery through the environment's proxy failed: {status} {found}");
    ensure!(found["tools"].as_array().is_some_and(|t| !t.is_empty()), "{found}");
    mcpgw_e2e::poll_until("a health check of the server", std::time::Duration::from_secs(10), || {
        let cp = &cp;
        async move {
            let (_, got) = cp.api(Method::GET, &format!("/api/v1/servers/{id}/health"), None).await?;
            Ok((got["instances"][0]["health_status"] == "healthy").then_some(()))
        }
    })
    .await
    .with_context(|| cp.describe())?;
    accepting.abort();
    let offered = offered.load(std::sync::atomic::Ordering::SeqCst);
    ensure!(offered == 0, "{offered} connections went to the environment's proxy");
    Ok(())
}
