//! The web console in a real headless Chromium (`tests/peers/console.mjs`, playwright-core on Debian's
//! `chromium`) against the whole gateway: a company IdP (`idp.mjs`), the control plane as authorization
//! server, a proxy and a real MCP server (the Python SDK's). What an administrator does in the browser is
//! checked where it takes effect: the proxy, the REST API, the audit log. Screenshots of every page at
//! 1280×800 and 390×844 land in `target/console-screenshots/`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::browser::Browser;
use mcpgw_e2e::gateway::ROUTABLE_TIMEOUT;
use mcpgw_e2e::{PyServer, PyServerOpts, SignInGateway, poll_until};
use reqwest::Method;
use serde_json::{Value, json};

fn users() -> Value {
    json!({
        "alice": {"email": "alice@example.com", "name": "Alice", "roles": ["mcp.admin"]},
        "bob": {"email": "bob@example.com", "name": "Bob", "roles": []},
    })
}

/// The HTTP status the proxy answers an `initialize` sent with `key`.
async fn initialize_status(url: &str, key: &str) -> Result<u16> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "console-e2e", "version": "1"}}});
    let resp = mcpgw_e2e::http_client()
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// Calls `echo` through the proxy with `key` (legacy session), `times` times.
async fn echo_calls(url: &str, key: &str, times: usize) -> Result<()> {
    let mut client = mcpgw_e2e::McpHttp::new(url);
    client.extra_headers.push(("authorization".into(), format!("Bearer {key}")));
    client.initialize().await?;
    for i in 0..times {
        let result = client.call_tool("echo", json!({"message": format!("console {i}")})).await?;
        ensure!(result.get("content").is_some(), "echo {i}: {result}");
    }
    Ok(())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_runs_the_gateway_from_the_browser() -> Result<()> {
    let sg = SignInGateway::start(
        users(),
        None,
        &["--oidc-admin-roles", "mcp.admin", "--health-interval", "500ms"],
    )
    .await?;
    let gw = &sg.gw;
    let upstream = PyServer::start("py-console", PyServerOpts::default()).await?;
    let mut browser = Browser::start(&gw.cp.http_url()).await?;

    // Without a session the console shows only its sign-in, and the API refuses the browser.
    let opened = browser.run("open", json!({"path": "/ui/"})).await?;
    ensure!(opened["status"] == 200, "{opened}");
    let servers = format!("{}/api/v1/servers", gw.cp.http_url());
    let status = mcpgw_e2e::http_client().get(&servers).send().await?.status();
    ensure!(status == 401, "the API without a credential: {status}");

    // Alice signs in at the company IdP (an administrator by her IdP role).
    let label = browser.run("signin_idp", json!({"login": "alice"})).await?;
    ensure!(label == "alice@example.com", "signed in as {label}");
    let nav = strings(&browser.run("nav_entries", json!({})).await?);
    for page in ["overview", "servers", "keys", "roles", "limits", "audit", "connect"] {
        ensure!(nav.iter().any(|n| n == page), "{page} missing from {nav:?}");
    }

    // The API's validation shows at the field; then a real server is registered and discovered.
    let refused = browser
        .run(
            "register_server",
            json!({"name": "bad name!", "url": upstream.url(), "transport": "streamable_http"}),
        )
        .await?;
    ensure!(refused["ok"] == false && refused["field_errors"].get("name").is_some(), "{refused}");
    let registered = browser
        .run(
            "register_server",
            json!({"name": "py-console", "url": upstream.url(), "transport": "streamable_http"}),
        )
        .await?;
    ensure!(registered["ok"] == true, "{registered}");
    let tools = strings(
        &browser
            .run("server_tools", json!({"name": "py-console", "expect": ["echo", "add", "whoami"]}))
            .await?,
    );
    ensure!(tools.iter().any(|t| t == "echo"), "{tools:?}");
    gw.proxy.wait_routable("py-console", ROUTABLE_TIMEOUT).await?;
    let url = gw.proxy.url("py-console");

    // A YAML import: its dry run lists the change first; applied, the server exists.
    let yaml = format!(
        "servers:\n  - name: py-imported\n    endpoint_url: {}\n    transport_type: streamable_http\n",
        upstream.url()
    );
    let imported = browser.run("import_yaml", json!({"yaml": yaml})).await?;
    let planned = &imported["dry_run"]["changes"];
    ensure!(imported["ok"] == true && planned.to_string().contains("py-imported"), "{imported}");
    ensure!(
        imported["applied"]["summary"].as_str().is_some_and(|s| s.starts_with("Created 1")),
        "{imported}"
    );
    let (status, servers) = gw.cp.api(Method::GET, "/api/v1/servers", None).await?;
    ensure!(status == 200 && servers.to_string().contains("\"py-imported\""), "{status} {servers}");
    let listed = strings(&browser.run("servers_listed", json!({})).await?);
    ensure!(listed.iter().any(|n| n == "py-imported"), "{listed:?}");

    // A key made in the console works on the proxy until it is revoked there.
    let key = browser.run("create_key", json!({"name": "console key", "role": "user"})).await?;
    let secret = key["secret"].as_str().context("the secret is shown once")?.to_owned();
    poll_until("the new key admitted by the proxy", ROUTABLE_TIMEOUT, || async {
        Ok((initialize_status(&url, &secret).await? == 200).then_some(()))
    })
    .await?;
    echo_calls(&url, &secret, 3).await?;
    // The overview's traffic is the proxy's own report on its routing stream (every 5 s).
    let traffic =
        poll_until("the proxy's traffic report counting the calls", Duration::from_secs(20), || async {
            let (_, proxies) = gw.cp.api(Method::GET, "/api/v1/proxies", None).await?;
            let traffic = proxies[0]["traffic"].clone();
            Ok((traffic["requests"].as_u64().unwrap_or(0) >= 5 && traffic["requests_per_second"].is_f64())
                .then_some(traffic))
        })
        .await?;
    eprintln!("proxy traffic: {traffic}");
    browser.run("revoke_key", json!({"name": "console key"})).await?;
    let listed = browser.run("keys_listed", json!({})).await?;
    ensure!(!listed.to_string().contains("console key"), "revoked key still listed: {listed}");
    poll_until("the revoked key refused by the proxy", ROUTABLE_TIMEOUT, || async {
        Ok((initialize_status(&url, &secret).await? == 401).then_some(()))
    })
    .await?;

    // A rate limit created, then changed; the API holds what the console shows.
    let limit = json!({"scope": "api_key", "match": {"server": "py-console"}, "requests": 100, "per": "1m"});
    let created = browser.run("create_rate_limit", limit).await?;
    ensure!(created["ok"] == true, "{created}");
    let changed = browser
        .run(
            "edit_rate_limit",
            json!({"id": created["id"], "values": {"scope": "api_key", "match": {"server": "py-console"}, "requests": 7, "per": "1m"}}),
        )
        .await?;
    ensure!(changed["ok"] == true, "{changed}");
    let (status, limits) = gw.cp.api(Method::GET, "/api/v1/rate-limits", None).await?;
    ensure!(status == 200, "{limits}");
    let stored: Vec<&Value> = limits["items"].as_array().into_iter().flatten().collect();
    ensure!(stored.len() == 1 && stored[0]["requests"] == 7, "after the edit: {limits}");

    // The calls just made, found in the audit log, one opened, and exported as CSV.
    let found =
        browser.run("audit_search", json!({"filters": {"kind": "mcp", "server": "py-console"}})).await?;
    let rows = found["rows"].as_array().cloned().unwrap_or_default();
    ensure!(rows.iter().filter(|r| r.to_string().contains("tools/call")).count() >= 3, "audit rows: {found}");
    ensure!(found["detail"].is_object(), "no record detail: {found}");
    let csv = browser.run("audit_csv", json!({"filters": {"kind": "mcp", "server": "py-console"}})).await?;
    let csv = csv.as_str().unwrap_or_default();
    ensure!(csv.lines().count() >= 4 && csv.contains("tools/call"), "CSV: {csv}");

    // Small: everything the overview needs, opened uncached, well under 500 KiB. How fast it is interactive
    // is a figure, not a verdict (this test shares the machine with others): written next to the
    // screenshots, `load.json`.
    let timing = browser.run("load_timing", json!({})).await?;
    std::fs::write(browser.artifacts.join("load.json"), timing.to_string())?;
    ensure!(timing["transferred_bytes"].as_u64().is_some_and(|b| b > 0 && b <= 500 * 1024), "{timing}");
    ensure!(timing["interactive_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{timing}");

    // Every page readable at both widths, without console errors.
    let shots = browser.run("screenshots", json!({})).await?;
    let pages = shots["pages"].as_array().cloned().unwrap_or_default();
    ensure!(pages.len() >= 14, "screenshots: {shots}");
    ensure!(pages.iter().all(|p| p["overflow"] == false), "horizontal overflow: {shots}");
    ensure!(shots["console_errors"].as_array().is_some_and(Vec::is_empty), "console errors: {shots}");

    // A cross-site form post with Alice's browser is refused, and creates nothing.
    let api_keys = format!("{}/api/v1/api-keys", gw.cp.http_url());
    let forged = browser
        .run(
            "cross_site_post",
            json!({"action_url": api_keys, "fields": {"name": "forged", "role": "admin"}}),
        )
        .await?;
    ensure!(matches!(forged["status"].as_u64(), Some(401 | 403 | 415)), "cross-site post: {forged}");
    let (_, keys) = gw.cp.api(Method::GET, "/api/v1/api-keys", None).await?;
    ensure!(!keys.to_string().contains("forged"), "{keys}");

    // The server's only instance dies: the page shows it unhealthy without a reload.
    drop(upstream);
    let health = browser
        .run("server_health", json!({"name": "py-console", "status": "unhealthy", "timeout_ms": 20000}))
        .await?;
    ensure!(health["server_status"] == "unhealthy", "{health}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_tenant_administrators_see_only_their_part() -> Result<()> {
    let sg = SignInGateway::start(users(), None, &["--oidc-admin-roles", "mcp.admin"]).await?;
    let gw = &sg.gw;
    let upstream = PyServer::start("py-tenants", PyServerOpts::default()).await?;
    for (name, tenant) in [("default-tools", "default"), ("acme-tools", "acme")] {
        let body = json!({"name": name, "endpoint_url": upstream.url(), "transport_type": "streamable_http", "tenant_id": tenant});
        let (status, doc) = gw.cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
        ensure!(status == 201, "{name}: {doc}");
    }
    gw.cp.create_api_key(json!({"name": "default ops", "role": "admin"})).await?;
    let (_, acme_admin) =
        gw.cp.create_api_key(json!({"name": "acme admin", "role": "admin", "tenant_id": "acme"})).await?;
    let mut browser = Browser::start(&gw.cp.http_url()).await?;

    // Bob is a plain user: the connect page and an overview, nothing to administer.
    browser.run_as("bob", "signin_idp", json!({"login": "bob"})).await?;
    let nav = strings(&browser.run_as("bob", "nav_entries", json!({})).await?);
    ensure!(nav.iter().all(|n| n == "overview" || n == "connect"), "bob's navigation: {nav:?}");
    let bob_shots = browser.run_as("bob", "screenshots", json!({})).await?;
    ensure!(
        bob_shots["pages"].as_array().is_some_and(|p| p.iter().all(|p| p["overflow"] == false)),
        "{bob_shots}"
    );

    // The acme administrator sees acme's server and keys only, and not the platform's proxies.
    browser.run_as("acme", "signin_token", json!({"token": acme_admin})).await?;
    let servers = strings(&browser.run_as("acme", "servers_listed", json!({})).await?);
    ensure!(servers == ["acme-tools"], "acme sees {servers:?}");
    let keys = browser.run_as("acme", "keys_listed", json!({})).await?;
    ensure!(keys.to_string().contains("acme admin") && !keys.to_string().contains("default ops"), "{keys}");
    let shots = browser.run_as("acme", "screenshots", json!({})).await?;
    ensure!(shots["console_errors"].as_array().is_some_and(Vec::is_empty), "{shots}");

    // Meanwhile the admin token's session (another browser, driven by keyboard only) sees both tenants.
    let keys = browser.run_as("root", "keyboard", json!({"token": gw.cp.admin_token()})).await?;
    ensure!(keys["focus_visible"] == true, "the focused entry shows no focus: {keys}");
    let mut all = strings(&browser.run_as("root", "servers_listed", json!({})).await?);
    all.sort();
    ensure!(all == ["acme-tools", "default-tools"], "the admin token sees {all:?}");

    // Signing out ends the session: the console is back at its sign-in.
    browser.run_as("acme", "signout", json!({})).await?;
    let again = browser.run_as("acme", "servers_listed", json!({})).await;
    ensure!(again.is_err(), "still listing after sign-out: {again:?}");
    Ok(())
}
