//! `/mcp`: one MCP server over every server the caller may use, in both eras, with nothing stored that
//! another replica would need. Lists are answered from the catalog in the routing table; calls are
//! renamed back and forwarded through the same admission and upstream path as `/mcp/{server}`. Design:
//! `proxy/SESSIONS.md` "Aggregation".

pub mod legacy_sse;
pub mod own;
pub mod upstreams;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::request::Session;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::{Value, json};

use crate::error::{Failure, ProxyError};
use crate::headers;
use crate::identity::Principal;
use crate::jsonrpc::{META_CLIENT_CAPABILITIES, Reference, Rpc};
use crate::request::{RequestCtx, reply};
use crate::routing::catalog::{self, Entry, ListKind};
use crate::routing::{RoutingTable, Server};
use crate::session::{Claims, ClientHello, Scope};
use crate::shared::Shared;
use crate::upstream::{self, Plan, Rewrite, Target};

/// What `/mcp` keeps on this replica: the upstream sessions it holds for its clients, its HTTP+SSE
/// client streams, and the registrar of `register_server`.
pub struct State {
    pub upstreams: upstreams::UpstreamSessions,
    pub sse_streams: legacy_sse::Streams,
    pub registrar: own::Registrar,
    /// Sessions their clients ended with `DELETE` on this replica.
    pub ended: EndedSessions,
}

/// `/mcp` sessions ended by their client (`DELETE`), refused (404) until their token would have expired
/// anyway. A session token is sealed, not stored, so this is the only record of the end; it is this
/// replica's: another replica sharing `--session-key` still opens the token (there is no shared store).
/// Bounded: beyond `MAX_ENDED` the oldest ends are forgotten (their tokens open again, for their owner only).
#[derive(Default)]
pub struct EndedSessions(std::sync::Mutex<Ended>);

#[derive(Default)]
pub struct Ended {
    ids: std::collections::HashSet<String>,
    /// In the order they ended, with when their token was sealed.
    order: std::collections::VecDeque<(String, u64)>,
}

/// Most ended sessions remembered.
const MAX_ENDED: usize = 100_000;

impl EndedSessions {
    /// Records that the session `id` (sealed at `issued`) ended; the oldest ends whose token has expired
    /// since (past `ttl`) are forgotten, and the oldest beyond `MAX_ENDED`.
    pub fn end(&self, id: &str, issued: u64, ttl: Duration) {
        let now = crate::session::now();
        let mut ended = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Ended { ids, order } = &mut *ended;
        while let Some((old, at)) = order.front()
            && (at.saturating_add(ttl.as_secs()) <= now || order.len() >= MAX_ENDED)
        {
            ids.remove(old);
            order.pop_front();
        }
        if ids.insert(id.to_owned()) {
            order.push_back((id.to_owned(), issued));
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).ids.contains(id)
    }
}

/// What `/mcp`'s handlers work with: the gateway's shared parts (through `Deref`) and `/mcp`'s state.
#[derive(Clone, Copy)]
pub struct Aggregator<'a> {
    pub shared: &'a Shared,
    pub state: &'a State,
    /// Servers on message transports (SSE, WebSocket, stdio) are called through the caller's shared bridge.
    pub bridges: &'a Arc<upstream::bridge::Bridges>,
}

impl std::ops::Deref for Aggregator<'_> {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        self.shared
    }
}

/// The protocol versions `/mcp` serves, newest first.
pub const VERSIONS: &[&str] = &["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"];
/// What a legacy client asking for a version the gateway does not serve is offered.
const LATEST_LEGACY: &str = "2025-11-25";
/// Items per list page.
pub const PAGE: usize = 1000;
/// How the gateway's own tools are named on `/mcp`.
pub const OWN_PREFIX: &str = "gateway_";
/// `params._meta` key of routing hints on calls.
pub const HINTS_META: &str = "io.mcpgw/routing";
/// How often an idle `/mcp` notification stream carries a keep-alive comment.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// Serves one request on `/mcp` for `principal`.
pub async fn handle(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: Bytes,
    rpc: Option<&Rpc>,
) -> Result<(), Failure> {
    let method = session.req_header().method.clone();
    if let Some(version) = session.mcp_headers().protocol_version()
        && !VERSIONS.contains(&version)
    {
        return Err(
            ProxyError::UnsupportedVersion { requested: version.to_owned(), supported: VERSIONS }.into()
        );
    }
    let modern = session.mcp_headers().is_stateless();
    match method {
        http::Method::POST => post(gw, session, ctx, table, principal, body, rpc, modern).await,
        http::Method::GET if !modern => {
            let claims = client_session(gw, session, principal)?;
            listen(gw, session, ctx, principal, None, claims.instance.into()).await
        }
        http::Method::DELETE if !modern => {
            let claims = client_session(gw, session, principal)?;
            let closed = gw.state.upstreams.close_all(gw, &claims.instance);
            gw.state.ended.end(&claims.instance, claims.issued, gw.sessions.ttl());
            tracing::debug!(closed, "A /mcp session ended.");
            reply(session, ctx, 200, None, Bytes::new(), None).await
        }
        _ => Err(ProxyError::MethodNotAllowed { allowed: if modern { "POST" } else { "GET, POST, DELETE" } }
            .into()),
    }
}

/// The legacy client's session, from its `Mcp-Session-Id`.
fn client_session(
    gw: &Aggregator<'_>,
    session: &Session,
    principal: &Principal,
) -> Result<Claims, ProxyError> {
    let token = session.mcp_headers().session_id().ok_or_else(|| {
        ProxyError::BadRequest("Mcp-Session-Id is required: initialize a session first".into())
    })?;
    let token =
        token.to_str().map_err(|_| crate::request::unknown_session(crate::session::TokenError::Malformed))?;
    let claims = gw
        .sessions
        .open(Scope::Aggregate(principal.binding()), token)
        .map_err(crate::request::unknown_session)?;
    if claims.aggregate.is_none() {
        return Err(crate::request::unknown_session(crate::session::TokenError::Malformed));
    }
    if gw.state.ended.contains(&claims.instance) {
        return Err(ProxyError::SessionNotFound("the session was ended; initialize a new one".into()));
    }
    Ok(claims)
}

