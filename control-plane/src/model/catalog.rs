//! A server's catalog: what its last successful discovery listed, as the routing table carries it
//! (`Catalog`, one per discovered server), and the digest that tells a changed listing from an unchanged one.

use std::collections::HashMap;

use mcpgw_proto::v1::{self, resource::Kind};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Most bytes of serialized items (tools, prompts, resources and resource templates together) one
/// `Catalog` carries; a larger listing is published cut to fit (whole items, in order).
pub const MAX_CATALOG_BYTES: usize = 4 * 1024 * 1024;

/// Tags the digest's input, so a future canonical form cannot collide with this one.
const DIGEST_DOMAIN: &[u8] = b"mcpgw-catalog-v1\n";

/// The catalogs the hub published last, by server, each with the stored digest it was read at.
pub type CatalogCache = HashMap<Uuid, (Vec<u8>, v1::Catalog)>;

/// What discovery listed, borrowed from wherever it is (a fresh listing or the stored rows).
#[derive(Debug, Clone, Copy)]
pub struct CatalogContent<'a> {
    pub protocol_version: &'a str,
    pub capabilities: Option<&'a Value>,
    pub server_info: Option<&'a Value>,
    pub tools: &'a [Value],
    pub prompts: &'a [Value],
    pub resources: &'a [Value],
    pub resource_templates: &'a [Value],
}

impl CatalogContent<'_> {
    /// SHA-256 of the canonical form: one JSON array `[protocol_version, capabilities, server_info, tools,
    /// prompts, resources, resource_templates]` (a missing object is `null`) with every object's keys in
    /// sorted order and no whitespace, after a domain tag. Equal content gives equal digests whatever order
    /// the server wrote the keys in.
    pub fn digest(&self) -> Vec<u8> {
        let mut out = String::new();
        out.push('[');
        write_canonical(&mut out, &Value::String(self.protocol_version.to_owned()));
        for object in [self.capabilities, self.server_info] {
            out.push(',');
            write_canonical(&mut out, object.unwrap_or(&Value::Null));
        }
        for list in [self.tools, self.prompts, self.resources, self.resource_templates] {
            out.push_str(",[");
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(&mut out, item);
            }
            out.push(']');
        }
        out.push(']');
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        hasher.update(out.as_bytes());
        hasher.finalize().to_vec()
    }
}

/// Appends `value` as compact JSON with every object's keys sorted (scalars as serde_json writes them).
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, &map[key]);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A stored successful discovery, read in full for the routing table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredCatalog {
    /// `server_discovery.catalog_digest`; `None` for a discovery stored before digests were kept.
    pub digest: Option<Vec<u8>>,
    pub protocol_version: Option<String>,
    pub capabilities: Option<Value>,
    pub server_info: Option<Value>,
    /// Each list in `position` order, the items as the server listed them.
    pub tools: Vec<Value>,
    pub prompts: Vec<Value>,
    pub resources: Vec<Value>,
    pub resource_templates: Vec<Value>,
}

impl StoredCatalog {
    /// The content the digest covers.
    pub fn content(&self) -> CatalogContent<'_> {
        CatalogContent {
            protocol_version: self.protocol_version.as_deref().unwrap_or_default(),
            capabilities: self.capabilities.as_ref(),
            server_info: self.server_info.as_ref(),
            tools: &self.tools,
            prompts: &self.prompts,
            resources: &self.resources,
            resource_templates: &self.resource_templates,
        }
    }

    /// The `Catalog` resource of server `server_id` (named `server` in the log): every item as compact JSON,
    /// cut to `MAX_CATALOG_BYTES` (logged), with the stored digest (computed here for a discovery stored
    /// before digests were kept).
    pub fn to_proto(&self, server_id: Uuid, server: &str) -> v1::Catalog {
        let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
        let serialize = |list: &[Value]| list.iter().map(Value::to_string).collect::<Vec<_>>();
        let mut lists = [
            serialize(&self.tools),
            serialize(&self.prompts),
            serialize(&self.resources),
            serialize(&self.resource_templates),
        ];
        let total: usize = lists.iter().flatten().map(String::len).sum();
        if total > MAX_CATALOG_BYTES {
            let listed: usize = lists.iter().map(Vec::len).sum();
            let kept = truncate(&mut lists, MAX_CATALOG_BYTES);
            tracing::warn!(%server_id, server, bytes = total, limit = MAX_CATALOG_BYTES, listed, kept,
                "A server's catalog is larger than a routing table carries; it is published cut to the first items that fit.");
        }
        let [tools, prompts, resources, resource_templates] = lists;
        v1::Catalog {
            server_id: server_id.to_string(),
            digest: self.digest.clone().unwrap_or_else(|| self.content().digest()),
            protocol_version: self.protocol_version.clone().unwrap_or_default(),
            capabilities_json: json(&self.capabilities),
            server_info_json: json(&self.server_info),
            tools,
            prompts,
            resources,
            resource_templates,
        }
    }
}

