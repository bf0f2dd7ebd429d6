//! The merged catalog `/mcp` answers lists from: every server's discovered tools, prompts, resources and
//! resource templates under the names `/mcp` shows, built once per routing table and sorted by exposed
//! name (so a cursor is a keyset position). Filtering by the caller's permissions happens per request.
//! Naming rules: `proxy/SESSIONS.md` "Aggregation".

use std::collections::HashMap;
use std::sync::Arc;

use mcpgw_proto::v1::{self, NamePrefix};
use serde_json::Value;

use crate::policy::ItemKind;
use crate::routing::Server;

/// One of the four lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub const ALL: [Self; 4] = [Self::Tools, Self::Prompts, Self::Resources, Self::Templates];

    /// The list a `*/list` method asks for.
    pub fn of_list(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::Templates,
            _ => return None,
        })
    }

    /// The result field holding the items.
    pub fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resourceTemplates",
        }
    }

    /// The item field naming each item.
    pub fn key(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::Templates => "uriTemplate",
        }
    }

    /// What the policy decides items of this list as (templates like the resources they produce).
    pub fn item_kind(self) -> ItemKind {
        match self {
            Self::Tools => ItemKind::Tool,
            Self::Prompts => ItemKind::Prompt,
            Self::Resources | Self::Templates => ItemKind::Resource,
        }
    }

    /// The notification telling a client this list changed.
    pub fn list_changed(self) -> &'static str {
        match self {
            Self::Tools => "notifications/tools/list_changed",
            Self::Prompts => "notifications/prompts/list_changed",
            Self::Resources | Self::Templates => "notifications/resources/list_changed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One place a name is served: the server and its own name for the item.
#[derive(Debug)]
pub struct Route {
    pub server: Arc<Server>,
    pub original: Arc<str>,
    /// The item as the server listed it, with its exposed name, serialized.
    pub json: Box<str>,
    /// `original` as a 2026-07-28 `Mcp-Name` value (made once, not per call).
    pub name_header: http::HeaderValue,
}

/// A name `/mcp` shows, and the servers serving it in preference order (more than one only for names that
/// several `never` servers offer).
#[derive(Debug)]
pub struct Entry {
    pub name: Arc<str>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Default)]
struct Index {
    /// Sorted by name.
    entries: Vec<Entry>,
    by_name: HashMap<Arc<str>, usize>,
}

/// What discovery learnt of one server beyond its lists.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub protocol_version: String,
    /// The server speaks 2026-07-28 (requests go to it stateless).
    pub modern: bool,
    /// Its declared capabilities (a JSON object; `Null` when unknown).
    pub capabilities: Value,
}

/// The merged catalog of one routing table.
#[derive(Debug, Default)]
pub struct Catalog {
    lists: [Index; 4],
    facts: HashMap<String, ServerFacts>,
    /// The original names each server offers, per list (capability routing's `required_*` hints).
    offered: HashMap<String, [std::collections::HashSet<Arc<str>>; 4]>,
    /// Each server's items parsed, by server id with the catalog digest they were parsed from: reused by
    /// the next table while the digest holds (tables change with every health report).
    parsed: HashMap<String, (Vec<u8>, Arc<Parsed>)>,
}

/// One server's items, parsed, per list.
#[derive(Debug, Default)]
struct Parsed([Vec<Value>; 4]);

impl Parsed {
    fn of(c: &v1::Catalog) -> Self {
        let parse = |kind: ListKind, raw: &[String]| -> Vec<Value> {
            raw.iter()
                .filter_map(|item| serde_json::from_str::<Value>(item).ok())
                .filter(|v| v.get(kind.key()).and_then(Value::as_str).is_some())
                .collect()
        };
        Self([
            parse(ListKind::Tools, &c.tools),
            parse(ListKind::Prompts, &c.prompts),
            parse(ListKind::Resources, &c.resources),
            parse(ListKind::Templates, &c.resource_templates),
        ])
    }
}

/// The first revision that is stateless.
pub const MODERN: &str = "2026-07-28";