#[allow(clippy::too_many_arguments)]
async fn post(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: Bytes,
    rpc: Option<&Rpc>,
    modern: bool,
) -> Result<(), Failure> {
    let (id, method, declared) = match rpc {
        Some(Rpc::Message { id, method, client_capabilities, .. }) => {
            (id.as_ref(), &**method, *client_capabilities)
        }
        Some(Rpc::Response { id }) if !modern => {
            let claims = client_session(gw, session, principal)?;
            return answer_upstream(gw, session, ctx, table, &claims, &body, id).await;
        }
        Some(Rpc::Response { .. }) => {
            return Err(
                ProxyError::InvalidRequest("2026-07-28 clients send no JSON-RPC responses".into()).into()
            );
        }
        Some(Rpc::Batch) => {
            return Err(ProxyError::InvalidRequest("JSON-RPC batches are not accepted on /mcp".into()).into());
        }
        None => return Err(not_one_message().into()),
    };
    if modern {
        headers::check(session.mcp_headers(), rpc).map_err(ProxyError::from)?;
    }
    // The gateway is the server here: it holds every request to what 2026-07-28 asks of one. The request's
    // `_meta` was checked in `Rpc::inspect`'s one pass over the body; it is read whole only by a call to a
    // legacy-only server, which opens its upstream session with it.
    let request = body.clone();
    if modern && !declared {
        return Err(
            ProxyError::InvalidParams(format!("params._meta must carry {META_CLIENT_CAPABILITIES}")).into()
        );
    }
    if !modern && method == "initialize" {
        return initialize(gw, session, ctx, table, principal, &body, id).await;
    }
    let client = if modern { None } else { Some(client_session(gw, session, principal)?) };
    let caller = match &client {
        Some(claims) => Caller::Legacy(claims),
        None => Caller::Modern(&request),
    };
    if let Some(kind) = ListKind::of_list(method) {
        let answer = list(gw, table, principal, kind, &body, id, modern)?;
        return reply(session, ctx, 200, Some("application/json"), answer, None).await;
    }
    match method {
        // Removed in 2026-07-28: a modern request for them is a method not found (404).
        "ping" | "logging/setLevel" if !modern => {
            let answer = result(id, &json!({}), modern);
            reply(session, ctx, 200, Some("application/json"), answer, None).await
        }
        "server/discover" if modern => {
            let answer = result(id, &cacheable(discover(table, principal)), true);
            reply(session, ctx, 200, Some("application/json"), answer, None).await
        }
        "subscriptions/listen" if modern => {
            // `params.notifications` (the Python SDK's name; `filter` read too, as older drafts had it).
            let filter = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v.pointer("/params/notifications").or_else(|| v.pointer("/params/filter")).cloned()
                })
                .unwrap_or_default();
            let id = id.cloned().unwrap_or(Value::Null);
            listen(gw, session, ctx, principal, Some((id, filter)), Arc::from("")).await
        }
        "resources/subscribe" | "resources/unsubscribe" if !modern => {
            call(gw, session, ctx, table, principal, body, rpc, caller, None).await
        }
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete" => {
            call(gw, session, ctx, table, principal, body, rpc, caller, None).await
        }
        "notifications/cancelled" => {
            if let Some(claims) = &client {
                cancel(gw, session, claims, &body).await;
            }
            reply(session, ctx, 202, None, Bytes::new(), None).await
        }
        _ if id.is_none() => reply(session, ctx, 202, None, Bytes::new(), None).await,
        other => Err(ProxyError::MethodNotFound { method: other.to_owned(), modern }.into()),
    }
}

/// A 2026-07-28 cacheable result (lists, `server/discover`, `resources/read`) as the gateway answers it: for
/// this caller only, and not to be reused once answered (catalogs change under it).
fn cacheable(mut value: Value) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.entry("ttlMs").or_insert(json!(0));
        obj.insert("cacheScope".into(), json!("private"));
    }
    value
}

/// What a body that is not one JSON-RPC request or notification gets.
fn not_one_message() -> ProxyError {
    ProxyError::InvalidRequest("the body must be one JSON-RPC request or notification".into())
}

/// A JSON-RPC result message; a 2026-07-28 one says it is complete and who answered it.
fn result(id: Option<&Value>, result: &Value, modern: bool) -> Bytes {
    let mut result = result.clone();
    if modern && let Some(obj) = result.as_object_mut() {
        obj.insert("resultType".into(), "complete".into());
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("io.modelcontextprotocol/serverInfo".into(), server_info());
        }
    }
    Bytes::from(
        json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "result": result}).to_string(),
    )
}

fn server_info() -> Value {
    json!({"name": "mcpgw", "title": "mcpgw gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// The servers `principal` may reach.
fn visible_servers<'a>(
    table: &'a RoutingTable,
    principal: &'a Principal,
) -> impl Iterator<Item = &'a Arc<Server>> {
    table.servers().filter(|s| table.access().allows(principal, &s.tenant, &s.name, None))
}

/// What `/mcp` offers `principal`: every capability one of its servers declared that the gateway can route,
/// with `listChanged` (the gateway announces catalog changes itself).
fn capabilities(table: &RoutingTable, principal: &Principal) -> Value {
    let catalog = table.catalog();
    let mut caps = serde_json::Map::new();
    let mut subscribe = false;
    for server in visible_servers(table, principal) {
        let Some(facts) = catalog.facts(&server.id) else { continue };
        for key in ["tools", "prompts", "resources", "completions", "logging"] {
            if let Some(declared) = facts.capabilities.get(key) {
                subscribe |= key == "resources" && declared.get("subscribe") == Some(&Value::Bool(true));
                caps.entry(key).or_insert_with(|| json!({}));
            }
        }
    }
    for key in ["tools", "prompts", "resources"] {
        if let Some(Value::Object(obj)) = caps.get_mut(key) {
            obj.insert("listChanged".into(), Value::Bool(true));
        }
    }
    if subscribe && let Some(Value::Object(obj)) = caps.get_mut("resources") {
        obj.insert("subscribe".into(), Value::Bool(true));
    }
    Value::Object(caps)
}

/// Answers a legacy `initialize`: the gateway is the client's server; upstream sessions come later.
#[allow(clippy::too_many_arguments)]
async fn initialize(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    principal: &Principal,
    body: &[u8],
    id: Option<&Value>,
) -> Result<(), Failure> {
    let doc: Value = serde_json::from_slice(body).unwrap_or_default();
    let params = doc.get("params").cloned().unwrap_or_default();
    let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(LATEST_LEGACY);
    let version = if VERSIONS[1..].contains(&asked) { asked } else { LATEST_LEGACY };
    let hello = ClientHello {
        protocol_version: version.to_owned(),
        capabilities: params.get("capabilities").cloned().unwrap_or_else(|| json!({})).to_string(),
        client_info: params.get("clientInfo").cloned().unwrap_or_else(|| json!({})).to_string(),
    };
    let claims = Claims {
        instance: crate::session::random_id(),
        upstream: String::new(),
        issued: crate::session::now(),
        aggregate: Some(hello),
    };
    let token = gw.sessions.seal_claims(Scope::Aggregate(principal.binding()), &claims);
    let answer = result(id, &initialize_result(table, principal, version), false);
    reply(session, ctx, 200, Some("application/json"), answer, Some(token)).await
}

/// The `initialize` result `/mcp` gives (in `version`).
fn initialize_result(table: &RoutingTable, principal: &Principal, version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(table, principal),
        "serverInfo": server_info(),
        "instructions": "mcpgw: the tools, prompts and resources of every server you may use, named <server>_<name> unless the server is configured otherwise.",
    })
}

