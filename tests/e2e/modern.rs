//! 2026-07-28 (stateless) requests through the proxy: routing headers and `_meta` arrive intact.

use anyhow::Result;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, py_client};
use serde_json::{Value, json};

use crate::first_text;

/// The same raw modern request direct and proxied: same status, media type and JSON-RPC response.
async fn raw_same(direct: &str, proxied: &str, method: &str, params: Value) -> Result<Value> {
    let (d_id, d) = McpHttp::new(direct).modern(method, params.clone()).await?;
    let (p_id, p) = McpHttp::new(proxied).modern(method, params).await?;
    assert_eq!(p.status, d.status, "{method}: status through the proxy vs direct; body {}", p.text());
    assert_eq!(p.content_type(), d.content_type(), "{method}: media type");
    let direct_response = d.response_for(&d_id).unwrap_or(Value::Null);
    let proxied_response = p.response_for(&p_id).unwrap_or(Value::Null);
    assert!(direct_response.get("result").is_some(), "{method} direct: {direct_response}");
    assert_eq!(
        proxied_response, direct_response,
        "{method}: response through the proxy (left) vs direct (right)"
    );
    Ok(proxied_response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_modern_requests_match_direct() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-modern", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-modern", &upstream.url(), "streamable_http").await?;

    let listed = raw_same(&upstream.url(), &proxied, "tools/list", json!({})).await?;
    assert_eq!(listed.pointer("/result/resultType"), Some(&json!("complete")), "{listed}");
    let called = raw_same(
        &upstream.url(),
        &proxied,
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "m"}}),
    )
    .await?;
    assert_eq!(first_text(&called["result"]), Some("m"), "{called}");
    let discovered = raw_same(&upstream.url(), &proxied, "server/discover", json!({})).await?;
    assert!(
        discovered
            .pointer("/result/supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.contains(&json!("2026-07-28"))),
        "{discovered}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_pinned_to_2026_07_28_through_proxy() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-pinned", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-pinned", &upstream.url(), "streamable_http").await?;
    let direct = upstream.url();
    for action in [&["list-tools"][..], &["call", "add", r#"{"a":2,"b":40}"#]] {
        let (d, p) = tokio::try_join!(
            py_client(&direct, "2026-07-28", action),
            py_client(&proxied, "2026-07-28", action)
        )?;
        assert_eq!(p, d, "py_client --mode 2026-07-28 {action:?}: proxied (left) vs direct (right)");
        assert_eq!(p["protocolVersion"], "2026-07-28");
    }
    Ok(())
}