/// `scheme://<server>/rest` for a URI (or URI template) two servers share.
fn prefixed_uri(uri: &str, server: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{server}/{rest}"),
        None => format!("{server}/{uri}"),
    }
}

impl Catalog {
    /// Builds the catalog of `servers` from their `Catalog` resources (servers without one offer nothing).
    pub fn build(
        servers: &[Arc<Server>],
        catalogs: &HashMap<&str, &v1::Catalog>,
        previous: &Catalog,
    ) -> Self {
        let mut ordered: Vec<&Arc<Server>> =
            servers.iter().filter(|s| catalogs.contains_key(&*s.id)).collect();
        ordered.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.name.cmp(&b.name)));
        let mut catalog = Catalog::default();
        for server in &ordered {
            let c = catalogs[&*server.id];
            let parsed = match previous.parsed.get(&server.id) {
                Some((digest, parsed)) if !c.digest.is_empty() && *digest == c.digest => parsed.clone(),
                _ => Arc::new(Parsed::of(c)),
            };
            catalog.parsed.insert(server.id.clone(), (c.digest.clone(), parsed));
            catalog.facts.insert(
                server.id.clone(),
                ServerFacts {
                    protocol_version: c.protocol_version.clone(),
                    modern: c.protocol_version.as_str() >= MODERN,
                    capabilities: serde_json::from_str(&c.capabilities_json).unwrap_or(Value::Null),
                },
            );
        }
        for kind in ListKind::ALL {
            let items: Vec<(&Arc<Server>, Value)> = ordered
                .iter()
                .flat_map(|server| {
                    let parsed = &catalog.parsed[&server.id].1;
                    parsed.0[kind.index()].iter().map(move |item| (*server, item.clone()))
                })
                .collect();
            for (server, item) in &items {
                if let Some(name) = item.get(kind.key()).and_then(Value::as_str) {
                    catalog.offered.entry(server.id.clone()).or_default()[kind.index()]
                        .insert(Arc::from(name));
                }
            }
            catalog.lists[kind.index()] = Index::build(kind, items);
        }
        catalog
    }

    /// Every entry of a list, sorted by exposed name.
    pub fn entries(&self, kind: ListKind) -> &[Entry] {
        &self.lists[kind.index()].entries
    }

    /// The entry exposed as `name`.
    pub fn get(&self, kind: ListKind, name: &str) -> Option<&Entry> {
        let list = &self.lists[kind.index()];
        list.by_name.get(name).map(|i| &list.entries[*i])
    }

    /// The position of the first entry after `name` (a cursor's continuation).
    pub fn after(&self, kind: ListKind, name: &str) -> usize {
        self.entries(kind).partition_point(|e| &*e.name <= name)
    }

    /// The resource template whose literal prefix (up to its first `{`) is the longest one `uri` starts
    /// with, and `uri` with that prefix turned back into the template's original one.
    pub fn template_for(&self, uri: &str) -> Option<(&Entry, Vec<String>)> {
        let mut best: Option<(&Entry, usize)> = None;
        for entry in self.entries(ListKind::Templates) {
            let literal = entry.name.split('{').next().unwrap_or_default();
            if !literal.is_empty()
                && uri.starts_with(literal)
                && best.is_none_or(|(_, len)| literal.len() > len)
            {
                best = Some((entry, literal.len()));
            }
        }
        let (entry, len) = best?;
        let originals = entry
            .routes
            .iter()
            .map(|r| format!("{}{}", r.original.split('{').next().unwrap_or_default(), &uri[len..]))
            .collect();
        Some((entry, originals))
    }

    /// Whether the server with `server_id` offers `original` (its own name) in `kind`.
    pub fn offers(&self, server_id: &str, kind: ListKind, original: &str) -> bool {
        self.offered.get(server_id).is_some_and(|lists| lists[kind.index()].contains(original))
    }

    /// What discovery learnt of the server with `id`.
    pub fn facts(&self, server_id: &str) -> Option<&ServerFacts> {
        self.facts.get(server_id)
    }
}

