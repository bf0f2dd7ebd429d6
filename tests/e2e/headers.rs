//! Header hygiene: the upstream sees its own authority as `Host` and never a browser `Origin`.

use anyhow::Result;
use mcpgw_e2e::mcp::headers;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, RecordingUpstream};
use serde_json::{Value, json};

/// What a browser app behind the gateway's public name sends: foreign to the upstream (which refuses them
/// directly), allowed at the gateway by its configuration below.
const FOREIGN: [(&str, &str); 2] = [("Origin", "https://app.example"), ("Host", "gateway.example:8443")];
/// The gateway as deployed under a public name, with a web app's origin allowed.
const PUBLIC: [&str; 4] =
    ["--public-url", "https://gateway.example:8443", "--allowed-origins", "https://app.example"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_behind_proxy_accepts_foreign_host_and_origin() -> Result<()> {
    let gw = Gateway::start_with(&PUBLIC).await?;
    let upstream = PyServer::start("py-headers", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-headers", &upstream.url(), "streamable_http").await?;

    // Direct, the server really refuses them (so passing through the proxy proves a rewrite).
    let direct = McpHttp::new(upstream.url());
    let (_, resp) = modern_with(&direct, &[FOREIGN[0]]).await?;
    assert_eq!(resp.status.as_u16(), 403, "direct with a foreign Origin: {}", resp.text());
    let (_, resp) = modern_with(&direct, &[FOREIGN[1]]).await?;
    assert_eq!(resp.status.as_u16(), 421, "direct with a foreign Host: {}", resp.text());

    // Through the proxy: a modern request and a whole legacy session, both with the foreign headers.
    let client = McpHttp::new(&proxied);
    let (id, resp) = modern_with(&client, &FOREIGN).await?;
    assert_eq!(resp.status.as_u16(), 200, "through the proxy: {}", resp.text());
    let tools = resp.response_for(&id).unwrap_or(Value::Null);
    assert!(tools.pointer("/result/tools").is_some(), "{tools}");

    let mut session = McpHttp::new(&proxied);
    session.extra_headers = headers(&FOREIGN);
    session.initialize().await?;
    let result = session.call_tool("echo", json!({"message": "behind the gateway"})).await?;
    assert_eq!(crate::first_text(&result), Some("behind the gateway"), "{result}");
    assert!(session.delete_session().await?.is_success());

    // A page on another origin, or a rebound name, is refused by the gateway itself.
    let (_, resp) = modern_with(&client, &[("Origin", "http://evil.example"), FOREIGN[1]]).await?;
    assert_eq!(resp.status.as_u16(), 403, "{}", resp.text());
    let (_, resp) = modern_with(&client, &[("Host", "evil.example:8443")]).await?;
    assert_eq!(resp.status.as_u16(), 421, "{}", resp.text());
    Ok(())
}

async fn modern_with(client: &McpHttp, extra: &[(&str, &str)]) -> Result<(Value, mcpgw_e2e::McpResponse)> {
    let id = client.next_id();
    let mut all = mcpgw_e2e::mcp::modern_headers("tools/list", &json!({}));
    all.extend(headers(extra));
    let resp =
        client.post_with(&mcpgw_e2e::mcp::modern_body(id.clone(), "tools/list", json!({})), &all).await?;
    Ok((id, resp))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_its_own_host_and_no_origin() -> Result<()> {
    let gw = Gateway::start_with(&PUBLIC).await?;
    let upstream = RecordingUpstream::start().await?;
    let proxied = gw.add_server("recorder", &upstream.url(), "streamable_http").await?;
    let client = McpHttp::new(&proxied);
    let (id, resp) = modern_with(&client, &FOREIGN).await?;
    assert_eq!(resp.status.as_u16(), 200, "{}", resp.text());
    assert!(resp.response_for(&id).is_some(), "{}", resp.text());

    // The control plane's discovery probes the same upstream concurrently: pick the proxied request.
    let received = upstream.received();
    let from_control_plane = |r: &&mcpgw_e2e::fake::Recorded| {
        r.header("user-agent").is_some_and(|ua| ua.starts_with("mcpgw-control-plane/"))
    };
    let mut proxied = received.iter().filter(|r| !from_control_plane(r));
    let request = proxied.next().expect("the upstream got the proxied request");
    assert!(proxied.next().is_none(), "one request proxied: {received:?}");
    assert_eq!(request.header("host"), Some(upstream.addr().to_string().as_str()), "{request:?}");
    assert_eq!(request.header("origin"), None, "Origin was forwarded: {request:?}");
    // The routing headers of 2026-07-28 pass through untouched.
    assert_eq!(request.header("mcp-method"), Some("tools/list"), "{request:?}");
    assert_eq!(request.header("mcp-protocol-version"), Some("2026-07-28"), "{request:?}");
    Ok(())
}
