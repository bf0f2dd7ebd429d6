//! `/mcp` over fake upstreams: lists answered from the catalog in the routing table (no upstream asked),
//! named per each server's prefix setting, filtered per caller and paginated with cursors that survive
//! table changes; calls renamed back and forwarded into upstream sessions the gateway opens lazily (and
//! re-opens when the upstream forgets them); stateless calls to 2026-07-28 servers; `never` names routed to
//! a healthy server; catalog changes announced on the GET stream.

use mcpgw_proto::v1::{
    ApiKey, Catalog, HealthStatus, InstanceHealth, NamePrefix, PermissionRule, Resource, RoutingUpdate,
    Server, Transport, proxy_message::Kind as Reply, resource::Kind,
};
use serde_json::{Value, json};

use crate::support::{Reply as UpReply, *};

const KEY: &str = "7T2ULrhWSqF3WzSU2X7DZ7iZ3XHq8KFW3FSbrCzbYyE=";
/// A key allowed only the tools of `beta`.
const NARROW_KEY: &str = "mcpgw_aggregation-narrow-key";

fn server(name: &str, prefix: NamePrefix, priority: i32) -> Resource {
    Resource {
        kind: Some(Kind::Server(Server {
            id: format!("id-{name}"),
            name: name.into(),
            transport: Transport::StreamableHttp as i32,
            name_prefix: prefix as i32,
            priority,
            ..Default::default()
        })),
    }
}

fn tool(name: &str) -> String {
    json!({"name": name, "description": format!("the {name} tool"), "inputSchema": {"type": "object"}})
        .to_string()
}

fn catalog(name: &str, version: &str, tools: &[String], digest: u8) -> Resource {
    Resource {
        kind: Some(Kind::Catalog(Catalog {
            server_id: format!("id-{name}"),
            digest: vec![digest],
            protocol_version: version.into(),
            capabilities_json: r#"{"tools":{"listChanged":true},"prompts":{}}"#.into(),
            tools: tools.to_vec(),
            prompts: vec![json!({"name": "greet", "arguments": []}).to_string()],
            ..Default::default()
        })),
    }
}

