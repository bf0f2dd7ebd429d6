//! The routing table the request path reads: servers by name with their instances, validated and with
//! upstream peers resolved, built from the control plane's resource set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpgw_proto::ResourceSet;
use mcpgw_proto::ssrf::SsrfPolicy;
use mcpgw_proto::v1::{self, HealthStatus, LoadBalancing, Transport, resource::Kind};
use mcpgw_proto::validate::{self, HashKey};

use crate::balance::{InstanceState, Policy, Selector};
use crate::breaker::BreakerConfig;
use crate::identity::{Credentials, KeyResourceError};
use pingora::upstreams::peer::HttpPeer;
use url::Url;

/// Upstream connection settings stamped on every peer.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    pub pool_idle_timeout: Duration,
    /// How often endpoints that name their host are resolved again (zero: never).
    pub dns_refresh: Duration,
    /// Destinations never connected to, whatever an endpoint's name resolves to (`--ssrf-deny/-allow`).
    pub ssrf: Arc<SsrfPolicy>,
}

/// An immutable routing table; the proxy swaps whole tables, never edits one.
#[derive(Debug, Default)]
pub struct RoutingTable {
    pub version: u64,
    servers: HashMap<String, Arc<Server>>,
    instances: HashMap<String, (Arc<Server>, usize)>,
    credentials: Credentials,
    /// Issuers named in protected resource metadata (`authorization_servers`).
    authorization_servers: Vec<String>,
    /// Custom roles: who may use what.
    access: crate::policy::Policy,
    /// Rate limits.
    rate_limits: Vec<crate::limits::LimitRule>,
    /// What `/mcp` lists and routes.
    catalog: crate::routing::catalog::Catalog,
}

#[derive(Debug)]
pub struct Server {
    pub id: String,
    pub name: Arc<str>,
    /// The tenant whose principals may reach it.
    pub tenant: Arc<str>,
    pub transport: Transport,
    pub policy: Policy,
    pub breaker: BreakerConfig,
    /// What audit records of its calls keep of their arguments.
    pub audit_arguments: mcpgw_proto::v1::AuditArguments,
    /// How `/mcp` names its tools and prompts.
    pub name_prefix: mcpgw_proto::v1::NamePrefix,
    /// Preference among servers offering the same name on `/mcp` (lower first).
    pub priority: i32,
    pub tags: Vec<String>,
    pub instances: Vec<Arc<Instance>>,
    /// Round-robin position (shared by the policies that rotate), carried across tables so that routing
    /// updates do not restart the rotation.
    pub cursor: Arc<AtomicUsize>,
}

/// One upstream endpoint, ready to be connected to.
#[derive(Debug)]
pub struct Instance {
    pub id: Arc<str>,
    pub endpoint: Url,
    pub weight: u32,
    /// Active health as the control plane reports it (`Unknown` takes traffic).
    pub health: HealthStatus,
    /// `Host` header the upstream expects (its own authority).
    pub authority: String,
    /// Path and query of the upstream MCP endpoint.
    pub path_and_query: String,
    /// The resolved peer, or why the endpoint's host could not be resolved.
    pub peer: Result<HttpPeer, String>,
    /// In-flight count and breaker gate, kept across tables while the instance exists.
    pub state: Arc<InstanceState>,
    /// How the gateway authenticates to this upstream (the instance's own credential, else its server's).
    pub credential: Option<UpstreamAuth>,
    /// A stdio instance's command (its endpoint is then `stdio:<program>` and it has no peer).
    pub command: Option<Arc<v1::StdioCommand>>,
}

/// How the gateway authenticates to an upstream.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    /// A fixed header (a static credential, or the token the control plane obtained).
    Header(UpstreamHeader),
    /// A token per caller from the control plane's authorization server, for `audience`.
    Exchange { audience: Arc<str>, scopes: Arc<[String]> },
}

/// A credential header sent upstream; its value is marked sensitive, so it never shows in debug output.
#[derive(Debug, Clone)]
pub struct UpstreamHeader {
    pub name: http::HeaderName,
    pub value: http::HeaderValue,
}

/// Headers a credential may not set: those that frame or route the request (the control plane's list).
use mcpgw_proto::validate::RESERVED_CREDENTIAL_HEADERS as RESERVED_HEADERS;

