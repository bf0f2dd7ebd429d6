//! Who may call, with real clients and real processes: API keys created through the REST API work with
//! every client CLI through a proxy as deployed (credentials required), a caller without one gets the
//! RFC 9728 challenge, and a deleted key is refused on every proxy within a second.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::{Gateway, Proxy, PyServer, PyServerOpts, fastmcp, inspector, py_client};
use serde_json::json;

use crate::{first_text, tool_names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_call_through_the_gateway_with_an_api_key() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-identity", PyServerOpts::default()).await?;
    let url = gw.add_server("py-identity", &upstream.url(), "streamable_http").await?;
    let (_, key) = gw.cp.create_api_key(json!({"name": "e2e clients"})).await?;
    ensure!(key.starts_with("mcpgw_") && key.len() >= 40, "a recognisable key of at least 256 bits: {key}");
    let auth = format!("Authorization: Bearer {key}");

    for mode in ["auto", "legacy"] {
        let listed = py_client(&url, mode, &["--header", &auth, "list-tools"]).await?;
        ensure!(tool_names(&listed).iter().any(|t| t == "echo"), "python {mode}: {listed}");
        let called =
            py_client(&url, mode, &["--header", &auth, "call", "echo", r#"{"message":"keyed"}"#]).await?;
        ensure!(first_text(&called["result"]) == Some("keyed"), "python {mode}: {called}");
    }
    let ts =
        ts_client(&url, "legacy", &["--header", &auth, "call", "echo", r#"{"message":"ts keyed"}"#]).await?;
    ensure!(first_text(&ts["result"]) == Some("ts keyed"), "ts: {ts}");
    let listed = inspector(&url, &["--header", &auth, "--method", "tools/list"]).await?;
    ensure!(tool_names(&listed).iter().any(|t| t == "echo"), "inspector: {listed}");
    let listed = fastmcp(&["list", &url, "--auth", &key]).await?;
    ensure!(listed.to_string().contains("\"echo\""), "fastmcp list: {listed}");
    let called = fastmcp(&["call", &url, "echo", "message=fast keyed", "--auth", &key]).await?;
    ensure!(called.to_string().contains("fast keyed"), "fastmcp call: {called}");

    // Without the key, the client is told where to authenticate.
    let anonymous = py_client(&url, "legacy", &["list-tools"]).await;
    let refused = anonymous.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(refused.contains("needs credentials"), "a client without credentials is refused: {refused}");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await?;
    ensure!(resp.status() == 401, "{}", resp.status());
    let challenge = resp.headers().get("www-authenticate").context("no challenge")?.to_str()?.to_owned();
    let metadata = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no resource_metadata in the challenge")?
        .to_owned();
    let prm: serde_json::Value = reqwest::get(&metadata).await?.json().await?;
    ensure!(prm["resource"] == json!(url), "the metadata names the exact resource: {prm}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_refused_on_every_proxy_within_a_second() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let second = Proxy::start_closed(&gw.cp.grpc_url(), &[]).await?;
    let upstream = PyServer::start("py-revoke", PyServerOpts::default()).await?;
    gw.add_server("py-revoke", &upstream.url(), "streamable_http").await?;
    second.wait_routable("py-revoke", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    let (id, key) = gw.cp.create_api_key(json!({"name": "short-lived"})).await?;
    let urls = [gw.proxy.url("py-revoke"), second.url("py-revoke")];
    let http = reqwest::Client::new();
    let status = |url: String| {
        let req = http
            .post(url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    // The key reaches both proxies (a creation is streamed like any change). Whatever the upstream
    // answers a sessionless ping, anything but 401 means the gateway let the key through.
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(url.clone()).await? == 401 {
            ensure!(Instant::now() < deadline, "the new key never worked on {url}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (code, body) = gw.cp.api(reqwest::Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await?;
    ensure!(code == 204, "delete: {code} {body}");
    let deleted = Instant::now();
    let mut refused_after = Vec::new();
    for url in &urls {
        while status(url.clone()).await? != 401 {
            ensure!(
                deleted.elapsed() < Duration::from_secs(1),
                "{url} still accepts the deleted key after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        refused_after.push(deleted.elapsed());
    }
    eprintln!("deleted key refused by both proxies after {refused_after:?}");
    Ok(())
}

/// The routing stream carries every credential, so it is closed too: a proxy presenting the control plane's
/// `--proxy-token` over TLS gets the table; one with a wrong token gets none and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_stream_needs_the_proxy_token_and_runs_over_tls() -> Result<()> {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../control-plane/tests/integration/tls");
    let (cert, key, ca) = (tls.join("server.pem"), tls.join("server.key"), tls.join("ca.pem"));
    let token = "e2e-proxy-token-0123456789";
    let db = mcpgw_e2e::TestDb::new();
    let cp = mcpgw_e2e::ControlPlane::start_with(
        &db,
        mcpgw_e2e::ADMIN_TOKEN,
        &[
            "--proxy-token",
            token,
            "--grpc-tls-cert",
            cert.to_str().context("path")?,
            "--grpc-tls-key",
            key.to_str().context("path")?,
        ],
    )
    .await?;
    let url = format!("https://localhost:{}", cp.grpc_addr().port());
    let ca = ca.to_str().context("path")?;
    let proxy = Proxy::start_closed(&url, &["--control-plane-ca", ca, "--proxy-token", token]).await?;
    let upstream = PyServer::start("py-tls", PyServerOpts::default()).await?;
    cp.register("py-tls", &upstream.url(), "streamable_http").await?;
    proxy.wait_routable("py-tls", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;

    // A proxy with the wrong token is refused: it never becomes ready, and its log says why.
    let intruder =
        Proxy::start_unready(&url, &["--control-plane-ca", ca, "--proxy-token", "not-the-proxy-token-42"])
            .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !intruder.log_text().to_lowercase().contains("unauthenticated") {
        ensure!(Instant::now() < deadline, "no refusal in the proxy's log: {}", intruder.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(intruder.readyz().await? == 503, "a refused proxy has no table");
    ensure!(!intruder.log_text().contains("not-the-proxy-token-42"), "the token is never logged");
    Ok(())
}