/// alpha (always, legacy) offers echo and search; beta and gamma (never) both offer search, beta first
/// by priority; gamma speaks 2026-07-28. `alpha_tools` replaces alpha's tool list.
fn table(version: u64, ups: &[FakeUpstream], alpha_tools: &[String], extra: Vec<Resource>) -> RoutingUpdate {
    let mut upserts = vec![
        server("alpha", NamePrefix::Always, 0),
        server("beta", NamePrefix::Never, 1),
        server("gamma", NamePrefix::Never, 2),
        catalog("alpha", "2025-11-25", alpha_tools, version as u8),
        catalog("beta", "2025-11-25", &[tool("search"), tool("beta-only")], 1),
        catalog("gamma", "2026-07-28", &[tool("search"), tool("gamma-only")], 1),
        api_key("test-key", TEST_KEY, "default", 0),
        Resource {
            kind: Some(Kind::ApiKey(ApiKey {
                id: "narrow".into(),
                digest: mcpgw_proto::validate::api_key_digest(NARROW_KEY).to_vec(),
                name: "narrow".into(),
                tenant_id: "default".into(),
                roles: vec!["user".into()],
                permissions: vec![PermissionRule {
                    server: "beta".into(),
                    tools: vec!["*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })),
        },
    ];
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        upserts.push(instance(&format!("inst-{name}"), &format!("id-{name}"), &ups[i].url()));
    }
    upserts.extend(extra);
    RoutingUpdate { version, snapshot: true, base_version: 0, upserts, removals: vec![] }
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: &'static str,
    token: Option<String>,
}

impl Client {
    fn new(proxy: &ProxyProcess, key: &'static str) -> Self {
        Self { http: reqwest::Client::new(), url: format!("http://{}/mcp", proxy.listen), key, token: None }
    }

    async fn send(&self, body: Value, modern: bool) -> reqwest::Response {
        let mut req = self.http.post(&self.url).bearer_auth(self.key).json(&body);
        req = req.header("accept", "application/json, text/event-stream");
        if let Some(token) = &self.token {
            req = req.header("mcp-session-id", token);
        }
        if modern {
            let method = body["method"].as_str().unwrap().to_owned();
            req = req.header("mcp-protocol-version", "2026-07-28").header("mcp-method", method);
            if let Some(name) = body["params"]["name"].as_str() {
                req = req.header("mcp-name", name);
            }
        }
        req.send().await.unwrap()
    }

    async fn rpc(&self, method: &str, params: Value) -> Value {
        let resp =
            self.send(json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}), false).await;
        assert_eq!(resp.status(), 200, "{method}");
        resp.json().await.unwrap()
    }

    async fn initialize(&mut self) {
        let resp = self
            .send(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {"roots": {}},
                    "clientInfo": {"name": "aggregation-test", "version": "1"}}}),
                false,
            )
            .await;
        assert_eq!(resp.status(), 200);
        self.token = Some(resp.headers()["mcp-session-id"].to_str().unwrap().to_owned());
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["result"]["protocolVersion"], "2025-06-18", "{answer}");
        assert_eq!(answer["result"]["capabilities"]["tools"]["listChanged"], true, "{answer}");
        assert_eq!(answer["result"]["serverInfo"]["name"], "mcpgw");
    }

    /// The names a list shows, but for the gateway's own tools.
    async fn names(&self, method: &str, field: &str) -> Vec<String> {
        let mut names = self.all_names(method, field).await;
        names.retain(|n| !n.starts_with("gateway_"));
        names
    }

    async fn all_names(&self, method: &str, field: &str) -> Vec<String> {
        let answer = self.rpc(method, json!({})).await;
        answer["result"][field]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|t| t[if field == "resources" { "uri" } else { "name" }].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn start(ups: &[FakeUpstream]) -> (FakeControlPlane, ProxyProcess) {
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &["--session-key", KEY]).await;
    cp.push(table(1, ups, &[tool("echo"), tool("search")], vec![])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    (cp, proxy)
}

#[tokio::test]
async fn lists_are_merged_named_filtered_and_asked_of_no_upstream() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (_cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    assert_eq!(
        client.names("tools/list", "tools").await,
        ["alpha_echo", "alpha_search", "beta-only", "gamma-only", "search"],
        "always prefixes; never keeps the bare name and merges the servers offering it; sorted"
    );
    assert_eq!(client.names("prompts/list", "prompts").await, ["alpha_greet", "greet"]);
    let listed = client.rpc("tools/list", json!({})).await;
    let search =
        listed["result"]["tools"].as_array().unwrap().iter().find(|t| t["name"] == "search").unwrap();
    assert_eq!(search["description"], "the search tool", "the item as the server listed it");

    let mut narrow = Client::new(&proxy, NARROW_KEY);
    narrow.initialize().await;
    assert_eq!(
        narrow.names("tools/list", "tools").await,
        ["beta-only", "search"],
        "only what the key allows"
    );
    for up in &mut ups {
        assert!(up.drain().is_empty(), "no upstream is asked for a list");
    }
    // A token is bound to its caller.
    let mut stolen = Client::new(&proxy, NARROW_KEY);
    stolen.token = client.token.clone();
    let resp = stolen.send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), false).await;
    assert_eq!(resp.status(), 404);
    // A call to a tool the key may not use is answered as a missing one.
    let answer = narrow.rpc("tools/call", json!({"name": "alpha_echo", "arguments": {}})).await;
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    assert!(ups[0].drain().is_empty());
}