fn upstream_auth(
    owner: &str,
    c: Option<&v1::UpstreamCredential>,
) -> Result<Option<UpstreamAuth>, TableError> {
    let h = match c.and_then(|c| c.kind.as_ref()) {
        None => return Ok(None),
        Some(v1::upstream_credential::Kind::TokenExchange(x)) => {
            return Ok(Some(UpstreamAuth::Exchange {
                audience: Arc::from(x.audience.as_str()),
                scopes: x.scopes.clone().into(),
            }));
        }
        Some(v1::upstream_credential::Kind::StaticHeader(h)) => h,
    };
    let bad = |reason: &str| TableError::Credential { owner: owner.to_owned(), reason: reason.to_owned() };
    let name =
        http::HeaderName::from_bytes(h.name.trim().as_bytes()).map_err(|_| bad("invalid header name"))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(bad("the header frames or routes the request and cannot carry a credential"));
    }
    let mut value = http::HeaderValue::from_str(&h.value).map_err(|_| bad("invalid header value"))?;
    value.set_sensitive(true);
    Ok(Some(UpstreamAuth::Header(UpstreamHeader { name, value })))
}

impl Server {
    pub fn selector(&self) -> Selector<'_> {
        Selector { policy: &self.policy, instances: &self.instances, cursor: &self.cursor }
    }
}

/// Live per-instance state by (instance id, endpoint), owned by the sync service across table builds.
#[derive(Debug, Default)]
pub struct InstanceStates(Mutex<HashMap<(String, String), Arc<InstanceState>>>);

impl InstanceStates {
    fn get(&self, id: &str, endpoint: &str) -> Arc<InstanceState> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((id.to_owned(), endpoint.to_owned())).or_default().clone()
    }

    /// Forgets instances that are in no table any more.
    fn retain(&self, table: &RoutingTable) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(id, endpoint), _| {
            table.instance(id).is_some_and(|(s, i)| s.instances[i].endpoint.as_str() == endpoint)
        });
    }
}

/// Why a routing table was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("server {id}: invalid name {name:?}: {source}")]
    ServerName { id: String, name: String, source: validate::NameError },
    #[error("servers {first} and {second} share the name {name:?}")]
    DuplicateName { name: String, first: String, second: String },
    #[error("server {id}: unknown transport {value}")]
    Transport { id: String, value: i32 },
    #[error("instance {id}: {source}")]
    Endpoint { id: String, source: validate::EndpointError },
    #[error("server {id}: unknown load_balancing {value}")]
    LoadBalancing { id: String, value: i32 },
    #[error("server {id}: {source}")]
    HashKey { id: String, source: validate::HashKeyError },
    #[error(transparent)]
    ApiKey(#[from] KeyResourceError),
    #[error("{owner}: upstream credential: {reason}")]
    Credential { owner: String, reason: String },
}

/// A validated instance before its peer is resolved.
struct InstanceSpec<'a> {
    proto: &'a v1::Instance,
    url: Url,
    credential: Option<UpstreamAuth>,
}

