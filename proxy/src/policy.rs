//! Authorization: what a principal may see and call, decided in the proxy from the routing table alone (no
//! network call). One path decides every MCP message that names something (`tools/call`, `prompts/get`,
//! `resources/read|subscribe|unsubscribe`) and, per server, whether the server exists for the caller.
//!
//! The model: a principal belongs to one tenant and holds role names. The built-in roles `admin`,
//! `server_owner` and `user` allow every server of the principal's tenant and everything on it; a custom
//! role (a `Role` resource of the tenant) allows exactly its rules; `platform_admin` allows every server of
//! every tenant. A role the table does not know allows nothing (a deleted role never widens access); a
//! principal holding no role at all (a token without a roles claim, a user no mapping rule matched) is a
//! `user`. An API key's own `permissions` narrow what its roles allow (both must allow an item). A server
//! of another tenant, or one no rule names, looks exactly like a missing server; a forbidden tool, prompt
//! or resource like a missing one. The anonymous principal of `--anonymous` may do everything.

use std::collections::HashMap;
use std::sync::Arc;

use mcpgw_proto::v1;

use crate::identity::{DEFAULT_TENANT, Principal, PrincipalKind};

/// Roles that allow every server of the tenant.
pub const TENANT_ROLES: [&str; 3] = ["admin", "server_owner", "user"];
/// The role above tenants.
pub const PLATFORM_ADMIN: &str = "platform_admin";

/// A name pattern: `*` matches any run of characters (none included); everything else literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    parts: Box<[Box<str>]>,
    /// `*` alone.
    any: bool,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Self { parts: pattern.split('*').map(Box::from).collect(), any: pattern == "*" }
    }

    /// The name itself when the pattern has no `*`.
    fn literal(&self) -> Option<&str> {
        match &*self.parts {
            [only] => Some(only),
            _ => None,
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.any {
            return true;
        }
        let (first, rest) = self.parts.split_first().expect("split yields one part at least");
        let Some(mut tail) = text.strip_prefix(&**first) else { return false };
        let Some((last, middle)) = rest.split_last() else { return tail.is_empty() };
        for part in middle {
            match tail.find(&**part) {
                Some(at) => tail = &tail[at + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(&**last)
    }
}

/// What kind of item a message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Tool,
    Prompt,
    Resource,
}

impl ItemKind {
    /// The kind named by `method` (`tools/call` → tool, ...), if it names one; for `completion/complete`,
    /// the kind of its `ref` (a prompt, or a resource template decided like resources).
    pub fn of_message(method: &str, reference: Option<crate::jsonrpc::Reference>) -> Option<Self> {
        match method {
            "tools/call" => Some(Self::Tool),
            "prompts/get" => Some(Self::Prompt),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some(Self::Resource),
            "completion/complete" => match reference? {
                crate::jsonrpc::Reference::Prompt => Some(Self::Prompt),
                crate::jsonrpc::Reference::Resource => Some(Self::Resource),
            },
            _ => None,
        }
    }
}

/// One compiled permission rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    server: Glob,
    tools: Box<[Glob]>,
    prompts: Box<[Glob]>,
    resources: Box<[Glob]>,
}

impl Rule {
    pub fn compile(r: &v1::PermissionRule) -> Self {
        let globs = |list: &[String]| list.iter().map(|p| Glob::new(p)).collect();
        Self {
            server: Glob::new(&r.server),
            tools: globs(&r.tools),
            prompts: globs(&r.prompts),
            resources: globs(&r.resources),
        }
    }

    fn allows(&self, server: &str, item: Option<(ItemKind, &str)>) -> bool {
        if !self.server.matches(server) {
            return false;
        }
        let Some((kind, name)) = item else { return true };
        let list = match kind {
            ItemKind::Tool => &self.tools,
            ItemKind::Prompt => &self.prompts,
            ItemKind::Resource => &self.resources,
        };
        list.iter().any(|g| g.matches(name))
    }
}

/// Rules indexed by server: those naming one server exactly are found by a map lookup, so a decision
/// looks at the rules of its server and the pattern rules only (thousands of rules cost what a few do).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    by_server: HashMap<Box<str>, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl RuleSet {
    fn allows(&self, server: &str, item: Option<(ItemKind, &str)>) -> bool {
        let exact = self.by_server.get(server).map(Vec::as_slice).unwrap_or_default();
        exact.iter().chain(&self.patterns).any(|r| r.allows(server, item))
    }
}

