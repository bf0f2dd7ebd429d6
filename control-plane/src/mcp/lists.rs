//! Listing a server's tools, resources, resource templates and prompts, following every `nextCursor`.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{Connection, McpError};

/// Most pages followed for one list (a server that never stops paginating is cut off with an error).
pub const MAX_PAGES: usize = 1000;
/// Most items one server may offer across its lists (tools, resources, templates, prompts together).
pub const MAX_ITEMS: usize = 10_000;
/// Most bytes (as JSON) of everything one server offers: what discovery keeps in memory, stores and sends
/// to every proxy. Each page is bounded by the client's body limit on its own; this bounds their sum.
pub const MAX_CATALOG_BYTES: usize = 8 * 1024 * 1024;

/// What is left of one server's `MAX_ITEMS` / `MAX_CATALOG_BYTES` during a discovery.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    items: usize,
    bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self { items: MAX_ITEMS, bytes: MAX_CATALOG_BYTES }
    }
}

impl Budget {
    /// Counts `page`'s items against the budget; over it, the discovery fails instead of growing.
    fn spend(&mut self, method: &str, page: &[Value]) -> Result<(), McpError> {
        self.items = self.items.checked_sub(page.len()).ok_or_else(|| {
            McpError::Protocol(format!("{method}: the server offers more than {MAX_ITEMS} items"))
        })?;
        for item in page {
            let mut size = ByteCount(0);
            // Writing to a counter cannot fail.
            let _ = serde_json::to_writer(&mut size, item);
            self.bytes = self.bytes.checked_sub(size.0).ok_or_else(|| {
                McpError::Protocol(format!(
                    "{method}: what the server offers is larger than {} MiB",
                    MAX_CATALOG_BYTES >> 20
                ))
            })?;
        }
        Ok(())
    }
}

/// An `io::Write` that only counts.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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
    budget: &mut Budget,
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
        budget.spend(method, list)?;
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
    budget: &mut Budget,
) -> Result<(Vec<Value>, usize), McpError> {
    match list_all(conn, method, key, budget).await {
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
    let budget = &mut Budget::default();
    if has("tools") {
        let (items, pages) = optional_list(conn, "tools/list", "tools", budget).await?;
        (caps.tools, caps.pages) = (items, caps.pages + pages);
    }
    if has("resources") {
        let (items, pages) = optional_list(conn, "resources/list", "resources", budget).await?;
        (caps.resources, caps.pages) = (items, caps.pages + pages);
        let (items, pages) =
            optional_list(conn, "resources/templates/list", "resourceTemplates", budget).await?;
        (caps.resource_templates, caps.pages) = (items, caps.pages + pages);
    }
    if has("prompts") {
        let (items, pages) = optional_list(conn, "prompts/list", "prompts", budget).await?;
        (caps.prompts, caps.pages) = (items, caps.pages + pages);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_items_and_bytes_across_pages() {
        let mut budget = Budget::default();
        let small = vec![json!({"name": "t"}); 2_000];
        for _ in 0..5 {
            budget.spend("tools/list", &small).expect("10,000 items fit");
        }
        let over = budget.spend("prompts/list", &small[..1]).unwrap_err().to_string();
        assert!(over.contains("more than 10000 items"), "{over}");

        let mut budget = Budget::default();
        let big = vec![json!({"name": "t", "description": "x".repeat(1 << 20)}); 4];
        budget.spend("tools/list", &big).expect("4 MiB fit");
        budget.spend("resources/list", &big[..3]).expect("7 MiB fit");
        let over = budget.spend("prompts/list", &big[..1]).unwrap_err().to_string();
        assert!(over.contains("larger than 8 MiB"), "{over}");
    }
}