impl RoutingTable {
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.servers.get(name)
    }

    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.servers.values()
    }

    /// The credentials callers may present.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Who may use what (custom roles).
    pub fn access(&self) -> &crate::policy::Policy {
        &self.access
    }

    /// The rate limits.
    pub fn rate_limits(&self) -> &[crate::limits::LimitRule] {
        &self.rate_limits
    }

    /// The authorization servers clients are pointed at.
    pub fn authorization_servers(&self) -> &[String] {
        &self.authorization_servers
    }

    /// What `/mcp` lists and routes.
    pub fn catalog(&self) -> &crate::routing::catalog::Catalog {
        &self.catalog
    }

    /// Whether an endpoint that names its host resolves to another allowed address now than when its peer
    /// was made (a resolver that fails, or answers only refused addresses, keeps the peers it gave before).
    pub async fn addresses_moved(&self, ssrf: &SsrfPolicy) -> bool {
        for (id, host, port, then) in self.named_peers() {
            let Ok(now) = ssrf.resolve(&url::Host::Domain(&host), port).await else { continue };
            if moved(then, &now) {
                tracing::info!(instance = %id, host, ?then, ?now, "An upstream host resolves to a new address.");
                return true;
            }
        }
        false
    }

    /// Instances whose endpoint names its host: id, host, port, and the address their peer was made for.
    fn named_peers(&self) -> Vec<(Arc<str>, String, u16, Option<SocketAddr>)> {
        let instances = self.servers.values().flat_map(|s| s.instances.iter());
        instances
            .filter(|i| i.command.is_none() && names_host(&i.endpoint))
            .map(|i| {
                let host = i.endpoint.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                let port = i.endpoint.port_or_known_default().unwrap_or(80);
                (i.id.clone(), host, port, i.peer.as_ref().ok().and_then(|p| p._address.as_inet().copied()))
            })
            .collect()
    }

    /// The instance with `id` and its server.
    pub fn instance(&self, id: &str) -> Option<(&Arc<Server>, usize)> {
        self.instances.get(id).map(|(s, i)| (s, *i))
    }

    /// Validates `set` and builds a table, reusing resolved peers of `previous` whose endpoint did not change.
    pub async fn build(
        set: &ResourceSet,
        previous: &RoutingTable,
        states: &InstanceStates,
        settings: &PeerSettings,
    ) -> Result<RoutingTable, TableError> {
        Self::build_resolving(set, previous, states, settings, false).await
    }

    /// [`RoutingTable::build`]; with `reresolve`, endpoints that name their host are resolved again.
    pub async fn build_resolving(
        set: &ResourceSet,
        previous: &RoutingTable,
        states: &InstanceStates,
        settings: &PeerSettings,
        reresolve: bool,
    ) -> Result<RoutingTable, TableError> {
        let valid = validate_set(set)?;
        let mut by_server: HashMap<&str, Vec<Arc<Instance>>> = HashMap::new();
        for spec in valid.instances {
            let server_id = spec.proto.server_id.as_str();
            let reusable = previous
                .instance(&spec.proto.id)
                .map(|(s, i)| &s.instances[i])
                .filter(|old| {
                    old.endpoint == spec.url && old.command.is_none() && spec.proto.command.is_none()
                })
                .filter(|old| old.peer.is_ok() && !(reresolve && names_host(&old.endpoint)));
            let health = valid.health.get(spec.proto.id.as_str()).copied().unwrap_or(HealthStatus::Unknown);
            let state = states.get(&spec.proto.id, spec.url.as_str());
            let instance = match reusable {
                Some(old) => Instance {
                    id: old.id.clone(),
                    endpoint: old.endpoint.clone(),
                    weight: spec.proto.weight.max(1),
                    health,
                    authority: old.authority.clone(),
                    path_and_query: old.path_and_query.clone(),
                    peer: old.peer.clone(),
                    state,
                    credential: spec.credential,
                    command: None,
                },
                None => resolve(spec, health, state, settings).await,
            };
            by_server.entry(server_id).or_default().push(Arc::new(instance));
        }
        let cursors: HashMap<&str, &Arc<AtomicUsize>> =
            previous.servers.values().map(|s| (s.id.as_str(), &s.cursor)).collect();
        let mut table = RoutingTable {
            version: set.version(),
            authorization_servers: valid.credentials.issuer_names(),
            credentials: valid.credentials,
            access: valid.access,
            rate_limits: valid.rate_limits,
            ..Default::default()
        };
        for (s, transport, key) in valid.servers {
            let mut instances = by_server.remove(s.id.as_str()).unwrap_or_default();
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            let weights: Vec<u32> = instances.iter().map(|i| i.weight).collect();
            let server = Arc::new(Server {
                id: s.id.clone(),
                name: Arc::from(s.name.as_str()),
                tenant: Arc::from(if s.tenant_id.is_empty() {
                    crate::identity::DEFAULT_TENANT
                } else {
                    s.tenant_id.as_str()
                }),
                transport,
                policy: Policy::new(s.load_balancing(), key, &weights),
                breaker: BreakerConfig::from_proto(s.circuit_breaker.as_ref()),
                audit_arguments: s.audit_arguments(),
                name_prefix: s.name_prefix(),
                priority: s.priority,
                tags: s.tags.clone(),
                instances,
                cursor: cursors.get(s.id.as_str()).map_or_else(Arc::default, |c| Arc::clone(c)),
            });
            for (i, inst) in server.instances.iter().enumerate() {
                table.instances.insert(inst.id.to_string(), (server.clone(), i));
            }
            table.servers.insert(s.name.clone(), server);
        }
        let servers: Vec<Arc<Server>> = table.servers.values().cloned().collect();
        table.catalog = crate::routing::catalog::Catalog::build(&servers, &valid.catalogs, &previous.catalog);
        states.retain(&table);
        Ok(table)
    }
}

