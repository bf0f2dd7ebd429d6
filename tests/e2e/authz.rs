//! Authorization with real clients through a proxy as deployed: custom roles created through REST, API keys
//! narrowed by their own permissions, tenants that do not see each other's servers, and a role granted to
//! signed-in users by an IdP group (Entra-like IdP). A forbidden tool answers as a missing one.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, SignInGateway, py_client, py_oauth_client};
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

/// POSTs `tools/call` of `tool` as the holder of `key`: the status and the error's reason, if any.
async fn limited(http: &reqwest::Client, url: &str, key: &str, tool: &str) -> Result<(u16, String)> {
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    let resp = http
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let doc: Value = resp.json().await.unwrap_or(Value::Null);
    Ok((status, doc["error"]["data"]["reason"].as_str().unwrap_or_default().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_rate_limit_holds_across_two_proxies_and_fails_as_chosen_while_redis_is_away() -> Result<()>
{
    use std::time::{Duration, Instant};

    let mut redis = mcpgw_e2e::Redis::start().await?;
    let db = mcpgw_e2e::TestDb::new();
    let cp = mcpgw_e2e::ControlPlane::start_with(&db, mcpgw_e2e::ADMIN_TOKEN, &["--redis-url", &redis.url()])
        .await?;
    let a = mcpgw_e2e::Proxy::start_closed(&cp.grpc_url(), &[]).await?;
    let b = mcpgw_e2e::Proxy::start_closed(&cp.grpc_url(), &[]).await?;
    let upstream = mcpgw_e2e::RecordingUpstream::start().await?;
    cp.register("shared", &upstream.url(), "streamable_http").await?;
    for proxy in [&a, &b] {
        proxy.wait_routable("shared", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    }
    // 50 requests per second with bursts of 50, shared (low enough that eight callers exceed it on a loaded
    // machine); closed while Redis is away (the default).
    let (status, doc) = cp
        .api(
            Method::POST,
            "/api/v1/rate-limits",
            Some(json!({"scope": "tenant", "match": {"server": "shared", "tool": "add"}, "requests": 500,
                "per": "10s", "burst": 50, "global": true})),
        )
        .await?;
    ensure!(status == 201 && doc["fail_mode"] == "closed", "{status} {doc}");
    let (status, doc) = cp
        .api(
            Method::POST,
            "/api/v1/rate-limits",
            Some(json!({"scope": "user", "match": {"server": "shared", "tool": "echo"}, "requests": 3,
                "per": "1h", "global": true, "fail_mode": "open"})),
        )
        .await?;
    ensure!(status == 201 && doc["fail_mode"] == "open", "{status} {doc}");
    let (_, other) = cp.create_api_key(json!({"name": "other"})).await?;
    let (_, key) = cp.create_api_key(json!({"name": "caller"})).await?;
    let http = reqwest::Client::new();
    let (url_a, url_b) = (a.url("shared"), b.url("shared"));
    // The key came after the limits: once both proxies accept it, their tables hold the limits too.
    for url in [&url_a, &url_b] {
        mcpgw_e2e::poll_until("the key to reach the proxy", Duration::from_secs(10), || async {
            Ok((limited(&http, url, &key, "ready").await?.0 == 200).then_some(()))
        })
        .await?;
    }

    // Two proxies, four callers each, as fast as they can for two seconds — and on, up to ten, until the
    // limit has refused someone (a loaded machine may not reach 300 calls a second in two).
    let start = Instant::now();
    let until = start + Duration::from_secs(2);
    let at_most = start + Duration::from_secs(10);
    let over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for url in [&url_a, &url_a, &url_a, &url_a, &url_b, &url_b, &url_b, &url_b] {
        let (http, url, key, over) = (http.clone(), url.clone(), key.clone(), over.clone());
        callers.push(tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u32, 0u32);
            loop {
                let now = Instant::now();
                let limited_yet = over.load(std::sync::atomic::Ordering::SeqCst);
                if now >= at_most || (now >= until && limited_yet) {
                    break;
                }
                match limited(&http, &url, &key, "add").await? {
                    (200, _) => admitted += 1,
                    (429, reason) if reason == "rate_limited" => {
                        refused += 1;
                        over.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    other => anyhow::bail!("neither admitted nor refused by the limit: {other:?}"),
                }
            }
            anyhow::Ok((admitted, refused))
        }));
    }
    let mut per_proxy = [0u32; 2];
    let mut refused = 0;
    for (i, caller) in callers.into_iter().enumerate() {
        let (ok, over) = caller.await??;
        per_proxy[i / 4] += ok;
        refused += over;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = f64::from(per_proxy[0] + per_proxy[1]);
    let quota = 50.0 + 50.0 * elapsed;
    eprintln!(
        "global limit: admitted {per_proxy:?} = {admitted} of a quota of {quota:.0} in {elapsed:.2} s; {refused} refused"
    );
    ensure!(refused > 0, "the callers asked for more than the limit");
    ensure!(per_proxy.iter().all(|&n| n > 0), "both proxies admitted calls: {per_proxy:?}");
    ensure!((admitted - quota).abs() <= quota * 0.1, "admitted {admitted} is not within 10 % of {quota:.0}");

    // A small limit is exact across proxies: three on one proxy, then the other proxy refuses the caller.
    for _ in 0..3 {
        ensure!(limited(&http, &url_a, &key, "echo").await?.0 == 200);
    }
    let over = limited(&http, &url_b, &key, "echo").await?;
    ensure!(
        over == (429, "rate_limited".to_owned()),
        "the other proxy sees the shared budget spent: {over:?}"
    );

    // Redis away: the closed limit refuses (once the leased tokens are spent or expired); the open one
    // falls back to each proxy's own bucket for a caller whose shared bucket is not known to be spent.
    redis.stop().await?;
    mcpgw_e2e::poll_until(
        "the closed limit to refuse while Redis is away",
        Duration::from_secs(10),
        || async {
            let answer = limited(&http, &url_a, &key, "add").await?;
            Ok((answer == (503, "rate_limit_unavailable".to_owned())).then_some(()))
        },
    )
    .await?;
    let open = limited(&http, &url_b, &other, "echo").await?;
    ensure!(open.0 == 200, "the open limit falls back to the proxy's own bucket: {open:?}");
    let spent = limited(&http, &url_b, &key, "echo").await?;
    ensure!(spent.0 == 429, "a bucket known to be spent stays refused: {spent:?}");
    ensure!(b.metrics().await?.contains("mcpgw_proxy_rate_limit_unavailable_total"));

    // Redis back (empty): leasing resumes without restarting anything.
    redis.restart().await?;
    mcpgw_e2e::poll_until("the closed limit to admit again", Duration::from_secs(10), || async {
        Ok((limited(&http, &url_a, &key, "add").await?.0 == 200).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_filtered_for_sse_servers_on_the_legacy_transport_and_through_the_bridge() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let everything = mcpgw_e2e::EverythingServer::start_sse().await?;
    let url = gw.add_server("sse-tools", &everything.url(), "sse").await?;
    let (_, narrow) = gw
        .cp
        .create_api_key(
            json!({"name": "sse-narrow", "permissions": [{"server": "sse-tools", "tools": ["echo"]}]}),
        )
        .await?;
    let (_, full) = gw.cp.create_api_key(json!({"name": "sse-full"})).await?;

    // The legacy HTTP+SSE transport: the answer arrives on the SSE stream, filtered there.
    let names = |listed: &Value| -> Vec<String> {
        listed["result"]["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let sse_url = format!("{url}/sse");
    let mut restricted = mcpgw_e2e::dataplane::LegacySseClient::connect_as(&sse_url, Some(&narrow)).await?;
    restricted.initialize().await?;
    for _ in 0..2 {
        let listed = restricted.request("tools/list", json!({})).await?;
        ensure!(names(&listed) == ["echo"], "the restricted caller's list on the SSE stream: {listed}");
    }
    let mut unrestricted = mcpgw_e2e::dataplane::LegacySseClient::connect_as(&sse_url, Some(&full)).await?;
    unrestricted.initialize().await?;
    let all = names(&unrestricted.request("tools/list", json!({})).await?);
    ensure!(
        all.len() > 1 && all.contains(&"echo".to_owned()),
        "everything for an unrestricted caller: {all:?}"
    );
    let echoed = restricted
        .request("tools/call", json!({"name": "echo", "arguments": {"message": "over sse"}}))
        .await?;
    ensure!(echoed.to_string().contains("over sse"), "{echoed}");

    // Streamable HTTP clients of the SSE server go through the bridge: the same list, from both SDKs.
    let auth = format!("Authorization: Bearer {narrow}");
    let listed = py_client(&url, "legacy", &["--header", &auth, "list-tools"]).await?;
    ensure!(tool_names(&listed) == ["echo"], "python through the bridge: {listed}");
    let listed = ts_client(&url, "legacy", &["--header", &auth, "list-tools"]).await?;
    ensure!(tool_names(&listed) == ["echo"], "ts through the bridge: {listed}");
    Ok(())
}

/// What one caller of the matrix is and should see on its own tenant's server.
struct Caller {
    label: String,
    tenant: &'static str,
    key: String,
    /// Tools it lists (sorted), on its own tenant's `-tools` server.
    sees: Vec<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_three_roles_and_narrowed_keys_see_and_call_exactly_their_own() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-matrix", PyServerOpts::default()).await?;
    let recording = mcpgw_e2e::RecordingUpstream::start().await?;
    let all_tools = {
        let mut t = tool_names(&py_client(&upstream.url(), "auto", &["list-tools"]).await?);
        t.sort();
        t
    };
    let mut urls = std::collections::HashMap::new();
    let mut ids = std::collections::HashMap::new();
    for tenant in ["acme", "globex"] {
        urls.insert(tenant, register(&gw, &format!("{tenant}-tools"), &upstream.url(), tenant).await?);
        let body = json!({"name": format!("{tenant}-rec"), "endpoint_url": recording.url(),
            "transport_type": "streamable_http", "tenant_id": tenant});
        let (status, doc) = gw.cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
        ensure!(status == 201, "{status} {doc}");
        ids.insert(tenant, doc["id"].as_str().unwrap_or_default().to_owned());
    }
    let mut callers = Vec::new();
    let mut admins = std::collections::HashMap::new();
    for tenant in ["acme", "globex"] {
        for role in ["admin", "server_owner", "user"] {
            let (_, key) = gw
                .cp
                .create_api_key(
                    json!({"name": format!("{tenant}-{role}"), "tenant_id": tenant, "role": role}),
                )
                .await?;
            if role == "admin" {
                admins.insert(tenant, key.clone());
            }
            let sees = all_tools.iter().map(|t| leak(t)).collect();
            callers.push(Caller { label: format!("{tenant} {role}"), tenant, key, sees });
        }
        let narrowed = json!({"name": format!("{tenant}-narrowed"), "tenant_id": tenant,
            "permissions": [{"server": format!("{tenant}-*"), "tools": ["echo"], "prompts": [], "resources": []}]});
        let (_, key) = gw.cp.create_api_key(narrowed).await?;
        callers.push(Caller { label: format!("{tenant} narrowed user"), tenant, key, sees: vec!["echo"] });
    }
    for tenant in ["acme", "globex"] {
        gw.proxy.wait_routable(&format!("{tenant}-rec"), mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    }

    // Every caller's list with the Python SDK (concurrently: each is a process), two with the TS SDK too.
    let lists = futures_util::future::try_join_all(callers.iter().map(|caller| {
        let auth = format!("Authorization: Bearer {}", caller.key);
        let own = urls[caller.tenant].clone();
        async move { py_client(&own, "auto", &["--header", &auth, "list-tools"]).await }
    }))
    .await?;
    for (caller, listed) in callers.iter().zip(&lists) {
        let mut listed = tool_names(listed);
        listed.sort();
        ensure!(listed == caller.sees, "{}: python lists {listed:?}, not {:?}", caller.label, caller.sees);
    }
    for caller in
        callers.iter().filter(|c| c.label.starts_with("globex")).filter(|c| c.label.ends_with("user"))
    {
        let auth = format!("Authorization: Bearer {}", caller.key);
        let mut listed =
            tool_names(&ts_client(&urls[caller.tenant], "legacy", &["--header", &auth, "list-tools"]).await?);
        listed.sort();
        ensure!(listed == caller.sees, "{}: ts lists {listed:?}", caller.label);
    }
    // What each call returns, in a session of each caller's own.
    for caller in &callers {
        let other = if caller.tenant == "acme" { "globex" } else { "acme" };
        let mut own = McpHttp::new(urls[caller.tenant].clone());
        own.extra_headers.push(("Authorization".into(), format!("Bearer {}", caller.key)));
        own.initialize().await?;
        let echoed = own.call_tool("echo", json!({"message": "mine"})).await?;
        ensure!(first_text(&echoed) == Some("mine"), "{}: {echoed}", caller.label);
        let add = own.call("tools/call", json!({"name": "add", "arguments": {"a": 2, "b": 2}})).await?;
        let may_add = caller.sees.contains(&"add");
        ensure!(
            if may_add {
                first_text(&add["result"]).is_some_and(|t| t.starts_with('4'))
            } else {
                add["error"]["message"] == "Unknown tool: add"
            },
            "{}: add → {add}",
            caller.label
        );
        let mut cross = McpHttp::new(urls[other].clone());
        cross.extra_headers.push(("Authorization".into(), format!("Bearer {}", caller.key)));
        let refused = format!("{:?}", cross.initialize().await.map(|_| ()));
        ensure!(refused.contains("unknown_server"), "{}: another tenant's server → {refused}", caller.label);
    }

    // Nothing forbidden reaches an upstream: the narrowed keys' refused calls, prompts and resources,
    // and every caller's calls to the other tenant's server.
    let before = recording.received().len();
    for caller in &callers {
        for tenant in ["acme", "globex"] {
            let mut rec = McpHttp::new(gw.proxy.url(&format!("{tenant}-rec")));
            rec.extra_headers.push(("Authorization".into(), format!("Bearer {}", caller.key)));
            let attempts = [
                ("tools/call", json!({"name": "add", "arguments": {}})),
                ("prompts/get", json!({"name": "secret-prompt"})),
                ("resources/read", json!({"uri": "file:///etc/secret"})),
            ];
            for (method, params) in attempts {
                let forbidden = tenant != caller.tenant || caller.sees == ["echo"];
                let answer = rec.call(method, params).await;
                if forbidden {
                    ensure!(
                        answer.is_err() || answer.as_ref().is_ok_and(|a| a.get("error").is_some()),
                        "{}: {method} at {tenant}-rec → {answer:?}",
                        caller.label
                    );
                }
            }
        }
    }
    let reached: Vec<String> = recording.received()[before..]
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .filter(|b| b.contains("secret") || b.contains("\"add\""))
        .collect();
    let allowed = callers.iter().filter(|c| c.sees != ["echo"]).count() * 3;
    ensure!(
        reached.len() == allowed,
        "only the unrestricted callers' own-tenant requests reach the upstream ({allowed}), not {}: {reached:#?}",
        reached.len()
    );

    // REST: a tenant admin reads and changes its own tenant only.
    for (tenant, other) in [("acme", "globex"), ("globex", "acme")] {
        let admin = &admins[tenant];
        let (status, _) =
            gw.cp.api_as(admin, Method::GET, &format!("/api/v1/servers/{}", ids[other]), None).await?;
        ensure!(status == 404, "{tenant} admin reading {other}'s server: {status}");
        let (status, _) =
            gw.cp.api_as(admin, Method::DELETE, &format!("/api/v1/servers/{}", ids[other]), None).await?;
        ensure!(status == 404, "{tenant} admin deleting {other}'s server: {status}");
        let export = reqwest::Client::new()
            .get(format!("{}/api/v1/admin/export", gw.cp.http_url()))
            .bearer_auth(admin)
            .send()
            .await?;
        ensure!(export.status() == 200, "{tenant}'s export: {}", export.status());
        let export = export.text().await?;
        ensure!(
            export.contains(&format!("{tenant}-tools")) && !export.contains(other),
            "{tenant}'s export holds its own servers only: {export}"
        );
        // Discovery runs in the background after a registration: wait for the tenant's own tools.
        let tools =
            mcpgw_e2e::poll_until("the tenant's discovered tools", Duration::from_secs(20), || async {
                let (status, tools) =
                    gw.cp.api_as(admin, Method::GET, "/api/v1/discovery/tools", None).await?;
                let tools = tools.to_string();
                Ok((status == 200 && tools.contains(&format!("{tenant}-tools"))).then_some(tools))
            })
            .await?;
        ensure!(
            !tools.contains(&format!("{other}-tools")),
            "{tenant}'s discovery shows its own servers' tools only: {tools}"
        );
        let user = &callers.iter().find(|c| c.label == format!("{tenant} user")).context("user")?.key;
        let (status, _) = gw.cp.api_as(user, Method::GET, "/api/v1/admin/export", None).await?;
        ensure!(status == 403, "a user key on REST: {status}");
    }
    Ok(())
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}
