//! The gateway's own MCP server: `/mcp/gateway`, and inside `/mcp` as `gateway_<tool>`. Its reading tools
//! answer from the routing table, showing only servers and tools the caller may use (what `/mcp` shows
//! it); `register_server` is the REST API's `POST /api/v1/servers` carried out by the control plane for the
//! caller's own credential, so exactly the REST permissions apply.

use std::collections::HashMap;
use std::sync::Arc;

use mcpgw_proto::v1::HealthStatus;
use serde_json::{Value, json};

use crate::balance::Gate;
use crate::identity::Principal;
use crate::routing::catalog::ListKind;
use crate::routing::{RoutingTable, Server};

/// The path segment and `/mcp` prefix of the gateway's own server (a name the registry refuses).
pub const NAME: &str = "gateway";

/// Most results `search_tools` returns.
const MAX_RESULTS: usize = 50;

/// The tools, sorted by name: (name, description, input schema).
fn definitions() -> [(&'static str, &'static str, Value); 5] {
    [
        (
            "get_server",
            "One MCP server you may use: its instances with their health and circuit-breaker state, and what it offers.",
            json!({"type": "object", "properties": {"name": {"type": "string", "description": "The server's registered name."}}, "required": ["name"]}),
        ),
        (
            "health_check",
            "Health of the servers you may use (or of one): instances healthy, unhealthy, unknown and ejected by their circuit breaker.",
            json!({"type": "object", "properties": {"name": {"type": "string", "description": "One server's name; all when left out."}}}),
        ),
        (
            "list_servers",
            "The MCP servers you may use through this gateway, with their tags, health and tool count.",
            json!({"type": "object", "properties": {
                "tag": {"type": "string", "description": "Only servers carrying this tag."},
                "health": {"type": "string", "enum": ["healthy", "unhealthy", "unknown"], "description": "Only servers in this state."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}}),
        ),
        (
            "register_server",
            "Register an MCP server (POST /api/v1/servers of the gateway's REST API, with your credential and its permissions).",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "endpoint_url": {"type": "string"},
                "transport_type": {"type": "string", "enum": ["streamable_http", "sse"]},
                "description": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["name", "endpoint_url"]}),
        ),
        (
            "search_tools",
            "Search the tools of every server you may use by words in their names and descriptions; best matches first, with the name to call them by on /mcp.",
            json!({"type": "object", "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RESULTS}},
                "required": ["query"]}),
        ),
    ]
}

/// The tools as `tools/list` items, named with `prefix` (`""` on `/mcp/gateway`, `gateway_` on `/mcp`),
/// sorted by that name.
pub fn tools(prefix: &str) -> Vec<(String, String)> {
    definitions()
        .into_iter()
        .map(|(name, description, schema)| {
            let exposed = format!("{prefix}{name}");
            let item = json!({"name": exposed, "description": description, "inputSchema": schema,
                "annotations": {"readOnlyHint": name != "register_server"}});
            (exposed, item.to_string())
        })
        .collect()
}

/// Whether `name` is one of the tools.
pub fn is_tool(name: &str) -> bool {
    definitions().iter().any(|(n, _, _)| *n == name)
}

/// What a tool call comes to.
pub enum Outcome {
    /// Answered here: the tool result (`isError` set for a refusal the caller should read).
    Done(Value),
    /// `register_server`: the control plane must do it with the caller's credential.
    Register(Value),
}

/// A tool result carrying `value` as structured content and as its JSON text.
pub fn result(value: Value, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": value.to_string()}], "structuredContent": value, "isError": is_error})
}

fn error(message: impl Into<String>) -> Value {
    result(json!({"error": message.into()}), true)
}

/// The servers `principal` may reach, by name.
fn reachable<'a>(table: &'a RoutingTable, principal: &'a Principal) -> impl Iterator<Item = &'a Arc<Server>> {
    table.servers().filter(|s| table.access().allows(principal, &s.tenant, &s.name, None))
}