/// A resource set that passed validation.
struct ValidSet<'a> {
    servers: Vec<(&'a v1::Server, Transport, HashKey)>,
    instances: Vec<InstanceSpec<'a>>,
    health: HashMap<&'a str, HealthStatus>,
    credentials: Credentials,
    /// Each server's upstream credential, inherited by instances without their own.
    upstream_credentials: HashMap<&'a str, Option<UpstreamAuth>>,
    access: crate::policy::Policy,
    rate_limits: Vec<crate::limits::LimitRule>,
    /// Discovered catalogs by server id.
    catalogs: HashMap<&'a str, &'a v1::Catalog>,
}

/// Pure checks of a resource set: names, uniqueness, transports, balancing keys, endpoint URLs.
fn validate_set(set: &ResourceSet) -> Result<ValidSet<'_>, TableError> {
    let mut valid = ValidSet {
        servers: Vec::new(),
        instances: Vec::new(),
        health: HashMap::new(),
        credentials: Credentials::default(),
        upstream_credentials: HashMap::new(),
        access: crate::policy::Policy::default(),
        rate_limits: Vec::new(),
        catalogs: HashMap::new(),
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    for resource in set.iter() {
        match &resource.kind {
            Some(Kind::Server(s)) => {
                validate::server_name(&s.name).map_err(|source| TableError::ServerName {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    source,
                })?;
                if let Some(first) = names.insert(&s.name, &s.id) {
                    return Err(TableError::DuplicateName {
                        name: s.name.clone(),
                        first: first.to_owned(),
                        second: s.id.clone(),
                    });
                }
                let transport = match Transport::try_from(s.transport) {
                    Ok(
                        t @ (Transport::StreamableHttp
                        | Transport::Sse
                        | Transport::Websocket
                        | Transport::Stdio),
                    ) => t,
                    _ => return Err(TableError::Transport { id: s.id.clone(), value: s.transport }),
                };
                if LoadBalancing::try_from(s.load_balancing).is_err() {
                    return Err(TableError::LoadBalancing { id: s.id.clone(), value: s.load_balancing });
                }
                let key = validate::hash_key(&s.hash_key)
                    .map_err(|source| TableError::HashKey { id: s.id.clone(), source })?;
                let credential = upstream_auth(&format!("server {}", s.id), s.upstream_credential.as_ref())?;
                valid.upstream_credentials.insert(&s.id, credential);
                valid.servers.push((s, transport, key));
            }
            Some(Kind::Instance(i)) => {
                let url = match &i.command {
                    Some(command) => {
                        url::Url::parse(&format!("{}:{}", validate::STDIO_SCHEME, command.program))
                            .map_err(|e| validate::EndpointError::Parse(e.to_string()))
                    }
                    None if i.endpoint_url.starts_with("ws") => validate::websocket_url(&i.endpoint_url),
                    None => validate::endpoint_url(&i.endpoint_url),
                }
                .map_err(|source| TableError::Endpoint { id: i.id.clone(), source })?;
                let own = upstream_auth(&format!("instance {}", i.id), i.upstream_credential.as_ref())?;
                let credential = match own
                    .or_else(|| valid.upstream_credentials.get(i.server_id.as_str()).cloned().flatten())
                {
                    // Exchanged tokens are for the instance's own URL unless an audience is set.
                    Some(UpstreamAuth::Exchange { audience, scopes }) if audience.is_empty() => {
                        Some(UpstreamAuth::Exchange { audience: Arc::from(i.endpoint_url.as_str()), scopes })
                    }
                    other => other,
                };
                valid.instances.push(InstanceSpec { proto: i, url, credential });
            }
            Some(Kind::InstanceHealth(h)) => {
                valid.health.insert(&h.instance_id, h.status());
            }
            Some(Kind::ApiKey(key)) => valid.credentials.add_api_key(key)?,
            Some(Kind::TrustedIssuer(issuer)) => valid.credentials.add_issuer(issuer)?,
            Some(Kind::Role(role)) => valid.access.add_role(role),
            Some(Kind::RateLimit(limit)) => match crate::limits::LimitRule::from_proto(limit) {
                Some(rule) => valid.rate_limits.push(rule),
                None => {
                    tracing::warn!(id = %limit.id, scope = %limit.scope, "A rate limit this proxy cannot enforce is ignored.")
                }
            },
            Some(Kind::Catalog(catalog)) => {
                valid.catalogs.insert(&catalog.server_id, catalog);
            }
            None => {}
        }
    }
    Ok(valid)
}

