//! Authorization with real clients through a proxy as deployed: custom roles created through REST, API keys
//! narrowed by their own permissions, tenants that do not see each other's servers, and a role granted to
//! signed-in users by an IdP group (Entra-like IdP). A forbidden tool answers as a missing one.

use anyhow::{Result, ensure};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::{Gateway, PyServer, PyServerOpts, SignInGateway, py_client, py_oauth_client};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{first_text, tool_names};

async fn register(gw: &Gateway, name: &str, url: &str, tenant: &str) -> Result<String> {
    let body =
        json!({"name": name, "endpoint_url": url, "transport_type": "streamable_http", "tenant_id": tenant});
    let (status, doc) = gw.cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "{name}: {status} {doc}");
    gw.proxy.wait_routable(name, mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    Ok(gw.proxy.url(name))
}

async fn role(gw: &Gateway, body: Value) -> Result<()> {
    let (status, doc) = gw.cp.api(Method::POST, "/api/v1/roles", Some(body)).await?;
    ensure!(status == 201, "{status} {doc}");
    Ok(())
}

/// Calls `tool` with the Python SDK as the holder of `key`; the tool's text, or the error.
async fn py_call(url: &str, key: &str, tool: &str, args: &str) -> Result<String> {
    let auth = format!("Authorization: Bearer {key}");
    let out = py_client(url, "auto", &["--header", &auth, "call", tool, args]).await?;
    Ok(first_text(&out["result"]).map(str::to_owned).unwrap_or_else(|| out.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_narrowed_keys_and_tenants_decide_what_each_caller_may_call() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-authz", PyServerOpts::default()).await?;
    let acme = register(&gw, "acme-tools", &upstream.url(), "acme").await?;
    let globex = register(&gw, "globex-tools", &upstream.url(), "globex").await?;
    role(
        &gw,
        json!({"name": "calculator", "tenant_id": "acme", "rules": [{"server": "acme-*", "tools": ["add"]}]}),
    )
    .await?;
    let (status, _) = gw
        .cp
        .api(Method::POST, "/api/v1/roles", Some(json!({"name": "admin", "rules": [{"server": "*"}]})))
        .await?;
    ensure!(status == 400, "built-in roles cannot be redefined");
    let (_, calc) =
        gw.cp.create_api_key(json!({"name": "calc", "tenant_id": "acme", "role": "calculator"})).await?;
    let (_, narrow) = gw
        .cp
        .create_api_key(json!({"name": "narrow", "tenant_id": "acme", "permissions": [{"server": "acme-tools", "tools": ["echo"]}]}))
        .await?;
    let (_, other) = gw.cp.create_api_key(json!({"name": "globex", "tenant_id": "globex"})).await?;
    gw.proxy.wait_routable("acme-tools", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;

    for (key, expected) in [(&calc, ["add"]), (&narrow, ["echo"])] {
        let auth = format!("Authorization: Bearer {key}");
        for mode in ["auto", "legacy"] {
            let listed = py_client(&acme, mode, &["--header", &auth, "list-tools"]).await?;
            ensure!(
                tool_names(&listed) == expected,
                "{mode}: a caller sees exactly what it may call: {listed}"
            );
        }
        let listed = ts_client(&acme, "legacy", &["--header", &auth, "list-tools"]).await?;
        ensure!(tool_names(&listed) == expected, "ts: {listed}");
    }
    let sum = py_call(&acme, &calc, "add", r#"{"a": 2, "b": 3}"#).await?;
    ensure!(sum.starts_with('5'), "the calculator role may add: {sum}");
    let refused = py_call(&acme, &calc, "echo", r#"{"message": "hi"}"#).await;
    let refused = format!("{refused:?}");
    ensure!(refused.contains("Unknown tool: echo"), "echo is not the calculator's: {refused}");
    ensure!(py_call(&acme, &narrow, "echo", r#"{"message": "narrowed"}"#).await? == "narrowed");
    let refused = format!("{:?}", py_call(&acme, &narrow, "add", r#"{"a": 1, "b": 1}"#).await);
    ensure!(refused.contains("Unknown tool: add"), "the key's permissions narrow its role: {refused}");
    // The TS SDK sees the same decisions.
    let auth = format!("Authorization: Bearer {narrow}");
    let ts = ts_client(&acme, "legacy", &["--header", &auth, "call", "echo", r#"{"message":"ts narrowed"}"#])
        .await?;
    ensure!(first_text(&ts["result"]) == Some("ts narrowed"), "{ts}");
    let ts = ts_client(&acme, "legacy", &["--header", &auth, "call", "add", r#"{"a":1,"b":1}"#]).await;
    ensure!(format!("{ts:?}").contains("Unknown tool: add"), "{ts:?}");

    // Tenants: another tenant's server does not exist for the caller.
    let cross = format!("{:?}", py_call(&globex, &calc, "add", r#"{"a": 1, "b": 1}"#).await);
    ensure!(cross.contains("no MCP server named"), "acme's key at globex's server: {cross}");
    ensure!(py_call(&globex, &other, "echo", r#"{"message": "own tenant"}"#).await? == "own tenant");
    let cross = format!("{:?}", py_call(&acme, &other, "echo", r#"{"message": "x"}"#).await);
    ensure!(cross.contains("no MCP server named"), "globex's key at acme's server: {cross}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_group_grants_a_role_to_signed_in_users() -> Result<()> {
    let users = json!({
        "alice": {"email": "alice@example.com", "roles": [], "groups": ["g-calculators"]},
        "bob": {"email": "bob@example.com", "roles": [], "groups": ["g-other"]},
    });
    let sg = SignInGateway::start(users, Some("11111111-2222-3333-4444-555555555555"), &[]).await?;
    let upstream = PyServer::start("py-group", PyServerOpts::default()).await?;
    let url = sg.gw.add_server("group-tools", &upstream.url(), "streamable_http").await?;
    role(&sg.gw, json!({"name": "calculator", "rules": [{"server": "group-tools", "tools": ["add"]}], "idp_groups": ["g-calculators"]}))
        .await?;
    let out = py_oauth_client(
        &url,
        "alice",
        &["call", "add", r#"{"a": 20, "b": 22}"#, "call", "echo", r#"{"message": "no"}"#],
    )
    .await;
    let text = format!("{out:?}");
    ensure!(text.contains("42"), "alice's IdP group makes her a calculator: {text}");
    ensure!(text.contains("Unknown tool: echo"), "and only a calculator: {text}");
    let out = py_oauth_client(&url, "bob", &["call", "echo", r#"{"message": "bob as user"}"#]).await?;
    ensure!(out.to_string().contains("bob as user"), "no mapped role: a user of the tenant: {out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_created_through_rest_refuses_the_call_over_it() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-limited", PyServerOpts::default()).await?;
    let url = gw.add_server("limited", &upstream.url(), "streamable_http").await?;
    let body =
        json!({"scope": "user", "match": {"server": "limited", "tool": "add"}, "requests": 2, "per": "1h"});
    let (status, created) = gw.cp.api(Method::POST, "/api/v1/rate-limits", Some(body)).await?;
    ensure!(status == 201, "{status} {created}");
    let (status, doc) = gw
        .cp
        .api(
            Method::POST,
            "/api/v1/rate-limits",
            Some(json!({"scope": "user", "requests": 1, "per": "1s", "global": true})),
        )
        .await?;
    ensure!(status == 400 && doc["code"] == "invalid_rate_limit", "global limits are refused plainly: {doc}");
    let (_, key) = gw.cp.create_api_key(json!({"name": "limited"})).await?;
    // The key came after the limit: once the proxy accepts the key, its table holds the limit too.
    mcpgw_e2e::poll_until(
        "the key (and the limit before it) to reach the proxy",
        std::time::Duration::from_secs(10),
        || {
            let (url, key) = (url.clone(), key.clone());
            async move {
                Ok(py_call(&url, &key, "echo", r#"{"message": "ready"}"#).await.ok().filter(|t| t == "ready"))
            }
        },
    )
    .await?;
    for _ in 0..2 {
        ensure!(py_call(&url, &key, "add", r#"{"a": 1, "b": 2}"#).await?.starts_with('3'));
    }
    let over = format!("{:?}", py_call(&url, &key, "add", r#"{"a": 1, "b": 2}"#).await);
    ensure!(over.contains("rate limit"), "the third call in the hour is refused: {over}");
    ensure!(py_call(&url, &key, "echo", r#"{"message": "other tool"}"#).await? == "other tool");
    Ok(())
}