#[tokio::test]
async fn pages_continue_by_name_across_table_changes() {
    let ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let many: Vec<String> = (0..2500).map(|i| tool(&format!("t{i:04}"))).collect();
    let (mut cp, proxy) = start(&ups).await;
    cp.push(table(2, &ups, &many, vec![])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    let first = client.rpc("tools/list", json!({})).await;
    let page = first["result"]["tools"].as_array().unwrap();
    assert_eq!(page.len(), 1000);
    assert_eq!(page[999]["name"], "alpha_t0999");
    let cursor = first["result"]["nextCursor"].as_str().unwrap().to_owned();
    // Tools added before and after the cursor's position: the next page neither repeats nor skips.
    let mut changed = many.clone();
    changed.push(tool("a-new-first"));
    changed.push(tool("t1000a"));
    cp.push(table(3, &ups, &changed, vec![])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let second = client.rpc("tools/list", json!({"cursor": cursor})).await;
    let page = second["result"]["tools"].as_array().unwrap();
    assert_eq!(page[0]["name"], "alpha_t1000");
    assert_eq!(page[1]["name"], "alpha_t1000a");
    let cursor = second["result"]["nextCursor"].as_str().unwrap().to_owned();
    let third = client.rpc("tools/list", json!({"cursor": cursor})).await;
    let last: Vec<&str> =
        third["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(last.first(), Some(&"alpha_t1999"));
    assert!(last.contains(&"search") && third["result"].get("nextCursor").is_none(), "{last:?}");
    // A cursor of another list, or a forged one, fails cleanly.
    let prompts = client.rpc("prompts/list", json!({"cursor": cursor})).await;
    assert_eq!(prompts["error"]["code"], -32602, "{prompts}");
    let forged = client.rpc("tools/list", json!({"cursor": "bogus"})).await;
    assert_eq!(forged["error"]["code"], -32602, "{forged}");
}

#[tokio::test]
async fn calls_reach_the_owner_in_a_lazily_opened_session_under_its_own_name() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (_cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    assert!(ups[0].drain().is_empty(), "initialize opens no upstream session");

    let answer = client.rpc("tools/call", json!({"name": "alpha_echo", "arguments": {"x": 1}})).await;
    assert_eq!(answer["result"], json!({}), "{answer}");
    let init = ups[0].next_request().await;
    let init_body: Value = serde_json::from_slice(&init.body).unwrap();
    assert_eq!(init_body["method"], "initialize");
    assert_eq!(init_body["params"]["protocolVersion"], "2025-06-18", "the client's own version");
    assert_eq!(init_body["params"]["clientInfo"]["name"], "aggregation-test");
    assert_eq!(init.header("authorization"), None, "the client's credential never goes upstream");
    let initialized = ups[0].next_request().await;
    assert_eq!(initialized.header("mcp-session-id"), Some(ups[0].session_id.as_str()));
    let call = ups[0].next_request().await;
    let call_body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(call_body["params"]["name"], "echo", "renamed back");
    assert_eq!(call_body["params"]["arguments"], json!({"x": 1}));
    assert_eq!(call.header("mcp-session-id"), Some(ups[0].session_id.as_str()));

    // The next call reuses the upstream session; the upstream's id never reaches the client.
    let resp = client
        .send(
            json!({"jsonrpc": "2.0", "id": 8, "method": "prompts/get", "params": {"name": "alpha_greet"}}),
            false,
        )
        .await;
    assert_eq!(resp.headers().get("mcp-session-id"), None);
    let get = ups[0].next_request().await;
    assert_eq!(serde_json::from_slice::<Value>(&get.body).unwrap()["params"]["name"], "greet");

    // The upstream forgot the session: a new one is opened and the call sent again, once.
    ups[0].reply(UpReply::Status(404));
    let answer = client.rpc("tools/call", json!({"name": "alpha_search", "arguments": {}})).await;
    assert_eq!(answer["result"], json!({}), "{answer}");
    let methods: Vec<String> = (0..4)
        .map(|_| {
            ups[0]
                .requests
                .try_recv()
                .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["method"].to_string())
        })
        .map(|m| m.unwrap_or_default())
        .collect();
    assert_eq!(
        methods,
        [r#""tools/call""#, r#""initialize""#, r#""notifications/initialized""#, r#""tools/call""#]
    );

    // `never` names: the preferred healthy server (beta), then gamma when beta is unhealthy.
    client.rpc("tools/call", json!({"name": "search", "arguments": {}})).await;
    let at_beta: Vec<Value> =
        ups[1].drain().iter().map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()).collect();
    assert_eq!(at_beta.last().unwrap()["params"]["name"], "search", "{at_beta:?}");
    assert!(ups[2].drain().is_empty());
}

#[tokio::test]
async fn never_names_go_to_a_healthy_server_and_modern_calls_stay_stateless() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (mut cp, proxy) = start(&ups).await;
    let unhealthy = Resource {
        kind: Some(Kind::InstanceHealth(InstanceHealth {
            instance_id: "inst-beta".into(),
            status: HealthStatus::Unhealthy as i32,
        })),
    };
    cp.push(table(2, &ups, &[tool("echo"), tool("search")], vec![unhealthy])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let modern = Client::new(&proxy, TEST_KEY);
    let call = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": name, "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}})
    };
    // gamma speaks 2026-07-28: the request goes as it came, renamed, with no session.
    let resp = modern.send(call("search"), true).await;
    assert_eq!(resp.status(), 200);
    let at_gamma = ups[2].next_request().await;
    assert_eq!(at_gamma.header("mcp-name"), Some("search"));
    assert_eq!(at_gamma.header("mcp-session-id"), None);
    assert_eq!(serde_json::from_slice::<Value>(&at_gamma.body).unwrap()["method"], "tools/call");
    assert!(ups[1].drain().is_empty(), "beta is unhealthy");
    // A hint requiring a tool only beta offers leaves beta alone, which has no healthy instance.
    let mut hinted = call("search");
    hinted["params"]["_meta"]["io.mcpgw/routing"] = json!({"required_tools": ["beta-only"]});
    let resp = modern.send(hinted.clone(), true).await;
    assert_eq!(resp.status(), 503);
    assert!(ups[2].drain().is_empty(), "gamma lacks the required tool");
    // beta healthy again: the hinted call goes there, without the hint.
    cp.push(table(3, &ups, &[tool("echo"), tool("search")], vec![])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let resp = modern.send(hinted, true).await;
    assert_eq!(resp.status(), 200);
    let at_beta = ups[1].drain();
    let last: Value = serde_json::from_slice(&at_beta.last().unwrap().body).unwrap();
    assert_eq!(last["params"]["name"], "search");
    assert!(last["params"]["_meta"].get("io.mcpgw/routing").is_none(), "hints stay at the gateway");
    // alpha is legacy-only: a 2026-07-28 call goes through a session the gateway opens for the caller.
    let resp = modern.send(call("alpha_echo"), true).await;
    assert_eq!(resp.status(), 200);
    let init: Value = serde_json::from_slice(&ups[0].next_request().await.body).unwrap();
    assert_eq!(init["method"], "initialize");
    let _initialized = ups[0].next_request().await;
    let forwarded = ups[0].next_request().await;
    assert_eq!(forwarded.header("mcp-name"), Some("echo"));
    assert_eq!(forwarded.header("mcp-protocol-version"), Some("2025-11-25"));
    assert_eq!(forwarded.header("mcp-session-id"), Some(ups[0].session_id.as_str()));
    let resp = modern.send(call("alpha_echo"), true).await;
    assert_eq!(resp.status(), 200);
    let again = ups[0].next_request().await;
    assert_eq!(
        serde_json::from_slice::<Value>(&again.body).unwrap()["method"],
        "tools/call",
        "session reused"
    );
}

