//! Capability discovery: act as an MCP client to a server, list its tools, resources, resource templates
//! and prompts across every page, and store them. Runs on registration (`auto_discover`), on demand
//! (`POST /api/v1/servers/{id}/refresh`), periodically on the leader, and on `list_changed` (`watch`). The server's instances are tried
//! healthy first; when none answers, the last known capabilities stay, with the failed attempt recorded.
//! `watch` rediscovers servers when they announce a list change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{DbPool, store};
use crate::hub::RoutingHub;
use crate::mcp::lists::{self, Capabilities};
use crate::mcp::{McpClient, ServerHello};
use crate::metrics::METRICS;
use crate::model::{HealthStatus, TransportType};

pub mod watch;

/// How long one instance may take to be discovered (handshake and every page).
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Servers discovered at once by the periodic refresh.
const PERIODIC_CONCURRENCY: usize = 4;

/// Why a discovery did not store new capabilities.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no server has id {0}")]
    NotFound(Uuid),
    #[error("the server has no instance to discover")]
    NoInstance,
    #[error("{0}")]
    Failed(String),
    #[error("database: {0}")]
    Db(String),
}

/// What a successful discovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub tools: usize,
    pub resources: usize,
    pub resource_templates: usize,
    pub prompts: usize,
    pub pages: usize,
    pub duration: Duration,
    /// Whether the listing differed from the stored one: it was stored and the routing version moved
    /// (the hub must refresh to publish the new `Catalog`). An equal listing rewrites nothing.
    pub changed: bool,
}

/// What asking a server's instances gave, not stored yet.
#[derive(Debug, Clone)]
pub enum Probe {
    /// An instance answered with every list.
    Found { hello: ServerHello, caps: Capabilities, duration: Duration },
    /// No instance did; the last one's error.
    Failed { error: String, duration: Duration },
}

impl Probe {
    /// Stores the outcome: the capabilities found (replacing the stored ones when they differ, which moves
    /// the routing version: see `Found::changed`), or the failed attempt (keeping them, and answering
    /// `Failed`).
    pub async fn save(&self, conn: &mut AsyncPgConnection, server_id: Uuid) -> Result<Found, DiscoverError> {
        let db = |e: diesel::result::Error| DiscoverError::Db(e.to_string());
        let ms = |d: &Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        match self {
            Self::Found { hello, caps, duration } => {
                use store::discovery::Saved;
                let changed = match store::discovery::save_ok(conn, server_id, hello, caps, ms(duration))
                    .await
                    .map_err(db)?
                {
                    Saved::Gone => return Err(DiscoverError::NotFound(server_id)),
                    Saved::Unchanged => false,
                    Saved::Changed(_) => true,
                };
                Ok(Found {
                    changed,
                    tools: caps.tools.len(),
                    resources: caps.resources.len(),
                    resource_templates: caps.resource_templates.len(),
                    prompts: caps.prompts.len(),
                    pages: caps.pages,
                    duration: *duration,
                })
            }
            Self::Failed { error, duration } => {
                store::discovery::save_error(conn, server_id, error, ms(duration)).await.map_err(db)?;
                Err(DiscoverError::Failed(error.clone()))
            }
        }
    }
}

/// Discovers servers and stores what it finds.
#[derive(Clone)]
pub struct Discoverer {
    pub pool: DbPool,
    pub client: McpClient,
    /// The routing table: each instance is discovered with the upstream credential the proxies present.
    pub hub: Arc<RoutingHub>,
}

impl Discoverer {
    /// The MCP client as it must speak to `instance_id`: with its upstream credential, if any, and for a
    /// stdio instance the command the proxies start.
    pub fn client_for(&self, instance_id: Uuid) -> McpClient {
        self.client
            .for_instance(self.hub.upstream_credential(instance_id), self.hub.stdio_command(instance_id))
    }

    /// Discovers one server now and stores what it found (or the failed attempt); a changed catalog is
    /// published at once (other replicas hear of it through NOTIFY).
    pub async fn discover(&self, server_id: Uuid) -> Result<Found, DiscoverError> {
        let probe = self.probe(server_id).await?;
        let mut conn = self.pool.get().await.map_err(|e| DiscoverError::Db(e.to_string()))?;
        let found = probe.save(&mut conn, server_id).await?;
        drop(conn);
        if found.changed {
            self.publish().await;
        }
        Ok(found)
    }

