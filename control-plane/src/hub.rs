//! The routing hub: builds the routing table from the database and publishes it to every proxy stream.
//!
//! Changes flow DB → hub → proxies: a committed mutation bumps `routing_state.version`; `refresh()` reads
//! the version, all servers, API keys, upstream credentials and trusted issuers in one snapshot and
//! publishes the new set on a watch channel, which every proxy stream turns into a delta. REST handlers
//! refresh right after their commit; a poller refreshes when another replica changed the version.
//!
//! Each server with a successful discovery also publishes its `Catalog`. The hub keeps the catalogs it
//! built, by server, with the stored digest they were read at: a refresh reads every digest but the items
//! only of the servers whose digest moved, so a health change does not read every catalog again.
//!
//! The hub is the one place where upstream credentials are opened (with `--secrets-key`): the published
//! set carries them to the proxies, and discovery and health checks take theirs from it
//! (`upstream_credential`), so they authenticate exactly as the proxies do; likewise stdio instances'
//! secret environments, merged into the published commands (`stdio_command`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use mcpgw_proto::{ApplyError, ResourceSet};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{DbError, DbPool, store};
use crate::mcp::{Credential, StdioCommand};
use crate::model;
use crate::proxies::ProxyRegistry;
use crate::secrets::SecretsKey;
use mcpgw_proto::v1::{self, HealthStatus, ResourceKind, resource::Kind};

/// How often the poller checks `routing_state.version`: the safety net behind the LISTEN/NOTIFY listener
/// (`notify`), which normally delivers changes made through other replicas within milliseconds.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Why a refresh failed; the published table stays as it was.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the registry does not form a valid routing table: {0}")]
    Table(#[from] ApplyError),
    #[error("routing_state.version is negative ({0})")]
    BadVersion(i64),
}

impl From<diesel::result::Error> for HubError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Holds the current routing table and the proxies that receive it.
pub struct RoutingHub {
    pool: DbPool,
    current: watch::Sender<Arc<ResourceSet>>,
    /// Serializes refreshes so a slower, older read never publishes over a newer one; holds the catalogs
    /// built so far (evicted when their server has no successful discovery any more).
    refresh_lock: Mutex<model::CatalogCache>,
    proxies: ProxyRegistry,
    /// Opens the stored upstream credentials; without it they are left out of the table.
    secrets: Option<SecretsKey>,
    /// The issuer of the control plane's own authorization server, once it is on: its published signing
    /// keys travel to the proxies as a trusted issuer.
    own_issuer: OnceLock<String>,
    /// The authorization server (weak: it holds the hub), for token exchange and service tokens.
    authorization: OnceLock<Weak<crate::oauth::AuthServer>>,
    /// Redis, when configured: the buckets of global rate limits.
    redis: OnceLock<crate::api::RedisPool>,
    /// Where this replica's REST API listens (for `RegisterServer`, which goes through it).
    rest_addr: OnceLock<std::net::SocketAddr>,
    /// Audit writes: `--audit-retention` and the daily partitions known to exist.
    audit: store::audit::AuditLog,
}

impl RoutingHub {
    /// A hub with an empty table (version 0) that opens upstream credentials with `secrets`; call
    /// `refresh()` before serving.
    pub fn new(pool: DbPool, secrets: Option<SecretsKey>) -> Arc<Self> {
        let (current, _) = watch::channel(Arc::new(ResourceSet::default()));
        Arc::new(Self {
            pool,
            current,
            refresh_lock: Mutex::new(model::CatalogCache::new()),
            proxies: ProxyRegistry::default(),
            secrets,
            own_issuer: OnceLock::new(),
            authorization: OnceLock::new(),
            redis: OnceLock::new(),
            rest_addr: OnceLock::new(),
            audit: store::audit::AuditLog::default(),
        })
    }

    /// Connects the authorization server (once).
    pub fn set_authorization_server(&self, server: &Arc<crate::oauth::AuthServer>) {
        let _ = self.authorization.set(Arc::downgrade(server));
    }

    /// The authorization server, when it is on.
    pub fn authorization_server(&self) -> Option<Arc<crate::oauth::AuthServer>> {
        self.authorization.get()?.upgrade()
    }

    /// Connects Redis (once), for the budgets of global rate limits.
    pub fn set_redis(&self, redis: crate::api::RedisPool) {
        let _ = self.redis.set(redis);
    }

    /// Records where the REST API listens (once); an unspecified address is reached on loopback.
    pub fn set_rest_addr(&self, mut addr: std::net::SocketAddr) {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = self.rest_addr.set(addr);
    }

    /// Where the REST API listens, once serving.
    pub fn rest_addr(&self) -> Option<std::net::SocketAddr> {
        self.rest_addr.get().copied()
    }

    /// Redis, when configured.
    pub fn redis(&self) -> Option<&crate::api::RedisPool> {
        self.redis.get()
    }

    /// Turns on publishing the authorization server's keys as the trusted issuer `issuer` (once).
    pub fn set_own_issuer(&self, issuer: String) {
        let _ = self.own_issuer.set(issuer);
    }

    /// Whether the table as published now has `instance_id` (an instance committed a moment ago may not
    /// be published yet, nor its credential).
    pub fn knows_instance(&self, instance_id: uuid::Uuid) -> bool {
        self.current().get(ResourceKind::Instance, &instance_id.to_string()).is_some()
    }