#[tokio::test]
async fn the_get_stream_announces_catalog_changes_once() {
    let ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (mut cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    let mut stream = client
        .http
        .get(&client.url)
        .bearer_auth(TEST_KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // A table that changes nothing the caller sees (health) announces nothing; a changed catalog does.
    let healthy = Resource {
        kind: Some(Kind::InstanceHealth(InstanceHealth {
            instance_id: "inst-beta".into(),
            status: HealthStatus::Healthy as i32,
        })),
    };
    cp.push(table(2, &ups, &[tool("echo"), tool("search")], vec![healthy])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    cp.push(table(3, &ups, &[tool("echo"), tool("search"), tool("new")], vec![])).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let mut seen = String::new();
    within("list_changed on the GET stream", async {
        while !seen.contains("list_changed") {
            let chunk = stream.chunk().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    assert_eq!(seen.matches("notifications/tools/list_changed").count(), 1, "{seen}");
    assert!(!seen.contains("prompts/list_changed"), "{seen}");
    assert!(client.names("tools/list", "tools").await.contains(&"alpha_new".to_owned()));
}

#[tokio::test]
async fn the_gateways_own_tools_show_what_the_caller_may_use() {
    let ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    let names = client.all_names("tools/list", "tools").await;
    for own in [
        "gateway_get_server",
        "gateway_health_check",
        "gateway_list_servers",
        "gateway_register_server",
        "gateway_search_tools",
    ] {
        assert!(names.contains(&own.to_owned()), "{own} in {names:?}");
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "own tools sorted in with the others");

    let call = |name: &str, args: Value| json!({"name": name, "arguments": args});
    let listed = client.rpc("tools/call", call("gateway_list_servers", json!({}))).await;
    let servers: Vec<&str> = listed["result"]["structuredContent"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(servers, ["alpha", "beta", "gamma"], "{listed}");
    let found = client.rpc("tools/call", call("gateway_search_tools", json!({"query": "only tool"}))).await;
    let hits: Vec<&str> = found["result"]["structuredContent"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(hits[..2], ["beta-only", "gamma-only"], "{found}");

    // A narrow key sees only beta, on /mcp/gateway as in /mcp.
    let narrow = reqwest::Client::new();
    let own_url = format!("http://{}/mcp/gateway", proxy.listen);
    let post = |body: Value| narrow.post(&own_url).bearer_auth(NARROW_KEY).json(&body).send();
    let listed: Value = post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": call("list_servers", json!({}))}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(listed["result"]["structuredContent"]["servers"][0]["name"], "beta", "{listed}");
    assert_eq!(listed["result"]["structuredContent"]["servers"].as_array().unwrap().len(), 1);
    let hidden: Value = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": call("get_server", json!({"name": "alpha"}))}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(hidden["result"]["isError"], true, "{hidden}");
    let tools: Value =
        post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})).await.unwrap().json().await.unwrap();
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 5, "{tools}");

    // register_server goes to the control plane with the caller's own credential.
    let spec = json!({"name": "new-one", "endpoint_url": "http://127.0.0.1:1/mcp"});
    let done = client.rpc("tools/call", call("gateway_register_server", spec.clone())).await;
    assert_eq!(done["result"]["structuredContent"]["status"], 201, "{done}");
    assert_eq!(done["result"]["isError"], false);
    let seen = cp.registrations();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, TEST_KEY);
    assert_eq!(serde_json::from_str::<Value>(&seen[0].1).unwrap(), spec);
}

#[tokio::test]
async fn requests_from_an_upstream_reach_the_client_and_its_answer_goes_back() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (_cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    // initialize, initialized, then the call answered as a stream carrying an elicitation request.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    ups[0].reply(UpReply::Json(
        r#"{"jsonrpc":"2.0","id":"mcpgw-initialize","result":{"protocolVersion":"2025-06-18"}}"#.into(),
    ));
    ups[0].reply(UpReply::Json(String::new()));
    ups[0].reply(UpReply::Sse(rx));
    tx.send(Some("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"elicitation/create\",\"params\":{\"message\":\"ok?\"}}\n\n".into())).await.unwrap();
    tx.send(Some("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n".into())).await.unwrap();
    tx.send(Some(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[]}}\n\n".into(),
    ))
    .await
    .unwrap();
    tx.send(None).await.unwrap();
    let resp = client
        .send(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "alpha_echo"}}),
            false,
        )
        .await;
    let text = resp.text().await.unwrap();
    assert!(text.contains(r#""id":"mcpgw:id-alpha:0""#), "{text}");
    assert!(text.contains(r#""progressToken":1"#) && text.contains(r#""id":7"#), "{text}");
    let _ = (ups[0].next_request().await, ups[0].next_request().await, ups[0].next_request().await);
    let answer = client
        .send(json!({"jsonrpc": "2.0", "id": "mcpgw:id-alpha:0", "result": {"action": "accept"}}), false)
        .await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let back = ups[0].next_request().await;
    assert_eq!(back.header("mcp-session-id"), Some(ups[0].session_id.as_str()));
    assert_eq!(
        serde_json::from_slice::<Value>(&back.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept"}})
    );
    // An answer naming no request of this session is refused, and reaches no upstream.
    let stray = client.send(json!({"jsonrpc": "2.0", "id": "mcpgw:id-beta:0", "result": {}}), false).await;
    assert_eq!(stray.status(), 400);
    assert!(ups[1].drain().is_empty());
}

#[tokio::test]
async fn the_get_stream_relays_what_upstream_sessions_send() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (_cp, proxy) = start(&ups).await;
    let mut client = Client::new(&proxy, TEST_KEY);
    client.initialize().await;
    let mut stream = client
        .http
        .get(&client.url)
        .bearer_auth(TEST_KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", client.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // The first call opens alpha's upstream session (initialize, initialized, the call); the GET stream
    // then opens alpha's own stream, which carries a log message, a roots request and a list_changed.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    ups[0].reply(UpReply::ForGet(Box::new(UpReply::Sse(rx))));
    client.rpc("tools/call", json!({"name": "alpha_echo", "arguments": {}})).await;
    let get = within("the upstream GET", async {
        loop {
            let r = ups[0].next_request().await;
            if r.method == "GET" {
                return r;
            }
        }
    })
    .await;
    assert_eq!(get.header("mcp-session-id"), Some(ups[0].session_id.as_str()));
    for event in [
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hello"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"roots/list"}"#,
    ] {
        tx.send(Some(format!("event: message\ndata: {event}\n\n"))).await.unwrap();
    }
    let mut seen = String::new();
    within("the relayed messages", async {
        while !seen.contains("roots/list") {
            let chunk = stream.chunk().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    assert!(seen.contains(r#""data":"hello""#), "{seen}");
    assert!(seen.contains(r#""id":"mcpgw:id-alpha:5""#), "{seen}");
    assert!(!seen.contains("list_changed"), "the upstream's list_changed is not relayed: {seen}");
    drop(tx);
}

#[tokio::test]
async fn resource_subscriptions_are_fanned_out_to_the_server_offering_them() {
    let mut ups = vec![FakeUpstream::start().await, FakeUpstream::start().await, FakeUpstream::start().await];
    let (mut cp, proxy) = start(&ups).await;
    let mut update = table(2, &ups, &[tool("echo"), tool("search")], vec![]);
    for resource in &mut update.upserts {
        if let Some(Kind::Catalog(c)) = &mut resource.kind
            && c.server_id == "id-gamma"
        {
            c.resources = vec![json!({"uri": "file:///gamma.txt", "name": "g"}).to_string()];
            // A new content has a new digest (the proxy reuses what it parsed for an unchanged one).
            c.digest = vec![9];
        }
    }
    cp.push(update).await;
    assert!(matches!(cp.next_reply().await, Reply::Ack(_)));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    ups[2].reply(UpReply::Sse(rx));
    let client = Client::new(&proxy, TEST_KEY);
    let listen = json!({"jsonrpc": "2.0", "id": "L1", "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": true, "resourceSubscriptions": ["file:///gamma.txt", "nope://x"]},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let mut stream = client.send(listen, true).await;
    assert_eq!(stream.status(), 200);
    let at_gamma = ups[2].next_request().await;
    assert_eq!(at_gamma.header("mcp-method"), Some("subscriptions/listen"));
    let asked: Value = serde_json::from_slice(&at_gamma.body).unwrap();
    assert_eq!(asked["params"]["notifications"], json!({"resourceSubscriptions": ["file:///gamma.txt"]}));
    for event in [
        json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
            "notifications": {"resourceSubscriptions": ["file:///gamma.txt"]},
            "_meta": {"io.modelcontextprotocol/subscriptionId": "mcpgw-listen"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {
            "uri": "file:///gamma.txt", "_meta": {"io.modelcontextprotocol/subscriptionId": "mcpgw-listen"}}}),
    ] {
        tx.send(Some(format!("event: message\ndata: {event}\n\n"))).await.unwrap();
    }
    let mut seen = String::new();
    within("the resource update on the listen stream", async {
        while !seen.contains("resources/updated") {
            let chunk = stream.chunk().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    let messages: Vec<Value> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(messages[0]["method"], "notifications/subscriptions/acknowledged", "{seen}");
    assert_eq!(
        messages[0]["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["file:///gamma.txt"]}),
        "the gateway's own acknowledgement, with what it honours"
    );
    assert_eq!(messages[0]["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");
    let updated = messages.iter().find(|m| m["method"] == "notifications/resources/updated").unwrap();
    assert_eq!(updated["params"]["uri"], "file:///gamma.txt");
    assert_eq!(updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "L1");
    assert_eq!(
        messages.iter().filter(|m| m["method"] == "notifications/subscriptions/acknowledged").count(),
        1
    );
    drop(tx);
}