/// `server/discover` on `/mcp`.
fn discover(table: &RoutingTable, principal: &Principal) -> Value {
    json!({
        "supportedVersions": VERSIONS,
        "capabilities": capabilities(table, principal),
        "serverInfo": server_info(),
    })
}

/// The first route of `entry` that `principal` may use.
fn visible<'a>(
    table: &RoutingTable,
    principal: &Principal,
    kind: ListKind,
    entry: &'a Entry,
) -> Option<&'a catalog::Route> {
    entry.routes.iter().find(|r| {
        table.access().allows(
            principal,
            &r.server.tenant,
            &r.server.name,
            Some((kind.item_kind(), &r.original)),
        )
    })
}

/// One page of a merged list, filtered for `principal`, as a JSON-RPC answer.
fn list(
    gw: &Aggregator<'_>,
    table: &RoutingTable,
    principal: &Principal,
    kind: ListKind,
    body: &[u8],
    id: Option<&Value>,
    modern: bool,
) -> Result<Bytes, ProxyError> {
    let cursor = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/params/cursor").and_then(Value::as_str).map(str::to_owned));
    let bad_cursor = || ProxyError::InvalidCursor;
    let catalog = table.catalog();
    let mut cursor_name: Option<String> = None;
    let start = match cursor {
        None => 0,
        Some(c) => {
            let claims =
                gw.sessions.open(Scope::Cursor(principal.binding()), &c).map_err(|_| bad_cursor())?;
            if claims.instance != kind.field() {
                return Err(bad_cursor());
            }
            let start = catalog.after(kind, &claims.upstream);
            cursor_name = Some(claims.upstream);
            start
        }
    };
    let entries = catalog.entries(kind);
    let own = if kind == ListKind::Tools { own::tools(OWN_PREFIX) } else { Vec::new() };
    let after = cursor_name.as_deref();
    let mut servers = entries[start.min(entries.len())..]
        .iter()
        .filter_map(|e| visible(table, principal, kind, e).map(|r| (&*e.name, &*r.json)))
        .peekable();
    let mut ours = own
        .iter()
        .filter(|(n, _)| after.is_none_or(|a| n.as_str() > a))
        .map(|(n, j)| (n.as_str(), j.as_str()))
        .peekable();
    let mut out = String::with_capacity(256 + PAGE.min(entries.len()) * 256);
    out.push_str(r#"{"jsonrpc":"2.0","id":"#);
    out.push_str(&id.cloned().unwrap_or(Value::Null).to_string());
    out.push_str(r#","result":{""#);
    out.push_str(kind.field());
    out.push_str(r#"":["#);
    let mut shown = 0;
    let mut last: Option<&str> = None;
    let mut more = false;
    loop {
        let take_ours = match (servers.peek(), ours.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((a, _)), Some((b, _))) => b < a,
        };
        if shown == PAGE {
            more = true;
            break;
        }
        let Some((name, json)) = (if take_ours { ours.next() } else { servers.next() }) else { break };
        if shown > 0 {
            out.push(',');
        }
        out.push_str(json);
        shown += 1;
        last = Some(name);
    }
    out.push(']');
    if more && let Some(last) = last {
        let claims = Claims {
            instance: kind.field().to_owned(),
            upstream: last.to_string(),
            issued: crate::session::now(),
            aggregate: None,
        };
        let cursor = gw.sessions.seal_claims(Scope::Cursor(principal.binding()), &claims);
        out.push_str(r#","nextCursor":""#);
        out.push_str(&cursor);
        out.push('"');
    }
    if modern {
        // Filtered for this caller: cacheable by it alone, and stale as soon as a server's catalog changes.
        out.push_str(r#","ttlMs":0,"cacheScope":"private","resultType":"complete""#);
    }
    out.push_str("}}");
    Ok(Bytes::from(out))
}

/// Routing hints of a call on `/mcp` (`params._meta["io.mcpgw/routing"]`, or the `Mcp-Gateway-*` headers).
#[derive(Debug, Default)]
struct Hints {
    preferred: Vec<String>,
    /// Servers carrying one of these tags go before the others (after the preferred servers).
    preferred_tags: Vec<String>,
    required_tools: Vec<String>,
    required_resources: Vec<String>,
}

impl Hints {
    fn of(req: &pingora::http::RequestHeader, body: &[u8]) -> Self {
        // Nothing to read in the common case: no hint header (one pass over the names), no hint key.
        let in_headers = req.headers.keys().any(|n| n.as_str().starts_with("mcp-gateway-"));
        let in_body = has_hints(body);
        if !in_headers && !in_body {
            return Self::default();
        }
        let doc: Option<Value> = in_body.then(|| serde_json::from_slice(body).ok()).flatten();
        let meta = doc.as_ref().and_then(|d| d.pointer("/params/_meta")).and_then(|m| m.get(HINTS_META));
        let from_meta = |key: &str| -> Option<Vec<String>> {
            let list = meta?.get(key)?.as_array()?;
            Some(list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        };
        let from_header = |name: &str| -> Option<Vec<String>> {
            let raw = req.headers.get(name)?.to_str().ok()?;
            Some(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        };
        let either =
            |key: &str, header: &str| from_meta(key).or_else(|| from_header(header)).unwrap_or_default();
        Self {
            preferred: either("preferred_servers", "mcp-gateway-preferred-servers"),
            preferred_tags: either("preferred_tags", "mcp-gateway-preferred-tags"),
            required_tools: either("required_tools", "mcp-gateway-required-tools"),
            required_resources: either("required_resources", "mcp-gateway-required-resources"),
        }
    }

    /// Whether `server` offers everything the call requires.
    fn accepts(&self, catalog: &catalog::Catalog, server: &Server) -> bool {
        self.required_tools.iter().all(|t| catalog.offers(&server.id, ListKind::Tools, t))
            && self.required_resources.iter().all(|r| catalog.offers(&server.id, ListKind::Resources, r))
    }

    /// Sort key: preferred servers first, in the order given, then servers with a preferred tag.
    fn rank(&self, server: &Server) -> (usize, bool) {
        let named = self.preferred.iter().position(|p| **p == *server.name).unwrap_or(usize::MAX);
        (named, !server.tags.iter().any(|t| self.preferred_tags.contains(t)))
    }
}

/// Whether one of the server's instances can take a request now.
fn available(server: &Server) -> bool {
    server.instances.iter().any(|i| {
        i.health != mcpgw_proto::v1::HealthStatus::Unhealthy && i.state.gate() != crate::balance::Gate::Open
    })
}

/// Who sends a call: a legacy client in its `/mcp` session, or a 2026-07-28 client with its request's
/// `params._meta`.
#[derive(Clone, Copy)]
enum Caller<'a> {
    Legacy(&'a Claims),
    /// The request's body (its `params._meta` says who the client is).
    Modern(&'a [u8]),
}

impl Caller<'_> {
    fn is_modern(self) -> bool {
        matches!(self, Self::Modern(_))
    }
}

/// The upstream session a 2026-07-28 client's call to a legacy-only server uses: one per (principal,
/// declared client capabilities), opened with what `_meta` says of the client.
fn modern_hello(principal: &Principal, meta: &Value) -> (Arc<str>, ClientHello) {
    let field = |key: &str| meta.get(key).cloned().unwrap_or_else(|| json!({}));
    let capabilities = field(META_CLIENT_CAPABILITIES).to_string();
    let mut hasher = std::hash::DefaultHasher::new();
    capabilities.hash(&mut hasher);
    let key = format!("modern:{}:{:016x}", principal.binding(), hasher.finish());
    let hello = ClientHello {
        protocol_version: LATEST_LEGACY.to_owned(),
        capabilities,
        client_info: field("io.modelcontextprotocol/clientInfo").to_string(),
    };
    (Arc::from(key), hello)
}

/// Forwards a call to the server owning the name it uses, under the server's own name for it.
#[allow(clippy::too_many_arguments)]
async fn call(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: Bytes,
    rpc: Option<&Rpc>,
    client: Caller<'_>,
    sink: Option<&legacy_sse::Sink>,
) -> Result<(), Failure> {
    let Some(Rpc::Message { id, method, name, reference, .. }) = rpc else {
        return Err(ProxyError::InvalidRequest("the body must be one JSON-RPC request".into()).into());
    };
    let kind = match (&**method, reference) {
        ("tools/call", _) => ListKind::Tools,
        ("prompts/get", _) => ListKind::Prompts,
        ("completion/complete", Some(Reference::Prompt)) => ListKind::Prompts,
        ("completion/complete", Some(Reference::Resource)) => ListKind::Templates,
        ("completion/complete", None) => {
            return Err(ProxyError::InvalidParams(
                "params.ref must name a prompt or a resource template".into(),
            )
            .into());
        }
        _ => ListKind::Resources,
    };
    let item = kind.item_kind();
    let name = name.as_deref().ok_or_else(|| {
        ProxyError::InvalidParams(format!("{method} must name what it uses (params.name or params.uri)"))
    })?;
    let missing = || ProxyError::UnknownItem { kind: item, name: name.to_owned() };
    if kind == ListKind::Tools
        && let Some(tool) = name.strip_prefix(OWN_PREFIX).filter(|t| own::is_tool(t))
    {
        return own_call(gw, session, ctx, table, principal, &body, id.as_ref(), tool, client.is_modern())
            .await;
    }
    let catalog = table.catalog();
    let candidates: Vec<(&catalog::Route, std::borrow::Cow<'_, str>)> = match catalog.get(kind, name) {
        Some(entry) => entry.routes.iter().map(|r| (r, std::borrow::Cow::Borrowed(&*r.original))).collect(),
        None if kind == ListKind::Resources => match catalog.template_for(name) {
            Some((entry, originals)) => {
                entry.routes.iter().zip(originals.into_iter().map(std::borrow::Cow::Owned)).collect()
            }
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    let hints = Hints::of(session.req_header(), &body);
    let known = !candidates.is_empty();
    let mut allowed = candidates;
    allowed.retain(|(r, original)| {
        table.access().allows(principal, &r.server.tenant, &r.server.name, Some((item, original)))
            && hints.accepts(catalog, &r.server)
    });
    if allowed.is_empty() {
        ctx.audited.forbidden = known;
        return Err(missing().into());
    }
    // Stable: servers not named by the hints keep their preference order.
    allowed.sort_by_key(|(r, _)| hints.rank(&r.server));
    // Servers with an instance that can take the call first; a server that cannot be reached at all
    // (nothing was sent) hands the call to the next one.
    allowed.sort_by_key(|(r, _)| !available(&r.server));
    let last = allowed.len() - 1;
    for (i, (route, original)) in allowed.iter().enumerate() {
        let outcome =
            call_route(gw, session, ctx, table, principal, &body, rpc, client, sink, route, original).await;
        match outcome {
            Err(Failure::Reply(
                e @ (ProxyError::UpstreamUnreachable { .. } | ProxyError::NoInstance { .. }),
            )) if i < last && session.response_written().is_none() => {
                tracing::debug!(server = %route.server.name, error = %e, "Trying the next server offering the name.");
            }
            other => return other,
        }
    }
    Err(missing().into())
}

/// Forwards a call to one server offering its name, as `original` there.
#[allow(clippy::too_many_arguments)]
async fn call_route(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: &Bytes,
    rpc: Option<&Rpc>,
    client: Caller<'_>,
    sink: Option<&legacy_sse::Sink>,
    route: &catalog::Route,
    original: &str,
) -> Result<(), Failure> {
    let Some(Rpc::Message {
        id,
        method,
        name: Some(exposed),
        protocol_version,
        reference,
        client_capabilities,
    }) = rpc
    else {
        return Err(ProxyError::InvalidRequest("the body must be one JSON-RPC request".into()).into());
    };
    let body = renamed_body(body, method, *reference, exposed, original)?;
    let renamed = Rpc::Message {
        id: id.clone(),
        method: method.clone(),
        name: Some(original.to_owned()),
        protocol_version: protocol_version.clone(),
        reference: *reference,
        client_capabilities: *client_capabilities,
    };
    let admitted =
        crate::route::admit(gw, session, ctx, table, principal, &route.server.name, &body, Some(&renamed))
            .await?;
    let server = admitted.server;
    if server.transport != mcpgw_proto::v1::Transport::StreamableHttp {
        // A server on a message transport: through the caller's shared bridge, answered whole.
        let target = crate::route::balanced(session, &server);
        let answer = upstream::bridge::request_shared(
            gw,
            gw.bridges,
            session.req_header(),
            ctx,
            &server,
            &target,
            &body,
            Some(&renamed),
        )
        .await?
        .unwrap_or_default();
        return match sink {
            Some(sink) => {
                ctx.audited.answer = crate::audit::capture::answer(&answer);
                sink.send(&answer).map_err(Failure::from)
            }
            None => reply(session, ctx, 200, Some("application/json"), answer, None).await,
        };
    }
    let modern = client.is_modern();
    let mut headers = Vec::new();
    if modern {
        let value = if original == &*route.original {
            route.name_header.clone()
        } else {
            crate::headers::header_value(original)
        };
        headers.push((crate::headers::MCP_NAME, value));
    }
    let complete = modern.then_some(crate::sse::Completion { cacheable: method == "resources/read" });
    if modern && table.catalog().facts(&server.id).is_some_and(|f| f.modern) {
        let plan = Plan {
            target: crate::route::balanced(session, &server),
            rewrite: Rewrite::DropSession,
            headers,
            rewrites: crate::sse::Rewrites { request_ids: None, complete },
            ..Plan::default()
        };
        return upstream::http::run_in_place(gw, session, ctx, &server, plan, body).await;
    }
    let (key, hello) = match client {
        Caller::Legacy(claims) => match &claims.aggregate {
            Some(hello) => (Arc::from(claims.instance.as_str()), hello.clone()),
            None => modern_hello(principal, &Value::Null),
        },
        Caller::Modern(body) => modern_hello(principal, &crate::jsonrpc::params_meta(body)),
    };
    let _in_flight = gw.state.upstreams.track(&key, id.as_ref(), &server.id);
    let mut first = true;
    loop {
        let held = gw.state.upstreams.get(gw, session.req_header(), &server, &key, &hello).await?;
        let mut headers = headers.clone();
        headers.push((crate::headers::MCP_PROTOCOL_VERSION, crate::headers::header_value(&held.version)));
        let plan = Plan {
            target: Target::Pinned(held.instance.clone()),
            upstream_session: Some(held.id.clone()).filter(|id| !id.is_empty()),
            rewrite: Rewrite::DropSession,
            headers,
            reopen: first,
            rewrites: crate::sse::Rewrites {
                request_ids: (!modern).then(|| request_id_prefix(&server.id)),
                complete,
            },
            ..Plan::default()
        };
        let sent = match sink {
            Some(sink) => sink.forward(gw, session, ctx, &server, &held, &plan, &body).await,
            None => upstream::http::run_in_place(gw, session, ctx, &server, plan, body.clone()).await,
        };
        match sent {
            Err(Failure::UpstreamSessionGone) if first => {
                gw.state.upstreams.forget(&key, &server.id, &held);
                first = false;
            }
            other => return other,
        }
    }
}

/// Whether a body names the routing hints' `_meta` key (found with a searcher built once).
fn has_hints(body: &[u8]) -> bool {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(HINTS_META.as_bytes()));
    FINDER.find(body).is_some()
}

/// The body of a call as its server must see it: the name (or URI) it used on `/mcp` replaced by the
/// server's own, the routing hints removed. Spliced in the bytes when the member appears once as plain
/// text and no hints are there (no parse, no re-serialization); parsed and rewritten otherwise.
fn renamed_body(
    body: &Bytes,
    method: &str,
    reference: Option<Reference>,
    exposed: &str,
    original: &str,
) -> Result<Bytes, ProxyError> {
    let (key, pointer) = match (method, reference) {
        ("completion/complete", Some(Reference::Prompt)) => ("name", "/params/ref/name"),
        ("completion/complete", _) => ("uri", "/params/ref/uri"),
        ("tools/call" | "prompts/get", _) => ("name", "/params/name"),
        _ => ("uri", "/params/uri"),
    };
    if !has_hints(body)
        && let Some(spliced) = splice_member(body, key, exposed, original)
    {
        return Ok(spliced);
    }
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|_| ProxyError::InvalidRequest("the body is not JSON".into()))?;
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = Value::String(original.to_owned());
    }
    if let Some(Value::Object(meta)) = doc.pointer_mut("/params/_meta") {
        meta.remove(HINTS_META);
    }
    Ok(Bytes::from(doc.to_string()))
}

/// `body` with its one `"<key>": "<from>"` member made `"<key>":"<to>"`; `None` unless that member is there
/// exactly once as plain text (names needing no JSON escapes), so the caller parses instead. A member of
/// the same key and value elsewhere (inside the arguments) makes two: parsed.
fn splice_member(body: &[u8], key: &str, from: &str, to: &str) -> Option<Bytes> {
    let plain = |s: &str| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if !plain(from) || !plain(to) {
        return None;
    }
    static NAME: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"name\""));
    static URI: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"uri\""));
    let finder: &memchr::memmem::Finder<'static> = match key {
        "name" => &NAME,
        "uri" => &URI,
        _ => return None,
    };
    // `"<from>"` at `at`, compared in place.
    let quoted_from_at = |at: usize| {
        body.get(at) == Some(&b'"')
            && body.get(at + 1..at + 1 + from.len()) == Some(from.as_bytes())
            && body.get(at + 1 + from.len()) == Some(&b'"')
    };
    let skip_ws = |mut i: usize| {
        while body.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut found = None;
    for at in finder.find_iter(body) {
        let colon = skip_ws(at + key.len() + 2);
        if body.get(colon) != Some(&b':') {
            continue;
        }
        let value = skip_ws(colon + 1);
        if quoted_from_at(value) {
            if found.is_some() {
                return None;
            }
            found = Some((value, value + from.len() + 2));
        }
    }
    let (start, end) = found?;
    let mut out = bytes::BytesMut::with_capacity(body.len() + to.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(b"\"");
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
}

/// Forwards a legacy `notifications/cancelled` to the upstream session its request went to, if that
/// request is in flight on this replica.
async fn cancel(gw: &Aggregator<'_>, session: &Session, claims: &Claims, body: &Bytes) {
    let Some(request_id) =
        serde_json::from_slice::<Value>(body).ok().and_then(|d| d.pointer("/params/requestId").cloned())
    else {
        return;
    };
    let key: Arc<str> = Arc::from(claims.instance.as_str());
    let Some(server_id) = gw.state.upstreams.in_flight(&key, &request_id) else { return };
    let Some(held) = gw.state.upstreams.held(&key, &server_id) else { return };
    let req = upstreams::own_request(
        http::Method::POST,
        Some(session.req_header()),
        Some(&held.version),
        Some(&held.id),
    );
    if let Err(error) =
        upstream::http::request_whole(gw, &req, &held.server, &held.instance, body, &Plan::default()).await
    {
        tracing::debug!(server = %held.server.name, %error, "A cancellation could not be forwarded.");
    }
}

/// A resource URI as its server knows it, and as the client does.
type UriPair = (String, String);

/// The server `principal` may read resource `uri` from (exposed on `/mcp` as listed, or matching a
/// template), and the server's own URI for it.
fn resource_route(table: &RoutingTable, principal: &Principal, uri: &str) -> Option<(Arc<Server>, String)> {
    let catalog = table.catalog();
    let candidates: Vec<(&catalog::Route, String)> = match catalog.get(ListKind::Resources, uri) {
        Some(entry) => entry.routes.iter().map(|r| (r, r.original.to_string())).collect(),
        None => {
            let (entry, originals) = catalog.template_for(uri)?;
            entry.routes.iter().zip(originals).collect()
        }
    };
    candidates
        .into_iter()
        .find(|(r, original)| {
            let item = Some((crate::policy::ItemKind::Resource, original.as_str()));
            table.access().allows(principal, &r.server.tenant, &r.server.name, item)
        })
        .map(|(r, original)| (r.server.clone(), original))
}

/// A digest of what `principal` sees of each list, to notice changes.
fn digests(table: &RoutingTable, principal: &Principal, kinds: &[ListKind]) -> Vec<u64> {
    kinds
        .iter()
        .map(|kind| {
            let mut hasher = std::hash::DefaultHasher::new();
            for entry in table.catalog().entries(*kind) {
                if let Some(route) = visible(table, principal, *kind, entry) {
                    route.json.hash(&mut hasher);
                }
            }
            hasher.finish()
        })
        .collect()
}

/// Serves a notification stream: the legacy GET stream of a `/mcp` session, or a 2026-07-28
/// `subscriptions/listen` (`listen` = its id and filter). Sends `notifications/<list>/list_changed` once
/// whenever what the caller can see of a list changes, and keep-alive comments meanwhile.
async fn listen(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    principal: &Principal,
    listen: Option<(Value, Value)>,
    key: Arc<str>,
) -> Result<(), Failure> {
    let _permit = gw.streams.acquire_stream(principal.binding())?;
    let mut kinds = vec![ListKind::Tools, ListKind::Prompts, ListKind::Resources, ListKind::Templates];
    let mut ack = serde_json::Map::new();
    if let Some((_, filter)) = &listen {
        let wanted = |flag: &str| filter.get(flag) == Some(&Value::Bool(true));
        kinds.retain(|k| match k {
            ListKind::Tools => wanted("toolsListChanged"),
            ListKind::Prompts => wanted("promptsListChanged"),
            ListKind::Resources | ListKind::Templates => wanted("resourcesListChanged"),
        });
        for flag in ["toolsListChanged", "promptsListChanged", "resourcesListChanged"] {
            if wanted(flag) {
                ack.insert(flag.into(), Value::Bool(true));
            }
        }
    }
    // What reaches this stream from upstreams (their own streams, resource updates), in order.
    let (relayed_tx, mut relayed) = tokio::sync::mpsc::channel::<Bytes>(64);
    // 2026-07-28 resource subscriptions: each URI goes to the server offering it (one listen per server).
    if let Some((id, filter)) = &listen
        && let Some(wanted) = filter.get("resourceSubscriptions").and_then(Value::as_array)
        && let Some(table) = gw.routes.load()
    {
        let mut by_server: HashMap<String, (Arc<Server>, Vec<UriPair>)> = HashMap::new();
        let mut honoured = Vec::new();
        for uri in wanted.iter().filter_map(Value::as_str) {
            let Some((server, original)) = resource_route(&table, principal, uri) else { continue };
            if table.catalog().facts(&server.id).is_some_and(|f| f.modern) {
                let entry =
                    by_server.entry(server.id.clone()).or_insert_with(|| (server.clone(), Vec::new()));
                entry.1.push((original, uri.to_owned()));
                honoured.push(Value::String(uri.to_owned()));
            }
        }
        for (_, (server, uris)) in by_server {
            let Some(idx) = server.selector().pick(&[], &[]) else { continue };
            let instance = server.instances[idx].clone();
            let tx = relayed_tx.clone();
            tokio::spawn(upstreams::listen_resources(gw.pool.clone(), instance, uris, id.clone(), tx));
        }
        if !honoured.is_empty() {
            ack.insert("resourceSubscriptions".into(), Value::Array(honoured));
        }
    }
    let subscription = listen.as_ref().map(|(id, _)| id.clone());
    let event = |method: &str, mut params: serde_json::Map<String, Value>| {
        if let Some(id) = &subscription {
            params.insert("_meta".into(), json!({"io.modelcontextprotocol/subscriptionId": id}));
        }
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        Bytes::from(format!("event: message\ndata: {message}\n\n"))
    };
    // What the caller sees now, before the client learns the stream is open: any change after it is told.
    let mut changes = gw.routes.subscribe();
    let mut seen = match gw.routes.load() {
        Some(table) => digests(&table, principal, &kinds),
        None => Vec::new(),
    };
    start_event_stream(session, ctx).await?;
    if subscription.is_some() {
        let mut params = serde_json::Map::new();
        params.insert("notifications".into(), Value::Object(ack));
        let first = event("notifications/subscriptions/acknowledged", params);
        session.write_response_body(first, false).await.map_err(Failure::Abort)?;
    }
    // A legacy session's stream also relays its upstream sessions' own streams (those this replica holds,
    // and those it opens while the stream lasts).
    // Each upstream session once (a session reopened after the upstream forgot it is a new one).
    let mut relaying: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let mut opened = gw.state.upstreams.subscribe();
    let relay =
        |relaying: &mut std::collections::HashSet<usize>, server: String, held: Arc<upstreams::Held>| {
            if !key.is_empty() && relaying.insert(Arc::as_ptr(&held) as usize) {
                let prefix = request_id_prefix(&server);
                tokio::spawn(upstreams::relay(gw.pool.clone(), held, prefix, relayed_tx.clone()));
            }
        };
    if !key.is_empty() {
        for (server, held) in gw.state.upstreams.held_of(&key) {
            relay(&mut relaying, server, held);
        }
    }
    loop {
        let out = tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                let table = gw.routes.current();
                let now = digests(&table, principal, &kinds);
                let mut sent: Vec<&str> = Vec::new();
                let mut out = Vec::new();
                for (i, kind) in kinds.iter().enumerate() {
                    let notification = kind.list_changed();
                    if seen.get(i) != now.get(i) && !sent.contains(&notification) {
                        sent.push(notification);
                        out.extend_from_slice(&event(notification, serde_json::Map::new()));
                    }
                }
                seen = now;
                Bytes::from(out)
            }
            news = opened.recv(), if !key.is_empty() => {
                match news {
                    Ok((k, server)) if k == key => {
                        if let Some(held) = gw.state.upstreams.held(&key, &server) {
                            relay(&mut relaying, server, held);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for (server, held) in gw.state.upstreams.held_of(&key) {
                            relay(&mut relaying, server, held);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                }
                Bytes::new()
            }
            Some(message) = relayed.recv() => message,
            _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            _ = crate::request::client_gone(session) => return Ok(()),
            _ = gw.draining.wait() => break,
        };
        if !out.is_empty() && session.write_response_body(out, false).await.is_err() {
            return Ok(());
        }
    }
    session.write_response_body(Bytes::new(), true).await.map_err(Failure::Abort)
}

/// Answers 200 with an open, unbuffered `text/event-stream` body (the events follow).
async fn start_event_stream(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Failure> {
    let mut resp = ResponseHeader::build(200, Some(4)).map_err(Failure::Abort)?;
    for (name, value) in
        [("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")]
    {
        resp.insert_header(name, value).map_err(Failure::Abort)?;
    }
    session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    Ok(())
}

/// Runs one of the gateway's own tools (`tool` unprefixed) and answers with its result.
#[allow(clippy::too_many_arguments)]
async fn own_call(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    principal: &Principal,
    body: &[u8],
    id: Option<&Value>,
    tool: &str,
    modern: bool,
) -> Result<(), Failure> {
    ctx.server = Some(Arc::from(own::NAME));
    let args = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|d| d.pointer("/params/arguments").cloned())
        .unwrap_or_else(|| json!({}));
    let outcome = match own::call(table, principal, tool, &args) {
        own::Outcome::Done(value) => value,
        own::Outcome::Register(spec) => register(gw, session.req_header(), &spec).await,
    };
    let answer = result(id, &outcome, modern);
    reply(session, ctx, 200, Some("application/json"), answer, None).await
}

/// `register_server`: the control plane registers the server for the caller's own credential, with the
/// REST API's validation and permissions; its answer (or refusal) is the tool's result.
async fn register(gw: &Aggregator<'_>, down: &pingora::http::RequestHeader, spec: &Value) -> Value {
    let token = down
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim())
        })
        .unwrap_or_default();
    match gw.state.registrar.register(token, spec).await {
        Ok((status, body)) => {
            own::result(json!({"status": status, "response": body}), !(200..300).contains(&status))
        }
        Err(error) => own::result(json!({"error": error}), true),
    }
}