    /// Publishes a committed catalog change; a failure is only logged (the poller publishes it shortly).
    pub async fn publish(&self) {
        if let Err(error) = self.hub.refresh().await {
            tracing::debug!(%error, "Could not publish a discovered catalog; the poller will retry.");
        }
    }

    /// Asks the server's instances (healthy ones first) for their capabilities, storing nothing: what
    /// `Probe::save` then stores, in a transaction of the caller's choosing.
    pub async fn probe(&self, server_id: Uuid) -> Result<Probe, DiscoverError> {
        let started = Instant::now();
        let span = if crate::telemetry::exporting() {
            tracing::info_span!("discovery", mcpgw.server_id = %server_id, mcpgw.outcome = tracing::field::Empty)
        } else {
            tracing::Span::none()
        };
        let probe = crate::telemetry::traced(span.clone(), None, self.ask(server_id)).await;
        let outcome = match &probe {
            Ok(Probe::Found { .. }) => "found",
            Ok(Probe::Failed { .. }) => "failed",
            Err(_) => "error",
        };
        span.record("mcpgw.outcome", outcome);
        METRICS.discovery(outcome, started.elapsed());
        probe
    }

    async fn ask(&self, server_id: Uuid) -> Result<Probe, DiscoverError> {
        let started = Instant::now();
        let db = |e: &dyn std::fmt::Display| DiscoverError::Db(e.to_string());
        let mut conn = self.pool.get().await.map_err(|e| db(&e))?;
        let (server, instances) = store::get(&mut conn, server_id)
            .await
            .map_err(|e| db(&e))?
            .ok_or(DiscoverError::NotFound(server_id))?;
        let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
        let health = store::health::index(&mut conn, &ids).await.map_err(|e| db(&e))?;
        drop(conn);
        if instances.is_empty() {
            return Err(DiscoverError::NoInstance);
        }
        let rank = |s: HealthStatus| match s {
            HealthStatus::Healthy => 0,
            HealthStatus::Unknown => 1,
            HealthStatus::Unhealthy => 2,
        };
        let mut ordered = instances.clone();
        ordered.sort_by_key(|i| rank(health.status(i.id)));
        let transport = TransportType::parse(&server.transport_type).unwrap_or(TransportType::StreamableHttp);
        let mut last_error = String::new();
        for instance in &ordered {
            let attempt = tokio::time::timeout(DISCOVERY_TIMEOUT, async {
                let mut conn =
                    self.client_for(instance.id).connect(&instance.endpoint_url, transport).await?;
                let caps = lists::capabilities(&mut conn).await;
                let hello = conn.hello().clone();
                conn.close().await;
                caps.map(|caps| (hello, caps))
            })
            .await;
            match attempt {
                Ok(Ok((hello, caps))) => {
                    tracing::debug!(server = %server.name, tools = caps.tools.len(), pages = caps.pages,
                        duration = ?started.elapsed(), "Discovered a server.");
                    return Ok(Probe::Found { hello, caps, duration: started.elapsed() });
                }
                Ok(Err(e)) => last_error = format!("{}: {e}", instance.endpoint_url),
                Err(_) => {
                    last_error = format!("{}: no answer within {DISCOVERY_TIMEOUT:?}", instance.endpoint_url);
                }
            }
        }
        Ok(Probe::Failed { error: last_error, duration: started.elapsed() })
    }

    /// Discovers one server in the background (after a registration); failures are recorded and logged.
    pub fn spawn(&self, server_id: Uuid) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.discover(server_id).await {
                tracing::info!(%server_id, %error, "Discovery after registration failed; it is retried periodically.");
            }
        });
    }

    /// Rediscovers every server every `interval` until `stop` (the leader runs this).
    pub async fn periodic(self, interval: Option<Duration>, stop: CancellationToken) {
        let Some(interval) = interval else { return };
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let ids: Vec<Uuid> = match self.pool.get().await {
                Ok(mut conn) => store::list(&mut conn)
                    .await
                    .map(|s| s.into_iter().map(|s| s.id).collect())
                    .unwrap_or_default(),
                Err(_) => continue,
            };
            futures_util::stream::iter(ids)
                .for_each_concurrent(PERIODIC_CONCURRENCY, |id| {
                    let this = self.clone();
                    async move {
                        if let Err(error) = this.discover(id).await {
                            tracing::debug!(server_id = %id, %error, "Periodic discovery failed.");
                        }
                    }
                })
                .await;
        }
    }
}
