//! An rmcp 3.9.0 MCP server for the mcpgw end-to-end tests: Streamable HTTP on 127.0.0.1:<port>/mcp,
//! dual-era, with paginated tools (3 per page), resources, resource templates and prompts, so discovery
//! through the gateway's control plane must follow `nextCursor`. Tools: `echo`, `whoami` (--name) and a
//! few numbered ones.
//!
//! Usage: mcpgw-rmcp-fixture --port P [--name N]

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Items per page of every list.
const PAGE: usize = 3;

#[derive(Clone)]
struct Fixture {
    name: String,
}

fn parse<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("fixture data matches the rmcp model")
}

fn tools() -> Vec<Value> {
    let schema = json!({"type": "object", "properties": {"message": {"type": "string"}}});
    let mut tools = vec![
        json!({"name": "echo", "description": "Echo the message back.", "inputSchema": schema}),
        json!({"name": "whoami", "description": "Name of this server instance.", "inputSchema": {"type": "object"}}),
    ];
    tools.extend((1..=5).map(|i| json!({"name": format!("numbered-{i}"), "description": format!("Tool number {i}."),
        "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}})));
    tools
}

fn resources() -> Vec<Value> {
    (1..=4).map(|i| json!({"uri": format!("fixture://docs/{i}"), "name": format!("doc-{i}"), "mimeType": "text/plain"})).collect()
}

fn templates() -> Vec<Value> {
    vec![json!({"uriTemplate": "fixture://docs/{id}", "name": "doc", "mimeType": "text/plain"})]
}

fn prompts() -> Vec<Value> {
    (1..=4)
        .map(|i| json!({"name": format!("prompt-{i}"), "description": format!("Prompt {i}."),
            "arguments": [{"name": "topic", "required": true}]}))
        .collect()
}

/// One page of `items` at the request's cursor (`page-<offset>`), and the next cursor.
fn page<T: DeserializeOwned>(items: Vec<Value>, request: &Option<PaginatedRequestParams>) -> Result<(Vec<T>, Option<String>), McpError> {
    let start = match request.as_ref().and_then(|r| r.cursor.as_deref()) {
        None => 0,
        Some(c) => c
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| McpError::invalid_params(format!("unknown cursor {c:?}"), None))?,
    };
    let end = (start + PAGE).min(items.len());
    let next = (end < items.len()).then(|| format!("page-{end}"));
    Ok((items[start..end].iter().cloned().map(parse).collect(), next))
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        let caps: ServerCapabilities = parse(json!({"tools": {}, "resources": {}, "prompts": {}}));
        ServerConfig::new(caps).with_server_info(parse(json!({"name": self.name, "version": "1.0.0"})))
    }

    async fn list_tools(&self, request: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListToolsResult, McpError> {
        let (items, next) = page(tools(), &request)?;
        let mut result = ListToolsResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resources(&self, request: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListResourcesResult, McpError> {
        let (items, next) = page(resources(), &request)?;
        let mut result = ListResourcesResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let (items, next) = page(templates(), &request)?;
        let mut result = ListResourceTemplatesResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_prompts(&self, request: Option<PaginatedRequestParams>, _: RequestContext<RoleServer>) -> Result<ListPromptsResult, McpError> {
        let (items, next) = page(prompts(), &request)?;
        let mut result = ListPromptsResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(&self, request: CallToolRequestParams, _: RequestContext<RoleServer>) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        let text = match request.name.as_ref() {
            "echo" => args.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
            "whoami" => self.name.clone(),
            other if other.starts_with("numbered-") => other.to_owned(),
            other => return Err(McpError::invalid_params(format!("unknown tool {other:?}"), None)),
        };
        let result: CallToolResult = parse(json!({"content": [{"type": "text", "text": text}]}));
        Ok(result.into())
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, "--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let name = arg(&args, "--name").unwrap_or_else(|| "rmcp-fixture".to_owned());
    let fixture = Fixture { name };
    let service = StreamableHttpService::new(
        move || Ok(fixture.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, router).with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; }).await
}