/// Serves `/mcp/gateway`: the gateway's own tools as one small MCP server in both eras (no session, no
/// GET stream).
pub async fn own_server(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: Bytes,
    rpc: Option<&Rpc>,
) -> Result<(), Failure> {
    ctx.server = Some(Arc::from(own::NAME));
    if session.req_header().method != http::Method::POST {
        return Err(ProxyError::MethodNotAllowed { allowed: "POST" }.into());
    }
    let modern = session.mcp_headers().is_stateless();
    let (id, method, name) = match rpc {
        Some(Rpc::Message { id, method, name, .. }) => (id.as_ref(), &**method, name.as_deref()),
        Some(Rpc::Response { .. }) => {
            return reply(session, ctx, 202, None, Bytes::new(), None).await;
        }
        _ => return Err(not_one_message().into()),
    };
    if modern {
        headers::check(session.mcp_headers(), rpc).map_err(ProxyError::from)?;
    }
    let capabilities = json!({"tools": {}});
    let answer = match method {
        "initialize" if !modern => {
            let asked = serde_json::from_slice::<Value>(&body).ok().and_then(|d| {
                d.pointer("/params/protocolVersion").and_then(Value::as_str).map(str::to_owned)
            });
            let version =
                asked.filter(|v| VERSIONS[1..].contains(&v.as_str())).unwrap_or_else(|| LATEST_LEGACY.into());
            json!({"protocolVersion": version, "capabilities": capabilities, "serverInfo": server_info()})
        }
        "server/discover" if modern => cacheable(
            json!({"supportedVersions": VERSIONS, "capabilities": capabilities, "serverInfo": server_info()}),
        ),
        "ping" => json!({}),
        "tools/list" => {
            let items: Vec<Value> =
                own::tools("").into_iter().filter_map(|(_, j)| serde_json::from_str(&j).ok()).collect();
            if modern { cacheable(json!({"tools": items})) } else { json!({"tools": items}) }
        }
        "tools/call" => {
            let tool = name.filter(|n| own::is_tool(n)).ok_or_else(|| ProxyError::UnknownItem {
                kind: crate::policy::ItemKind::Tool,
                name: name.unwrap_or_default().to_owned(),
            })?;
            return own_call(gw, session, ctx, table, principal, &body, id, tool, modern).await;
        }
        _ if id.is_none() => return reply(session, ctx, 202, None, Bytes::new(), None).await,
        other => return Err(ProxyError::MethodNotFound { method: other.to_owned(), modern }.into()),
    };
    reply(session, ctx, 200, Some("application/json"), result(id, &answer, modern), None).await
}