/// Compiles a list of rules.
pub fn compile(rules: &[v1::PermissionRule]) -> Arc<RuleSet> {
    let mut set = RuleSet::default();
    for rule in rules.iter().map(Rule::compile) {
        match rule.server.literal() {
            Some(name) => set.by_server.entry(Box::from(name)).or_default().push(rule),
            None => set.patterns.push(rule),
        }
    }
    Arc::new(set)
}

/// A role's key: its tenant and name.
type RoleKey = (Arc<str>, Arc<str>);

/// The custom roles of a routing table, by tenant and name.
#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<RoleKey, Arc<RuleSet>>,
}

/// What one principal's roles allow.
enum Allowed<'a> {
    /// Every server of every tenant.
    Everything,
    /// Every server of the principal's tenant, and these rules' (custom roles).
    Tenant { whole: bool, rules: Vec<&'a RuleSet> },
}

impl Policy {
    /// Adds a custom role.
    pub fn add_role(&mut self, role: &v1::Role) {
        let tenant = if role.tenant_id.is_empty() { DEFAULT_TENANT } else { role.tenant_id.as_str() };
        self.roles.insert((Arc::from(tenant), Arc::from(role.name.as_str())), compile(&role.rules));
    }

    fn allowed(&self, p: &Principal) -> Allowed<'_> {
        if matches!(p.kind, PrincipalKind::Anonymous) {
            return Allowed::Everything;
        }
        let mut whole = false;
        let mut rules = Vec::new();
        for role in p.roles.iter() {
            if &**role == PLATFORM_ADMIN {
                return Allowed::Everything;
            }
            if TENANT_ROLES.contains(&&**role) {
                whole = true;
            } else if let Some(r) = self.roles.get(&(p.tenant.clone(), role.clone())) {
                rules.push(&**r);
            }
        }
        Allowed::Tenant { whole: whole || p.roles.is_empty(), rules }
    }

    /// Whether `p` may reach server `name` of `tenant`, and (with `item`) use that item on it.
    pub fn allows(&self, p: &Principal, tenant: &str, name: &str, item: Option<(ItemKind, &str)>) -> bool {
        let by_roles = match self.allowed(p) {
            Allowed::Everything => true,
            Allowed::Tenant { .. } if &*p.tenant != tenant => false,
            Allowed::Tenant { whole: true, .. } => true,
            Allowed::Tenant { whole: false, rules } => rules.iter().any(|r| r.allows(name, item)),
        };
        by_roles && p.permissions.as_ref().is_none_or(|narrow| narrow.allows(name, item))
    }

    /// Whether `p` may do everything on the server (no item needs deciding, e.g. to skip list filtering).
    pub fn unrestricted(&self, p: &Principal, tenant: &str) -> bool {
        let whole = match self.allowed(p) {
            Allowed::Everything => true,
            Allowed::Tenant { whole, .. } => whole && &*p.tenant == tenant,
        };
        whole && p.permissions.is_none()
    }
}

/// Largest list response filtered (buffered whole); a larger one is refused rather than shown unfiltered.
pub const MAX_FILTERED_BODY: usize = 16 * 1024 * 1024;

/// A list answer to filter down to what the caller may use: `tools/list`, `prompts/list`,
/// `resources/list`, `resources/templates/list`.
#[derive(Debug, Clone)]
pub struct ListFilter {
    /// The result field holding the items, and the item field naming each.
    field: &'static str,
    key: &'static str,
    kind: ItemKind,
    table: Arc<crate::routing::RoutingTable>,
    principal: Principal,
    tenant: Arc<str>,
    server: Arc<str>,
}

