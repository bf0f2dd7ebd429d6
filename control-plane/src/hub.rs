//! The routing hub: builds the routing table from the database and publishes it to every proxy stream.
//!
//! Changes flow DB → hub → proxies: a committed mutation bumps `routing_state.version`; `refresh()` reads
//! the version, all servers and all API keys in one snapshot and publishes the new set on a watch channel, which every
//! proxy stream turns into a delta. REST handlers refresh right after their commit; a poller refreshes when
//! another replica changed the version.

use std::sync::Arc;
use std::time::Duration;

use mcpgw_proto::{ApplyError, ResourceSet};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use crate::db::{DbError, DbPool, store};
use crate::model;
use crate::proxies::ProxyRegistry;
use mcpgw_proto::v1::HealthStatus;

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
    // Serializes refreshes so a slower, older read never publishes over a newer one.
    refresh_lock: Mutex<()>,
    proxies: ProxyRegistry,
}

impl RoutingHub {
    /// A hub with an empty table (version 0); call `refresh()` before serving.
    pub fn new(pool: DbPool) -> Arc<Self> {
        let (current, _) = watch::channel(Arc::new(ResourceSet::default()));
        Arc::new(Self { pool, current, refresh_lock: Mutex::new(()), proxies: ProxyRegistry::default() })
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

    /// The proxies connected to this replica.
    pub fn proxies(&self) -> &ProxyRegistry {
        &self.proxies
    }

    /// Reads the registry and publishes it when its version is newer than the published one; returns the
    /// published version.
    pub async fn refresh(&self) -> Result<u64, HubError> {
        let _serial = self.refresh_lock.lock().await;
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let snapshot = store::routing_snapshot(&mut conn).await?;
        drop(conn);
        let version = snapshot.version;
        let version = u64::try_from(version).map_err(|_| HubError::BadVersion(version))?;
        let published = self.current.borrow().version();
        if version <= published {
            return Ok(published);
        }
        let resources = snapshot.servers.iter().flat_map(|server| {
            let instances = snapshot.instances.get(&server.id).map(Vec::as_slice).unwrap_or_default();
            model::resources(server, instances, |instance| {
                match snapshot.health.get(&instance.id)?.as_str() {
                    "healthy" => Some(HealthStatus::Healthy),
                    "unhealthy" => Some(HealthStatus::Unhealthy),
                    _ => None,
                }
            })
        });
        let keys = snapshot.api_keys.iter().map(|key| key.resource());
        let set = ResourceSet::new(version, resources.chain(keys))?;
        tracing::debug!(version, resources = set.len(), "Publishing a new routing table.");
        self.current.send_replace(Arc::new(set));
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