/// The prefix of the ids the client sees on requests from the server with `server_id`.
fn request_id_prefix(server_id: &str) -> Arc<str> {
    Arc::from(format!("mcpgw:{server_id}:"))
}

/// A legacy client's answer to a request an upstream sent it: restored to the upstream's own id and
/// posted into that upstream's session (on this replica; an answer for a session opened elsewhere is
/// refused as an unknown session, since the request it answers cannot be found).
async fn answer_upstream(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    claims: &Claims,
    body: &Bytes,
    id: &Value,
) -> Result<(), Failure> {
    let unknown = || ProxyError::InvalidParams(format!("no request of this session has the id {id}"));
    let (server_id, original) = id
        .as_str()
        .and_then(|s| s.strip_prefix("mcpgw:"))
        .and_then(|s| s.split_once(':'))
        .and_then(|(server, _)| {
            let original = crate::sse::original_id(id, &request_id_prefix(server))?;
            Some((server.to_owned(), original))
        })
        .ok_or_else(unknown)?;
    let key: Arc<str> = Arc::from(claims.instance.as_str());
    let held = gw.state.upstreams.held(&key, &server_id).ok_or_else(unknown)?;
    let server = table.servers().find(|s| s.id == server_id).cloned().unwrap_or_else(|| held.server.clone());
    ctx.server = Some(server.name.clone());
    let mut doc: Value = serde_json::from_slice(body)
        .map_err(|_| ProxyError::InvalidRequest("the body is not JSON".into()))?;
    doc["id"] = original;
    let plan = Plan {
        target: Target::Pinned(held.instance.clone()),
        upstream_session: Some(held.id.clone()).filter(|id| !id.is_empty()),
        rewrite: Rewrite::DropSession,
        headers: vec![(crate::headers::MCP_PROTOCOL_VERSION, crate::headers::header_value(&held.version))],
        ..Plan::default()
    };
    upstream::http::run_in_place(gw, session, ctx, &server, plan, Bytes::from(doc.to_string())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(body: &str, method: &str, reference: Option<Reference>, from: &str, to: &str) -> Value {
        let out = renamed_body(&Bytes::from(body.to_owned()), method, reference, from, to).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn ended_sessions_are_remembered_until_their_tokens_expire() {
        let ended = EndedSessions::default();
        let now = crate::session::now();
        let ttl = Duration::from_secs(60);
        ended.end("old", now - 120, ttl);
        assert!(ended.contains("old"));
        ended.end("a", now, ttl);
        assert!(!ended.contains("old"), "its token has expired since: nothing to remember");
        ended.end("b", now, ttl);
        assert!(ended.contains("a") && ended.contains("b") && !ended.contains("c"));
    }

    #[test]
    fn calls_are_renamed_in_place_or_by_parsing() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name" : "a_echo","arguments":{"x":"a_echo"}}}"#;
        assert_eq!(
            splice_member(call.as_bytes(), "name", "a_echo", "echo").as_deref().map(<[u8]>::len),
            Some(call.len() - 2)
        );
        assert_eq!(
            renamed(call, "tools/call", None, "a_echo", "echo")["params"],
            json!({"name": "echo", "arguments": {"x": "a_echo"}})
        );
        // The same member inside the arguments: parsed, and only params.name changes.
        let twice = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"a_echo"},"name":"a_echo"}}"#;
        assert!(splice_member(twice.as_bytes(), "name", "a_echo", "echo").is_none());
        assert_eq!(
            renamed(twice, "tools/call", None, "a_echo", "echo")["params"],
            json!({"arguments": {"name": "a_echo"}, "name": "echo"})
        );
        // Names needing escapes, hints to remove, references and URIs.
        let quoted = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a_\"q\""}}"#;
        assert_eq!(renamed(quoted, "tools/call", None, "a_\"q\"", "\"q\"")["params"]["name"], "\"q\"");
        let hinted = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","_meta":{"io.mcpgw/routing":{"preferred_servers":["b"]},"k":1}}}"#;
        assert_eq!(renamed(hinted, "tools/call", None, "s", "s")["params"]["_meta"], json!({"k": 1}));
        let complete = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a_p"},"argument":{"name":"x","value":"y"}}}"#;
        assert_eq!(
            renamed(complete, "completion/complete", Some(Reference::Prompt), "a_p", "p")["params"]["ref"]["name"],
            "p"
        );
        let read = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"mem://a/x"}}"#;
        assert_eq!(renamed(read, "resources/read", None, "mem://a/x", "mem://x")["params"]["uri"], "mem://x");
    }

    #[test]
    fn header_values_use_the_base64_form_when_they_must() {
        assert_eq!(crate::headers::header_value("echo"), "echo");
        assert_eq!(crate::headers::header_value("héllo"), "=?base64?aMOpbGxv?=");
        assert_eq!(crate::headers::header_value(" lead"), "=?base64?IGxlYWQ=?=");
    }
}