    /// The credential the proxies present to `instance_id`: its own, else its server's (from the table as
    /// published now).
    pub fn upstream_credential(&self, instance_id: uuid::Uuid) -> Option<Credential> {
        let set = self.current();
        let Some(Kind::Instance(instance)) =
            set.get(ResourceKind::Instance, &instance_id.to_string()).and_then(|r| r.kind.as_ref())
        else {
            return None;
        };
        let credential = instance.upstream_credential.as_ref().or_else(|| {
            match set.get(ResourceKind::Server, &instance.server_id)?.kind.as_ref()? {
                Kind::Server(server) => server.upstream_credential.as_ref(),
                _ => None,
            }
        })?;
        if let Some(v1::upstream_credential::Kind::TokenExchange(exchange)) = &credential.kind {
            // No caller here: the control plane presents a token of its own for the same audience.
            let audience =
                if exchange.audience.is_empty() { &instance.endpoint_url } else { &exchange.audience };
            let token = self.authorization_server()?.service_token(audience, &exchange.scopes)?;
            return Credential::bearer(&token);
        }
        Credential::from_proto(credential)
    }

    /// The command the proxies start for the stdio instance `instance_id` (secret environment included),
    /// from the table as published now; `None` for other instances and unpublished ones.
    pub fn stdio_command(&self, instance_id: uuid::Uuid) -> Option<StdioCommand> {
        let set = self.current();
        match set.get(ResourceKind::Instance, &instance_id.to_string())?.kind.as_ref()? {
            Kind::Instance(instance) => instance.command.as_ref().map(StdioCommand::from_proto),
            _ => None,
        }
    }

    /// The table as published now.
    pub fn current(&self) -> Arc<ResourceSet> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every published table (the latest one when several come quickly).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ResourceSet>> {
        self.current.subscribe()
    }

    /// The database pool (passive health reports are written through it).
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// The audit log's retention and known partitions (audit batches are written through it).
    pub fn audit(&self) -> &store::audit::AuditLog {
        &self.audit
    }

    /// The proxies connected to this replica.
    pub fn proxies(&self) -> &ProxyRegistry {
        &self.proxies
    }

    /// Reads the registry and publishes it when its version is newer than the published one; returns the
    /// published version.
    pub async fn refresh(&self) -> Result<u64, HubError> {
        let mut catalogs = self.refresh_lock.lock().await;
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let mut snapshot = store::routing_snapshot(&mut conn, &catalogs).await?;
        drop(conn);
        // The cache follows the database: a read catalog is right for its digest whatever is published.
        catalogs.retain(|id, _| snapshot.catalog_digests.contains_key(id));
        if !snapshot.catalogs.is_empty() {
            let names: HashMap<Uuid, &str> =
                snapshot.servers.iter().map(|s| (s.id, s.name.as_str())).collect();
            for (id, stored) in snapshot.catalogs.drain() {
                let catalog = stored.to_proto(id, names.get(&id).copied().unwrap_or_default());
                catalogs.insert(id, (stored.digest.unwrap_or_default(), catalog));
            }
        }
        let version = snapshot.version;
        let version = u64::try_from(version).map_err(|_| HubError::BadVersion(version))?;
        let published = self.current.borrow().version();
        if version <= published {
            return Ok(published);
        }
        let credentials = snapshot.credentials.open_all(self.secrets.as_ref(), &snapshot.tokens);
        let secret_env = snapshot.credentials.open_secret_env(self.secrets.as_ref());
        let resources = snapshot.servers.iter().flat_map(|server| {
            let instances = snapshot.instances.get(&server.id).map(Vec::as_slice).unwrap_or_default();
            let status = |instance: &model::InstanceRow| match snapshot.health.get(&instance.id)?.as_str() {
                "healthy" => Some(HealthStatus::Healthy),
                "unhealthy" => Some(HealthStatus::Unhealthy),
                _ => None,
            };
            let catalog = catalogs.get(&server.id).map(|(_, catalog)| model::catalog_resource(catalog));
            model::resources(server, instances, status, &credentials, &secret_env).into_iter().chain(catalog)
        });
        let keys = snapshot.api_keys.iter().map(|key| key.resource());
        let issuers = snapshot.issuers.iter().filter_map(|issuer| issuer.resource());
        let own = self
            .own_issuer
            .get()
            // A registered trusted issuer of the same name wins (proxies key issuers by name).
            .filter(|own| {
                !snapshot.signing_keys.is_empty() && !snapshot.issuers.iter().any(|i| &&i.issuer == own)
            })
            .map(|own| model::own_issuer_resource(own, &snapshot.signing_keys));
        let roles = snapshot.roles.iter().map(|role| role.resource());
        let limits = snapshot.rate_limits.iter().map(|limit| limit.resource());
        let set = ResourceSet::new(
            version,
            resources.chain(keys).chain(issuers).chain(own).chain(roles).chain(limits),
        )?;
        tracing::debug!(version, resources = set.len(), "Publishing a new routing table.");
        self.current.send_replace(Arc::new(set));
        crate::metrics::METRICS.routing_published();
        Ok(version)
    }

    /// Polls `routing_state.version` every `interval` and refreshes when it moved, until `shutdown`.
    pub async fn poll(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.poll_once().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("The routing poller reaches the database again.");
                }
                Ok(()) => {}
                // One warning per outage, not one per second.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "The routing poller cannot read the database; proxies keep the last table.");
                }
                Err(_) => {}
            }
        }
    }

    async fn poll_once(&self) -> Result<(), HubError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let version = store::routing_version(&mut conn).await?;
        drop(conn);
        if u64::try_from(version).is_ok_and(|v| v != self.current.borrow().version()) {
            self.refresh().await?;
        }
        Ok(())
    }
}