impl ListFilter {
    /// The filter for a `method` request of `principal` to `server`, when the caller's access is restricted
    /// there and the method lists items.
    pub fn of(
        method: &str,
        table: &Arc<crate::routing::RoutingTable>,
        principal: &Principal,
        server: &crate::routing::Server,
    ) -> Option<Self> {
        let (field, key, kind) = match method {
            "tools/list" => ("tools", "name", ItemKind::Tool),
            "prompts/list" => ("prompts", "name", ItemKind::Prompt),
            "resources/list" => ("resources", "uri", ItemKind::Resource),
            "resources/templates/list" => ("resourceTemplates", "uriTemplate", ItemKind::Resource),
            _ => return None,
        };
        if table.access().unrestricted(principal, &server.tenant) {
            return None;
        }
        Some(Self {
            field,
            key,
            kind,
            table: table.clone(),
            principal: principal.clone(),
            tenant: server.tenant.clone(),
            server: server.name.clone(),
        })
    }

    fn allows(&self, name: &str) -> bool {
        self.table.access().allows(&self.principal, &self.tenant, &self.server, Some((self.kind, name)))
    }

    /// Filters a JSON-RPC message (a response's `result.<field>`); `None` when it is not one to change.
    fn filter_message(&self, text: &str) -> Option<String> {
        let mut doc: serde_json::Value = serde_json::from_str(text).ok()?;
        let items = doc.get_mut("result")?.get_mut(self.field)?.as_array_mut()?;
        items.retain(|item| {
            item.get(self.key).and_then(serde_json::Value::as_str).is_some_and(|n| self.allows(n))
        });
        // What this caller sees is not what others see: a shared cache must not serve it (2026-07-28).
        if let Some(scope) = doc.pointer_mut("/result/cacheScope") {
            *scope = serde_json::Value::String("private".into());
        }
        Some(doc.to_string())
    }

    /// The body with every item the caller may not use removed: a JSON body, or each `data` of an SSE body.
    /// Anything that is not a list result passes unchanged.
    pub fn apply(&self, body: &[u8], sse: bool) -> bytes::Bytes {
        let Ok(text) = std::str::from_utf8(body) else { return bytes::Bytes::copy_from_slice(body) };
        if !sse {
            return self
                .filter_message(text)
                .map_or_else(|| bytes::Bytes::copy_from_slice(body), bytes::Bytes::from);
        }
        let normalized = text.replace("\r\n", "\n");
        let mut out = String::with_capacity(normalized.len());
        for event in normalized.split_inclusive("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d)))
                .collect();
            match (!data.is_empty()).then(|| self.filter_message(&data.join("\n"))).flatten() {
                Some(filtered) => {
                    for line in event.lines().filter(|l| !l.is_empty() && !l.starts_with("data:")) {
                        out.push_str(line);
                        out.push('\n');
                    }
                    out.push_str("data: ");
                    out.push_str(&filtered);
                    out.push_str("\n\n");
                }
                None => out.push_str(event),
            }
        }
        bytes::Bytes::from(out)
    }
}

/// Most list requests one legacy session may have awaiting their answer.
const MAX_PENDING_PER_SESSION: usize = 64;
/// Most legacy sessions with list requests awaiting their answer.
const MAX_PENDING_SESSIONS: usize = 100_000;

/// A legacy HTTP+SSE session: its server's id and the upstream's message path.
pub type LegacySession = (String, String);

/// List requests of restricted callers on the legacy HTTP+SSE transport, whose answers arrive on the
/// session's SSE stream rather than on the POST: the POST registers the request's id with its filter, the
/// stream ([`LegacyListStream`]) filters the answer carrying that id.
#[derive(Debug, Default)]
pub struct PendingLists(std::sync::Mutex<HashMap<LegacySession, HashMap<String, ListFilter>>>);

