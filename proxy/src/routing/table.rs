//! The routing table the request path reads: servers by name with their instances, validated and with
//! upstream peers resolved, built from the control plane's resource set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::{self, Transport, resource::Kind};
use mcpgw_proto::validate;
use pingora::upstreams::peer::HttpPeer;
use url::Url;

/// Upstream connection settings stamped on every peer.
#[derive(Debug, Clone, Copy)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept for reuse.
    pub pool_idle_timeout: Duration,
}

/// An immutable routing table; the proxy swaps whole tables, never edits one.
#[derive(Debug, Default)]
pub struct RoutingTable {
    pub version: u64,
    servers: HashMap<String, Arc<Server>>,
}

#[derive(Debug)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub transport: Transport,
    pub instances: Vec<Arc<Instance>>,
}

/// One upstream endpoint, ready to be connected to.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    pub endpoint: Url,
    pub weight: u32,
    /// `Host` header the upstream expects (its own authority).
    pub authority: String,
    /// Path and query of the upstream MCP endpoint.
    pub path_and_query: String,
    /// The resolved peer, or why the endpoint's host could not be resolved.
    pub peer: Result<HttpPeer, String>,
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
}

/// A validated instance before its peer is resolved.
struct InstanceSpec<'a> {
    proto: &'a v1::Instance,
    url: Url,
}

impl RoutingTable {
    pub fn server(&self, name: &str) -> Option<&Arc<Server>> {
        self.servers.get(name)
    }

    pub fn servers(&self) -> impl Iterator<Item = &Arc<Server>> {
        self.servers.values()
    }

    /// Validates `set` and builds a table, reusing resolved instances of `previous` that did not change.
    pub async fn build(
        set: &ResourceSet,
        previous: &RoutingTable,
        settings: PeerSettings,
    ) -> Result<RoutingTable, TableError> {
        let (servers, instances) = validate_set(set)?;
        let reusable: HashMap<&str, &Arc<Instance>> =
            previous.servers.values().flat_map(|s| &s.instances).map(|i| (i.id.as_str(), i)).collect();
        let mut by_server: HashMap<&str, Vec<Arc<Instance>>> = HashMap::new();
        for spec in instances {
            let server_id = spec.proto.server_id.as_str();
            let instance = match reusable.get(spec.proto.id.as_str()) {
                Some(old)
                    if old.endpoint == spec.url && old.weight == spec.proto.weight && old.peer.is_ok() =>
                {
                    Arc::clone(old)
                }
                _ => Arc::new(resolve(spec, settings).await),
            };
            by_server.entry(server_id).or_default().push(instance);
        }
        let servers = servers
            .into_iter()
            .map(|(s, transport)| {
                let instances = by_server.remove(s.id.as_str()).unwrap_or_default();
                let server = Server { id: s.id.clone(), name: s.name.clone(), transport, instances };
                (s.name.clone(), Arc::new(server))
            })
            .collect();
        Ok(RoutingTable { version: set.version(), servers })
    }
}

/// Pure checks of a resource set: names, uniqueness, transports, endpoint URLs.
#[allow(clippy::type_complexity)]
fn validate_set(
    set: &ResourceSet,
) -> Result<(Vec<(&v1::Server, Transport)>, Vec<InstanceSpec<'_>>), TableError> {
    let mut servers = Vec::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut instances = Vec::new();
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
                    Ok(t @ (Transport::StreamableHttp | Transport::Sse)) => t,
                    _ => return Err(TableError::Transport { id: s.id.clone(), value: s.transport }),
                };
                servers.push((s, transport));
            }
            Some(Kind::Instance(i)) => {
                let url = validate::endpoint_url(&i.endpoint_url)
                    .map_err(|source| TableError::Endpoint { id: i.id.clone(), source })?;
                instances.push(InstanceSpec { proto: i, url });
            }
            // Health is applied by the instance selection; nothing to validate here.
            Some(Kind::InstanceHealth(_)) | None => {}
        }
    }
    Ok((servers, instances))
}

async fn resolve(spec: InstanceSpec<'_>, settings: PeerSettings) -> Instance {
    let url = spec.url;
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
    let tls = url.scheme() == "https";
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let peer = lookup(&bare_host, port).await.map(|addr| {
        let mut peer = HttpPeer::new(addr, tls, bare_host);
        peer.options.connection_timeout = Some(settings.connect_timeout);
        peer.options.total_connection_timeout = Some(settings.connect_timeout);
        peer.options.idle_timeout = Some(settings.pool_idle_timeout);
        peer
    });
    if let Err(e) = &peer {
        tracing::warn!(instance = %spec.proto.id, endpoint = %url, error = %e, "Upstream host could not be resolved.");
    }
    Instance {
        id: spec.proto.id.clone(),
        endpoint: url,
        weight: spec.proto.weight,
        authority,
        path_and_query,
        peer,
    }
}

/// Resolves a host, preferring IPv4 (local MCP servers usually bind 127.0.0.1 only).
async fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| e.to_string())?.collect();
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

    const SETTINGS: PeerSettings =
        PeerSettings { connect_timeout: Duration::from_secs(1), pool_idle_timeout: Duration::from_secs(1) };

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
        let table = RoutingTable::build(&set, &RoutingTable::default(), SETTINGS).await.unwrap();
        assert_eq!(table.version, 3);
        let alpha = table.server("alpha").unwrap();
        assert_eq!(alpha.instances.len(), 1);
        let i = &alpha.instances[0];
        assert_eq!((i.authority.as_str(), i.path_and_query.as_str()), ("127.0.0.1:3001", "/mcp?x=1"));
        assert!(i.peer.is_ok());
        assert!(table.server("beta").unwrap().instances.is_empty());

        let next = RoutingTable::build(&set, &table, SETTINGS).await.unwrap();
        assert!(Arc::ptr_eq(&next.server("alpha").unwrap().instances[0], i), "unchanged instance is reused");
    }

    #[tokio::test]
    async fn refuses_invalid_tables() {
        let dup = ResourceSet::new(1, [server("s1", "same"), server("s2", "same")]).unwrap();
        assert!(matches!(
            RoutingTable::build(&dup, &RoutingTable::default(), SETTINGS).await,
            Err(TableError::DuplicateName { .. })
        ));
        let bad_name = ResourceSet::new(1, [server("s1", "Bad_Name")]).unwrap();
        assert!(matches!(
            RoutingTable::build(&bad_name, &RoutingTable::default(), SETTINGS).await,
            Err(TableError::ServerName { .. })
        ));
        let bad_url = ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "ftp://x/")]).unwrap();
        assert!(matches!(
            RoutingTable::build(&bad_url, &RoutingTable::default(), SETTINGS).await,
            Err(TableError::Endpoint { .. })
        ));
        let mut s = server("s1", "a");
        if let Some(Kind::Server(p)) = &mut s.kind {
            p.transport = 42;
        }
        let bad_transport = ResourceSet::new(1, [s]).unwrap();
        assert!(matches!(
            RoutingTable::build(&bad_transport, &RoutingTable::default(), SETTINGS).await,
            Err(TableError::Transport { .. })
        ));
    }

    #[tokio::test]
    async fn unresolvable_host_is_kept_with_its_error() {
        let set =
            ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "http://no-such-host.invalid/mcp")])
                .unwrap();
        let table = RoutingTable::build(&set, &RoutingTable::default(), SETTINGS).await.unwrap();
        assert!(table.server("a").unwrap().instances[0].peer.is_err());
    }
}