async fn resolve(
    spec: InstanceSpec<'_>,
    health: HealthStatus,
    state: Arc<InstanceState>,
    settings: &PeerSettings,
) -> Instance {
    let url = spec.url;
    if let Some(command) = &spec.proto.command {
        return Instance {
            id: Arc::from(spec.proto.id.as_str()),
            endpoint: url,
            weight: spec.proto.weight.max(1),
            health,
            authority: String::new(),
            path_and_query: String::new(),
            peer: Err("a stdio instance is a process, not a network peer".into()),
            state,
            credential: spec.credential,
            command: Some(Arc::new(command.clone())),
        };
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path_and_query = url.path().to_owned();
    if let Some(q) = url.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let tls = matches!(url.scheme(), "https" | "wss");
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let peer = lookup(&settings.ssrf, url.host(), port).await.map(|addr| {
        let mut peer = HttpPeer::new(addr, tls, bare_host);
        peer.options.connection_timeout = Some(settings.connect_timeout);
        peer.options.total_connection_timeout = Some(settings.connect_timeout);
        peer.options.idle_timeout = Some(settings.pool_idle_timeout);
        peer
    });
    if let Err(e) = &peer {
        tracing::warn!(instance = %spec.proto.id, endpoint = %mcpgw_proto::validate::redacted(&url), error = %e, "Upstream host could not be resolved.");
    }
    Instance {
        id: Arc::from(spec.proto.id.as_str()),
        endpoint: url,
        weight: spec.proto.weight.max(1),
        health,
        authority,
        path_and_query,
        peer,
        state,
        credential: spec.credential,
        command: None,
    }
}

/// Whether a peer made for `then` is stale given the addresses its name resolves to `now`.
fn moved(then: Option<SocketAddr>, now: &[SocketAddr]) -> bool {
    !now.is_empty() && then.is_none_or(|then| !now.contains(&then))
}

/// Whether an endpoint names its host (resolved again on `--dns-refresh`) rather than an IP address.
fn names_host(url: &Url) -> bool {
    matches!(url.host(), Some(url::Host::Domain(_)))
}

/// Resolves a host through the SSRF policy (refused addresses are dropped; a host with none left is
/// unreachable, its refusal said in the error), preferring IPv4 (local MCP servers usually bind 127.0.0.1
/// only).
async fn lookup(ssrf: &SsrfPolicy, host: Option<url::Host<&str>>, port: u16) -> Result<SocketAddr, String> {
    let host = host.ok_or("the endpoint has no host")?;
    let addrs = ssrf.resolve(&host, port).await.map_err(|e| e.to_string())?;
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_cannot_set_framing_or_routing_headers() {
        let c = |name: &str, value: &str| v1::UpstreamCredential {
            kind: Some(v1::upstream_credential::Kind::StaticHeader(v1::StaticHeader {
                name: name.into(),
                value: value.into(),
            })),
        };
        assert!(upstream_auth("s", Some(&c("X-Api-Key", "k"))).unwrap().is_some());
        assert!(upstream_auth("s", None).unwrap().is_none());
        for (name, value) in [
            ("host", "x"),
            ("Content-Length", "1"),
            ("mcp-session-id", "x"),
            ("bad name", "x"),
            ("x-k", "a\nb"),
        ] {
            assert!(upstream_auth("s", Some(&c(name, value))).is_err(), "{name}");
        }
        let header = upstream_auth("s", Some(&c("x-api-key", "s3cret"))).unwrap().unwrap();
        assert!(!format!("{header:?}").contains("s3cret"), "the value is sensitive");
    }
    use mcpgw_proto::v1::{Instance as PInstance, Resource, Server as PServer};

    fn server(id: &str, name: &str) -> Resource {
        Resource {
            kind: Some(Kind::Server(PServer {
                id: id.into(),
                name: name.into(),
                transport: Transport::StreamableHttp as i32,
                ..Default::default()
            })),
        }
    }

    fn instance(id: &str, server: &str, url: &str) -> Resource {
        Resource {
            kind: Some(Kind::Instance(PInstance {
                id: id.into(),
                server_id: server.into(),
                endpoint_url: url.into(),
                weight: 1,
                ..Default::default()
            })),
        }
    }

    fn settings(ssrf: SsrfPolicy) -> PeerSettings {
        PeerSettings {
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            dns_refresh: Duration::ZERO,
            ssrf: Arc::new(ssrf),
        }
    }

    #[tokio::test]
    async fn named_hosts_are_checked_for_new_addresses() {
        let set = ResourceSet::new(
            1,
            vec![
                server("s", "a"),
                instance("named", "s", "http://localhost:4000/mcp"),
                instance("literal", "s", "http://127.0.0.1:4001/mcp"),
            ],
        )
        .unwrap();
        let table = RoutingTable::build(
            &set,
            &RoutingTable::default(),
            &InstanceStates::default(),
            &settings(SsrfPolicy::default()),
        )
        .await
        .unwrap();
        let named = table.named_peers();
        assert_eq!(named.len(), 1, "only endpoints naming their host are resolved again: {named:?}");
        assert_eq!((&*named[0].0, named[0].1.as_str(), named[0].2), ("named", "localhost", 4000));
        assert!(
            !table.addresses_moved(&SsrfPolicy::default()).await,
            "localhost still resolves to its peer's address"
        );
        let (a, b): (SocketAddr, SocketAddr) =
            ("127.0.0.1:4000".parse().unwrap(), "127.0.0.2:4000".parse().unwrap());
        assert!(!moved(Some(a), &[b, a]), "still among the answers");
        assert!(moved(Some(a), &[b]), "moved");
        assert!(moved(None, &[a]), "resolves now, did not before");
        assert!(!moved(Some(a), &[]), "no answer keeps the peer");
        let again = RoutingTable::build_resolving(
            &set,
            &table,
            &InstanceStates::default(),
            &settings(SsrfPolicy::default()),
            true,
        )
        .await
        .unwrap();
        assert_eq!(again.named_peers()[0].3, named[0].3);
    }

    #[tokio::test]
    async fn builds_and_reuses_instances() {
        let set = ResourceSet::new(
            3,
            [
                server("s1", "alpha"),
                instance("i1", "s1", "http://127.0.0.1:3001/mcp?x=1"),
                server("s2", "beta"),
            ],
        )
        .unwrap();
        let states = InstanceStates::default();
        let table =
            RoutingTable::build(&set, &RoutingTable::default(), &states, &settings(SsrfPolicy::default()))
                .await
                .unwrap();
        assert_eq!(table.version, 3);
        let alpha = table.server("alpha").unwrap();
        assert_eq!(alpha.instances.len(), 1);
        let i = &alpha.instances[0];
        assert_eq!((i.authority.as_str(), i.path_and_query.as_str()), ("127.0.0.1:3001", "/mcp?x=1"));
        assert!(i.peer.is_ok());
        assert!(table.server("beta").unwrap().instances.is_empty());

        i.state.active.store(2, std::sync::atomic::Ordering::Relaxed);
        let next =
            RoutingTable::build(&set, &table, &states, &settings(SsrfPolicy::default())).await.unwrap();
        let again = &next.server("alpha").unwrap().instances[0];
        assert!(Arc::ptr_eq(&again.state, &i.state), "live state survives a table swap");
        assert!(
            Arc::ptr_eq(&next.server("alpha").unwrap().cursor, &alpha.cursor),
            "the rotation survives a table swap"
        );
        assert_eq!(next.instance("i1").map(|(s, idx)| (s.name.as_ref(), idx)), Some(("alpha", 0)));

        let moved =
            ResourceSet::new(4, [server("s1", "alpha"), instance("i1", "s1", "http://127.0.0.1:3002/mcp")])
                .unwrap();
        let last =
            RoutingTable::build(&moved, &next, &states, &settings(SsrfPolicy::default())).await.unwrap();
        let fresh = &last.server("alpha").unwrap().instances[0];
        assert!(!Arc::ptr_eq(&fresh.state, &i.state), "a new endpoint starts with fresh state");
        assert_eq!(states.0.lock().unwrap().len(), 1, "state of the old endpoint is forgotten");
    }

    #[tokio::test]
    async fn refuses_invalid_tables() {
        let dup = ResourceSet::new(1, [server("s1", "same"), server("s2", "same")]).unwrap();
        assert!(matches!(
            RoutingTable::build(
                &dup,
                &RoutingTable::default(),
                &InstanceStates::default(),
                &settings(SsrfPolicy::default())
            )
            .await,
            Err(TableError::DuplicateName { .. })
        ));
        let bad_name = ResourceSet::new(1, [server("s1", "Bad_Name")]).unwrap();
        assert!(matches!(
            RoutingTable::build(
                &bad_name,
                &RoutingTable::default(),
                &InstanceStates::default(),
                &settings(SsrfPolicy::default())
            )
            .await,
            Err(TableError::ServerName { .. })
        ));
        let bad_url = ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "ftp://x/")]).unwrap();
        assert!(matches!(
            RoutingTable::build(
                &bad_url,
                &RoutingTable::default(),
                &InstanceStates::default(),
                &settings(SsrfPolicy::default())
            )
            .await,
            Err(TableError::Endpoint { .. })
        ));
        let mut s = server("s1", "a");
        if let Some(Kind::Server(p)) = &mut s.kind {
            p.transport = 42;
        }
        let bad_transport = ResourceSet::new(1, [s]).unwrap();
        assert!(matches!(
            RoutingTable::build(
                &bad_transport,
                &RoutingTable::default(),
                &InstanceStates::default(),
                &settings(SsrfPolicy::default())
            )
            .await,
            Err(TableError::Transport { .. })
        ));
    }

    #[tokio::test]
    async fn refused_destinations_get_no_peer() {
        let set = ResourceSet::new(
            1,
            [
                server("s1", "a"),
                instance("named", "s1", "http://localhost:4000/mcp"),
                instance("metadata", "s1", "http://169.254.169.254/mcp"),
                instance("nat64", "s1", "http://[64:ff9b::a9fe:a9fe]/mcp"),
                instance("literal", "s1", "http://127.0.0.1:4001/mcp"),
            ],
        )
        .unwrap();
        let states = InstanceStates::default();
        let error = |table: &RoutingTable, id: &str| {
            let (server, i) = table.instance(id).unwrap();
            server.instances[i].peer.as_ref().err().cloned()
        };
        let open =
            RoutingTable::build(&set, &RoutingTable::default(), &states, &settings(SsrfPolicy::default()))
                .await
                .unwrap();
        assert_eq!(error(&open, "named"), None, "loopback is allowed by default");
        for id in ["metadata", "nat64"] {
            let e = error(&open, id).unwrap_or_default();
            assert!(e.contains("169.254.0.0/16") && e.contains("refused"), "{id}: {e}");
        }
        // A name is checked by what it resolves to, not by how it is spelt.
        let strict = SsrfPolicy::new(&["loopback".into()], &[]).unwrap();
        let closed = RoutingTable::build(&set, &RoutingTable::default(), &states, &settings(strict.clone()))
            .await
            .unwrap();
        for id in ["named", "literal"] {
            let e = error(&closed, id).unwrap_or_default();
            assert!(e.contains("--ssrf-deny"), "{id}: {e}");
        }
        assert!(
            !closed.addresses_moved(&strict).await,
            "a name resolving only to refused addresses has not moved"
        );
    }

    #[tokio::test]
    async fn unresolvable_host_is_kept_with_its_error() {
        let set =
            ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "http://no-such-host.invalid/mcp")])
                .unwrap();
        let table = RoutingTable::build(
            &set,
            &RoutingTable::default(),
            &InstanceStates::default(),
            &settings(SsrfPolicy::default()),
        )
        .await
        .unwrap();
        assert!(table.server("a").unwrap().instances[0].peer.is_err());
    }
}