impl PendingLists {
    /// Expects the answer to request `id` (its JSON text) on `session`'s stream.
    pub fn expect(
        &self,
        session: LegacySession,
        id: String,
        filter: ListFilter,
    ) -> Result<(), crate::error::ProxyError> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains_key(&session) && all.len() >= MAX_PENDING_SESSIONS {
            return Err(crate::error::ProxyError::TooManyStreams {
                per_principal: false,
                limit: MAX_PENDING_SESSIONS,
            });
        }
        let pending = all.entry(session).or_default();
        if pending.len() >= MAX_PENDING_PER_SESSION && !pending.contains_key(&id) {
            return Err(crate::error::ProxyError::InvalidRequest(format!(
                "{MAX_PENDING_PER_SESSION} list requests of this session await their answers already"
            )));
        }
        pending.insert(id, filter);
        Ok(())
    }

    fn take(&self, session: &LegacySession, id: &str) -> Option<ListFilter> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let pending = all.get_mut(session)?;
        let filter = pending.remove(id);
        if pending.is_empty() {
            all.remove(session);
        }
        filter
    }

    fn forget(&self, session: &LegacySession) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(session);
    }
}

/// A restricted caller's legacy SSE stream: whole events pass through, except the answers to its pending
/// list requests, which are filtered. An event over [`MAX_FILTERED_BODY`] cannot be and ends the stream.
pub struct LegacyListStream {
    pending: std::sync::Arc<PendingLists>,
    server_id: String,
    /// Known once the stream's endpoint event is seen.
    session: Option<LegacySession>,
    held: Vec<u8>,
    /// How far `held` was searched for an event's end.
    scanned: usize,
}

impl LegacyListStream {
    pub fn new(pending: std::sync::Arc<PendingLists>, server_id: &str) -> Self {
        Self { pending, server_id: server_id.to_owned(), session: None, held: Vec::new(), scanned: 0 }
    }

    /// Feeds one chunk (after the endpoint rewrite); returns the whole events it completes.
    pub fn feed(
        &mut self,
        chunk: bytes::Bytes,
        upstream_path: Option<&String>,
    ) -> Result<bytes::Bytes, &'static str> {
        if self.session.is_none() {
            self.session = upstream_path.map(|p| (self.server_id.clone(), p.clone()));
        }
        self.held.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(self.held.len());
        loop {
            // A blank line is at most 4 bytes: the search resumes just before where it stopped.
            let from = self.scanned.saturating_sub(3);
            let Some(end) = crate::sse::event_end(&self.held[from..]).map(|e| e + from) else {
                self.scanned = self.held.len();
                break;
            };
            let event: Vec<u8> = self.held.drain(..end).collect();
            self.scanned = 0;
            match self.filtered(&event) {
                Some(filtered) => out.extend_from_slice(&filtered),
                None => out.extend_from_slice(&event),
            }
        }
        if self.held.len() > MAX_FILTERED_BODY {
            return Err("an event over 16 MiB on a stream whose list answers are filtered");
        }
        Ok(bytes::Bytes::from(out))
    }

    fn filtered(&self, event: &[u8]) -> Option<bytes::Bytes> {
        let session = self.session.as_ref()?;
        let parsed = crate::sse::parse_event(event).filter(|e| e.kind == "message")?;
        let message: serde_json::Value = serde_json::from_str(&parsed.data).ok()?;
        message.get("result")?;
        let filter = self.pending.take(session, &message.get("id")?.to_string())?;
        Some(filter.apply(event, true))
    }
}

impl Drop for LegacyListStream {
    fn drop(&mut self) {
        if let Some(session) = &self.session {
            self.pending.forget(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| Glob::new(p).matches(t);
        assert!(m("*", "anything") && m("*", ""));
        assert!(m("echo", "echo") && !m("echo", "echo2") && !m("echo", "ech"));
        assert!(m("get_*", "get_weather") && m("get_*", "get_") && !m("get_*", "set_weather"));
        assert!(m("*_admin", "db_admin") && !m("*_admin", "db_admins"));
        assert!(m("a*b*c", "abc") && m("a*b*c", "aXbYc") && !m("a*b*c", "aXcYb"));
        assert!(m("file:///docs/*", "file:///docs/a.md") && !m("file:///docs/*", "file:///etc/passwd"));
        assert!(!m("ab*ab", "ab"), "overlapping prefix and suffix need their own characters");
    }
}