impl Index {
    fn build(kind: ListKind, items: Vec<(&Arc<Server>, Value)>) -> Self {
        let uri_like = matches!(kind, ListKind::Resources | ListKind::Templates);
        // Which servers of each tenant offer each original name.
        let mut offered: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
        for (server, item) in &items {
            let name = item.get(kind.key()).and_then(Value::as_str).unwrap_or_default();
            let servers = offered.entry((&server.tenant, name)).or_default();
            if !servers.contains(&&*server.id) {
                servers.push(&server.id);
            }
        }
        let mut by_name: HashMap<Arc<str>, Vec<Route>> = HashMap::new();
        let mut order: Vec<Arc<str>> = Vec::new();
        for (server, item) in &items {
            let original = item.get(kind.key()).and_then(Value::as_str).unwrap_or_default();
            let shared = offered.get(&(&*server.tenant, original)).is_some_and(|s| s.len() > 1);
            let exposed = match (server.name_prefix, uri_like) {
                (NamePrefix::Never, _) => original.to_owned(),
                (_, true) if shared => prefixed_uri(original, &server.name),
                (_, true) => original.to_owned(),
                (NamePrefix::OnConflict, false) if !shared => original.to_owned(),
                _ => format!("{}_{original}", server.name),
            };
            let mut shown = item.clone();
            if let Some(obj) = shown.as_object_mut() {
                obj.insert(kind.key().to_owned(), Value::String(exposed.clone()));
            }
            let route = Route {
                server: (*server).clone(),
                original: Arc::from(original),
                json: shown.to_string().into_boxed_str(),
                name_header: crate::headers::header_value(original),
            };
            let exposed: Arc<str> = Arc::from(exposed);
            match by_name.get_mut(&exposed) {
                None => {
                    order.push(exposed.clone());
                    by_name.insert(exposed, vec![route]);
                }
                // One server listing a name twice: its first item is the one served.
                Some(routes) if routes.iter().any(|r| r.server.id == server.id) => {}
                // Several `never` servers offering the name, or servers of other tenants (a caller sees the
                // routes of its own tenant only): one entry with several routes.
                Some(routes)
                    if (server.name_prefix == NamePrefix::Never
                        && routes.iter().all(|r| r.server.name_prefix == NamePrefix::Never))
                        || routes.iter().all(|r| r.server.tenant != server.tenant) =>
                {
                    routes.push(route)
                }
                Some(routes) => {
                    tracing::warn!(name = %exposed, server = %server.name, shown = %routes[0].server.name,
                        "Two servers expose the same name on /mcp; only the preferred one's is shown.");
                }
            }
        }
        order.sort();
        let mut index = Index::default();
        for name in order {
            let routes = by_name.remove(&name).unwrap_or_default();
            index.by_name.insert(name.clone(), index.entries.len());
            index.entries.push(Entry { name, routes });
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::table::{InstanceStates, PeerSettings, RoutingTable};
    use mcpgw_proto::ResourceSet;
    use mcpgw_proto::v1::{Resource, resource::Kind};
    use serde_json::json;

    fn server(name: &str, tenant: &str, prefix: NamePrefix, priority: i32) -> Resource {
        Resource {
            kind: Some(Kind::Server(v1::Server {
                id: format!("id-{name}"),
                name: name.into(),
                tenant_id: tenant.into(),
                transport: v1::Transport::StreamableHttp as i32,
                name_prefix: prefix as i32,
                priority,
                ..Default::default()
            })),
        }
    }

    fn catalog(name: &str, tools: &[&str], resources: &[&str], templates: &[&str]) -> Resource {
        let items = |key: &str, names: &[&str]| -> Vec<String> {
            names
                .iter()
                .map(|n| json!({key: n, "description": format!("{n} of {name}")}).to_string())
                .collect()
        };
        Resource {
            kind: Some(Kind::Catalog(v1::Catalog {
                server_id: format!("id-{name}"),
                protocol_version: "2025-11-25".into(),
                tools: items("name", tools),
                resources: items("uri", resources),
                resource_templates: items("uriTemplate", templates),
                ..Default::default()
            })),
        }
    }

    async fn build(resources: Vec<Resource>) -> RoutingTable {
        let set = ResourceSet::new(1, resources).unwrap();
        let settings = PeerSettings {
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            dns_refresh: Duration::ZERO,
            ssrf: Default::default(),
        };
        RoutingTable::build(&set, &RoutingTable::default(), &InstanceStates::default(), &settings)
            .await
            .unwrap()
    }

    use std::time::Duration;

    fn names(table: &RoutingTable, kind: ListKind) -> Vec<(String, Vec<String>)> {
        table
            .catalog()
            .entries(kind)
            .iter()
            .map(|e| {
                (
                    e.name.to_string(),
                    e.routes.iter().map(|r| format!("{}:{}", r.server.name, r.original)).collect(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn names_follow_each_servers_prefix_setting() {
        let table = build(vec![
            server("a", "t1", NamePrefix::Always, 0),
            server("b", "t1", NamePrefix::OnConflict, 0),
            server("c", "t1", NamePrefix::OnConflict, 0),
            server("d", "t1", NamePrefix::Never, 2),
            server("e", "t1", NamePrefix::Never, 1),
            server("f", "t2", NamePrefix::OnConflict, 0),
            catalog("a", &["echo"], &[], &[]),
            catalog("b", &["only-b", "shared"], &[], &[]),
            catalog("c", &["shared"], &[], &[]),
            catalog("d", &["search", "shared"], &[], &[]),
            catalog("e", &["search"], &[], &[]),
            catalog("f", &["only-b"], &[], &[]),
        ])
        .await;
        let expected: Vec<(String, Vec<String>)> = [
            ("a_echo", vec!["a:echo"]),
            ("b_shared", vec!["b:shared"]),
            ("c_shared", vec!["c:shared"]),
            // b's name is bare in its tenant; f's is bare in another: one entry, a route per tenant.
            ("only-b", vec!["b:only-b", "f:only-b"]),
            // e before d by priority.
            ("search", vec!["e:search", "d:search"]),
            ("shared", vec!["d:shared"]),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_owned(), r.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(names(&table, ListKind::Tools), expected);
        let search = table.catalog().get(ListKind::Tools, "search").unwrap();
        let shown: serde_json::Value = serde_json::from_str(&search.routes[0].json).unwrap();
        assert_eq!(shown, json!({"name": "search", "description": "search of e"}));
        assert!(table.catalog().offers("id-d", ListKind::Tools, "shared"));
        assert!(!table.catalog().offers("id-e", ListKind::Tools, "shared"));
    }

    #[tokio::test]
    async fn uris_keep_theirs_unless_two_servers_share_one() {
        let table = build(vec![
            server("a", "t", NamePrefix::Always, 0),
            server("b", "t", NamePrefix::Always, 0),
            catalog("a", &[], &["file:///a.txt", "mem://shared"], &["docs://{id}"]),
            catalog("b", &[], &["mem://shared"], &["docs://{id}", "other://items/{n}"]),
        ])
        .await;
        let uris: Vec<String> = names(&table, ListKind::Resources).into_iter().map(|(n, _)| n).collect();
        assert_eq!(uris, ["file:///a.txt", "mem://a/shared", "mem://b/shared"]);
        let (entry, originals) = table.catalog().template_for("docs://b/42").unwrap();
        assert_eq!(&*entry.name, "docs://b/{id}");
        assert_eq!(originals, ["docs://42"]);
        let (entry, originals) = table.catalog().template_for("other://items/7").unwrap();
        assert_eq!((&*entry.name, originals[0].as_str()), ("other://items/{n}", "other://items/7"));
        assert!(table.catalog().template_for("nothing://x").is_none());
        assert_eq!(table.catalog().after(ListKind::Resources, "mem://a/shared"), 2);
    }
}