fn health(server: &Server) -> Value {
    let count =
        |f: &dyn Fn(&crate::routing::Instance) -> bool| server.instances.iter().filter(|i| f(i)).count();
    let healthy = count(&|i| i.health == HealthStatus::Healthy);
    let unhealthy = count(&|i| i.health == HealthStatus::Unhealthy);
    let ejected = count(&|i| i.state.gate() == Gate::Open);
    let status = if server.instances.is_empty() || unhealthy + ejected >= server.instances.len() {
        "unhealthy"
    } else if healthy > 0 {
        "healthy"
    } else {
        "unknown"
    };
    json!({"status": status, "instances": server.instances.len(), "healthy": healthy, "unhealthy": unhealthy,
        "unknown": server.instances.len() - healthy - unhealthy, "ejected": ejected})
}

/// Names `principal` may use of one kind on `server` (their original names).
fn offered(table: &RoutingTable, principal: &Principal, server: &Server, kind: ListKind) -> Vec<String> {
    let mut names: Vec<String> = table
        .catalog()
        .entries(kind)
        .iter()
        .flat_map(|e| e.routes.iter())
        .filter(|r| r.server.id == server.id)
        .filter(|r| {
            table.access().allows(
                principal,
                &server.tenant,
                &server.name,
                Some((kind.item_kind(), &r.original)),
            )
        })
        .map(|r| r.original.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Runs tool `name` (unprefixed) with `args` for `principal`.
pub fn call(table: &RoutingTable, principal: &Principal, name: &str, args: &Value) -> Outcome {
    let text = |key: &str| args.get(key).and_then(Value::as_str);
    let find = |name: Option<&str>| -> Result<&Arc<Server>, Value> {
        let name = name.ok_or_else(|| error("`name` is required"))?;
        reachable(table, principal)
            .find(|s| &*s.name == name)
            .ok_or_else(|| error(format!("no server named {name:?} that you may use")))
    };
    let value = match name {
        "list_servers" => {
            let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(1000).clamp(1, 1000) as usize;
            let mut servers: Vec<&Arc<Server>> = reachable(table, principal)
                .filter(|s| text("tag").is_none_or(|t| s.tags.iter().any(|x| x == t)))
                .filter(|s| text("health").is_none_or(|h| health(s)["status"] == h))
                .collect();
            servers.sort_by(|a, b| a.name.cmp(&b.name));
            let list: Vec<Value> = servers
                .into_iter()
                .take(limit)
                .map(|s| {
                    json!({"name": &*s.name, "tenant": &*s.tenant, "tags": s.tags, "health": health(s),
                        "tools": offered(table, principal, s, ListKind::Tools).len()})
                })
                .collect();
            json!({"servers": list})
        }
        "get_server" => match find(text("name")) {
            Ok(s) => {
                let instances: Vec<Value> = s
                    .instances
                    .iter()
                    .map(|i| {
                        json!({"id": &*i.id, "weight": i.weight,
                            "health": match i.health { HealthStatus::Healthy => "healthy", HealthStatus::Unhealthy => "unhealthy", _ => "unknown" },
                            "circuit_breaker": match i.state.gate() { Gate::Closed => "closed", Gate::Open => "open", Gate::HalfOpen => "half_open" }})
                    })
                    .collect();
                json!({"name": &*s.name, "tenant": &*s.tenant, "tags": s.tags, "priority": s.priority,
                    "health": health(s), "instances": instances,
                    "tools": offered(table, principal, s, ListKind::Tools),
                    "prompts": offered(table, principal, s, ListKind::Prompts),
                    "resources": offered(table, principal, s, ListKind::Resources)})
            }
            Err(e) => return Outcome::Done(e),
        },
        "health_check" => {
            if text("name").is_some() {
                match find(text("name")) {
                    Ok(s) => json!({"servers": [{"name": &*s.name, "health": health(s)}]}),
                    Err(e) => return Outcome::Done(e),
                }
            } else {
                let mut list: Vec<Value> = reachable(table, principal)
                    .map(|s| json!({"name": &*s.name, "health": health(s)}))
                    .collect();
                list.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                json!({"servers": list})
            }
        }
        "search_tools" => match text("query") {
            Some(query) if !query.trim().is_empty() => {
                let limit =
                    args.get("limit").and_then(Value::as_u64).unwrap_or(10).clamp(1, MAX_RESULTS as u64);
                json!({"tools": search(table, principal, query, limit as usize)})
            }
            _ => return Outcome::Done(error("`query` is required")),
        },
        "register_server" => return Outcome::Register(args.clone()),
        other => return Outcome::Done(error(format!("unknown tool {other:?}"))),
    };
    Outcome::Done(result(value, false))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Ranks the visible tools for `query`: each query word scores by where it appears (the tool's name words
/// 3, inside its name 2, its description 1), weighted by how rare it is among the tools (IDF).
fn search(table: &RoutingTable, principal: &Principal, query: &str, limit: usize) -> Vec<Value> {
    let terms = words(query);
    let mut docs: Vec<(&str, &super::catalog::Route, Vec<String>, String)> = Vec::new();
    for entry in table.catalog().entries(ListKind::Tools) {
        let Some(route) = super::visible(table, principal, ListKind::Tools, entry) else { continue };
        let item: Value = serde_json::from_str(&route.json).unwrap_or_default();
        let description = item.get("description").and_then(Value::as_str).unwrap_or_default().to_lowercase();
        docs.push((&entry.name, route, words(&route.original), description));
    }
    let n = docs.len() as f64;
    let mut df: HashMap<&str, f64> = HashMap::new();
    for term in &terms {
        let count = docs
            .iter()
            .filter(|(_, r, w, d)| {
                w.contains(term)
                    || r.original.to_lowercase().contains(term.as_str())
                    || d.contains(term.as_str())
            })
            .count();
        df.insert(term, count as f64);
    }
    let mut scored: Vec<(f64, Value)> = docs
        .iter()
        .filter_map(|(name, route, name_words, description)| {
            let lower = route.original.to_lowercase();
            let score: f64 = terms
                .iter()
                .map(|t| {
                    let weight = if name_words.contains(t) {
                        3.0
                    } else if lower.contains(t.as_str()) {
                        2.0
                    } else if description.contains(t.as_str()) {
                        1.0
                    } else {
                        0.0
                    };
                    weight * (1.0 + n / (1.0 + df[t.as_str()])).ln()
                })
                .sum();
            (score > 0.0).then(|| {
                (score, json!({"name": name, "server": &*route.server.name, "tool": &*route.original,
                    "description": serde_json::from_str::<Value>(&route.json).ok().and_then(|v| v.get("description").cloned()),
                    "score": (score * 1000.0).round() / 1000.0}))
            })
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1["name"].as_str().cmp(&b.1["name"].as_str())));
    scored.into_iter().take(limit).map(|(_, v)| v).collect()
}

/// Carries `register_server` to the control plane (`RegisterServer` on the proxy's gRPC channel).
pub struct Registrar {
    control_plane: Arc<crate::rpc::ControlPlane>,
}

impl Registrar {
    pub fn new(control_plane: Arc<crate::rpc::ControlPlane>) -> Self {
        Self { control_plane }
    }

    /// Registers `spec` for the caller whose bearer credential is `token`: the REST API's status and
    /// answer, or why the control plane could not be asked.
    pub async fn register(&self, token: &str, spec: &Value) -> Result<(u16, Value), String> {
        let request = self.control_plane.request(mcpgw_proto::v1::RegisterServerRequest {
            subject_token: token.to_owned(),
            server_json: spec.to_string(),
        });
        let answer = self
            .control_plane
            .client()
            .await
            .register_server(request)
            .await
            .map_err(|status| format!("the control plane cannot register servers now: {}", status.message()))?
            .into_inner();
        let body = serde_json::from_str(&answer.body_json).unwrap_or(Value::String(answer.body_json));
        Ok((u16::try_from(answer.status).unwrap_or(500), body))
    }
}