/// Keeps the longest prefix of the items (tools, then prompts, resources and resource templates, each in
/// order) whose lengths add up to at most `limit`, dropping the first item that does not fit and every
/// item after it. Returns how many items are kept.
fn truncate(lists: &mut [Vec<String>; 4], limit: usize) -> usize {
    let mut used = 0usize;
    let mut kept = 0usize;
    let mut full = false;
    for list in lists.iter_mut() {
        if full {
            list.clear();
            continue;
        }
        let fits = list
            .iter()
            .take_while(|item| {
                let fit = used + item.len() <= limit;
                if fit {
                    used += item.len();
                }
                fit
            })
            .count();
        if fits < list.len() {
            full = true;
            list.truncate(fits);
        }
        kept += fits;
    }
    kept
}

/// The `Catalog` resource of a cached catalog.
pub fn catalog_resource(catalog: &v1::Catalog) -> v1::Resource {
    v1::Resource { kind: Some(Kind::Catalog(catalog.clone())) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn content<'a>(tools: &'a [Value], caps: Option<&'a Value>) -> CatalogContent<'a> {
        CatalogContent {
            protocol_version: "2025-11-25",
            capabilities: caps,
            server_info: None,
            tools,
            prompts: &[],
            resources: &[],
            resource_templates: &[],
        }
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_keeps_item_order() {
        let mut out = String::new();
        write_canonical(&mut out, &json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true, "é": 1.5}));
        assert_eq!(out, r#"{"a":true,"b":[1,{"a":"x\"y","z":null}],"é":1.5}"#);

        let one = [json!({"name": "a", "inputSchema": {"type": "object"}}), json!({"name": "b"})];
        let reordered: Vec<Value> = vec![
            serde_json::from_str(r#"{"inputSchema": {"type": "object"}, "name": "a"}"#).unwrap(),
            json!({"name": "b"}),
        ];
        assert_eq!(
            content(&one, None).digest(),
            content(&reordered, None).digest(),
            "key order is not content"
        );
        assert_eq!(content(&one, None).digest().len(), 32);
        let swapped = [one[1].clone(), one[0].clone()];
        assert_ne!(content(&one, None).digest(), content(&swapped, None).digest(), "list order is");
        let caps = json!({});
        assert_ne!(content(&one, None).digest(), content(&one, Some(&caps)).digest(), "null is not {{}}");
        // A tool moved to the prompts is another catalog.
        let moved = CatalogContent { prompts: &one[1..], ..content(&one[..1], None) };
        assert_ne!(content(&one, None).digest(), moved.digest());
        let other = CatalogContent { protocol_version: "2026-07-28", ..content(&one, None) };
        assert_ne!(content(&one, None).digest(), other.digest());
    }

    #[test]
    fn a_stored_catalog_becomes_json_strings_with_its_digest() {
        let id = Uuid::new_v4();
        let stored = StoredCatalog {
            digest: Some(vec![7; 32]),
            protocol_version: Some("2025-11-25".into()),
            capabilities: Some(json!({"tools": {"listChanged": true}})),
            server_info: None,
            tools: vec![json!({"name": "t", "inputSchema": {"type": "object"}})],
            prompts: vec![json!({"name": "p"})],
            resources: vec![],
            resource_templates: vec![json!({"uriTemplate": "x://{id}", "name": "x"})],
        };
        let catalog = stored.to_proto(id, "s");
        assert_eq!(catalog.server_id, id.to_string());
        assert_eq!(catalog.digest, vec![7; 32]);
        assert_eq!(catalog.capabilities_json, r#"{"tools":{"listChanged":true}}"#);
        assert_eq!(catalog.server_info_json, "");
        assert_eq!(catalog.tools, [r#"{"inputSchema":{"type":"object"},"name":"t"}"#]);
        assert_eq!(catalog.prompts, [r#"{"name":"p"}"#]);
        assert_eq!(catalog.resource_templates, [r#"{"name":"x","uriTemplate":"x://{id}"}"#]);
        let legacy = StoredCatalog { digest: None, ..stored.clone() };
        assert_eq!(legacy.to_proto(id, "s").digest, stored.content().digest(), "computed when not stored");
    }

    #[test]
    fn a_catalog_over_the_limit_keeps_the_first_whole_items_that_fit() {
        let item = |n: usize| "x".repeat(n);
        let mut lists = [vec![item(4), item(4)], vec![item(3), item(1)], vec![item(1)], vec![]];
        assert_eq!(truncate(&mut lists, 11), 3, "4 + 4 + 3; the 1-byte prompt after it is dropped too");
        assert_eq!(lists.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 0, 0]);
        let mut lists = [vec![item(20)], vec![item(1)], vec![], vec![]];
        assert_eq!(truncate(&mut lists, 10), 0, "a first item larger than the limit leaves nothing");
        let mut lists = [vec![item(5)], vec![item(5)], vec![], vec![]];
        assert_eq!(truncate(&mut lists, 10), 2, "exactly the limit fits");

        let big = json!({"name": "big", "description": "d".repeat(MAX_CATALOG_BYTES / 2)});
        let stored = StoredCatalog {
            tools: vec![big.clone(), big.clone(), json!({"name": "small"})],
            prompts: vec![json!({"name": "p"})],
            ..Default::default()
        };
        let catalog = stored.to_proto(Uuid::new_v4(), "huge");
        assert_eq!((catalog.tools.len(), catalog.prompts.len()), (1, 0));
        assert!(catalog.tools.iter().map(String::len).sum::<usize>() <= MAX_CATALOG_BYTES);
    }
}
