//! Listing a server's tools, resources, resource templates and prompts, following every `nextCursor`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{Connection, McpError};

/// Most pages followed for one list (a server that never stops paginating is cut off with an error).
pub const MAX_PAGES: usize = 1000;

/// Everything a server offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    pub tools: Vec<Value>,
    pub resources: Vec<Value>,
    pub resource_templates: Vec<Value>,
    pub prompts: Vec<Value>,
    /// Pages read in total (for the log).
    pub pages: usize,
}

/// Every item of `method`'s `key` array across all pages.
pub async fn list_all(
    conn: &mut Connection,
    method: &str,
    key: &str,
) -> Result<(Vec<Value>, usize), McpError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = HashSet::new();
    for page in 1..=MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let result = conn.request(method, params).await?;
        let Some(list) = result.get(key).and_then(Value::as_array) else {
            return Err(McpError::Protocol(format!("{method} returned no `{key}` array")));
        };
        items.extend(list.iter().cloned());
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => {
                if !seen.insert(next.to_owned()) {
                    return Err(McpError::Protocol(format!("{method} repeated the cursor {next:?}")));
                }
                cursor = Some(next.to_owned());
            }
            _ => return Ok((items, page)),
        }
    }
    Err(McpError::Protocol(format!("{method} has more than {MAX_PAGES} pages")))
}

/// A list the server may not implement: "method not found" reads as empty.
async fn optional_list(
    conn: &mut Connection,
    method: &str,
    key: &str,
) -> Result<(Vec<Value>, usize), McpError> {
    match list_all(conn, method, key).await {
        Err(McpError::JsonRpc { code: -32601, .. }) | Err(McpError::Status { code: Some(-32601), .. }) => {
            Ok((Vec::new(), 1))
        }
        other => other,
    }
}

/// Lists what the server's capabilities advertise (everything, when it did not say).
pub async fn capabilities(conn: &mut Connection) -> Result<Capabilities, McpError> {
    let advertised = conn.hello().capabilities.clone();
    let has = |name: &str| advertised.as_ref().is_none_or(|c| c.get(name).is_some_and(|v| !v.is_null()));
    let mut caps = Capabilities::default();
    if has("tools") {
        let (items, pages) = optional_list(conn, "tools/list", "tools").await?;
        (caps.tools, caps.pages) = (items, caps.pages + pages);
    }
    if has("resources") {
        let (items, pages) = optional_list(conn, "resources/list", "resources").await?;
        (caps.resources, caps.pages) = (items, caps.pages + pages);
        let (items, pages) = optional_list(conn, "resources/templates/list", "resourceTemplates").await?;
        (caps.resource_templates, caps.pages) = (items, caps.pages + pages);
    }
    if has("prompts") {
        let (items, pages) = optional_list(conn, "prompts/list", "prompts").await?;
        (caps.prompts, caps.pages) = (items, caps.pages + pages);
    }
    Ok(caps)
}
