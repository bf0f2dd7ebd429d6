//! Background service that holds the gRPC routing stream to the control plane: applies each snapshot or
//! delta, validates the resulting table, swaps it in, and acknowledges (or rejects) the version. When the
//! control plane is away it reconnects with backoff while the proxy keeps serving the last good table.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::routing_discovery_client::RoutingDiscoveryClient;

/// Largest routing update accepted (a full snapshot with every server's catalog).
const MAX_UPDATE_BYTES: usize = 256 * 1024 * 1024;
use mcpgw_proto::v1::{
    Ack, Hello, InstanceObservation, Nack, PassiveHealth, ProxyMessage, RoutingUpdate, proxy_message,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::cache::TableCache;
use super::{PeerSettings, Routes, RoutingTable};
use crate::metrics::METRICS;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// How often the proxy reports its traffic (`ProxyStats`) on the routing stream; the first goes at once.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Keeps [`Routes`] in step with the control plane.
pub struct RoutingSync {
    pub routes: Arc<Routes>,
    pub control_plane: String,
    pub proxy_id: String,
    pub peer_settings: PeerSettings,
    /// Breaker observations to report to the control plane.
    pub passive_health: watch::Receiver<Vec<InstanceObservation>>,
    /// Where the last good table is kept for a cold start without the control plane.
    pub cache: Option<TableCache>,
    /// Trust root of an `https://` control plane (PEM).
    pub control_plane_ca: Option<Vec<u8>>,
    /// `authorization: Bearer <--proxy-token>` presented on the stream, when configured.
    pub proxy_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("routing stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("control plane closed the routing stream")]
    Closed,
}

#[async_trait]
impl BackgroundService for RoutingSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut set = self.load_cache().await;
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut received = false;
            let result = tokio::select! {
                _ = shutdown.changed() => return,
                r = self.session(&mut set, &mut received) => r,
            };
            METRICS.control_plane_connected.set(0);
            if received {
                backoff = BACKOFF_MIN;
            }
            match result {
                Err(SessionError::Stream(status)) if status.code() == tonic::Code::Unauthenticated => {
                    tracing::error!(
                        reason = status.message(),
                        retry_in = ?backoff,
                        serving_version = set.version(),
                        "The control plane refused this proxy (unauthenticated): check --proxy-token."
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, serving_version = set.version(), "Routing stream down; serving the last good table.");
                }
                Ok(()) => {}
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(jitter(backoff)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

impl RoutingSync {
    /// Serves the cached table, if any, until the control plane answers.
    async fn load_cache(&self) -> ResourceSet {
        let Some(cache) = &self.cache else { return ResourceSet::default() };
        let cached = match cache.load() {
            Ok(Some(set)) => set,
            Ok(None) => return ResourceSet::default(),
            Err(error) => {
                tracing::warn!(%error, "Ignoring the cached routing table.");
                return ResourceSet::default();
            }
        };
        match RoutingTable::build(&cached, &RoutingTable::default(), &self.routes.states, &self.peer_settings)
            .await
        {
            Ok(table) => {
                self.routes.store(table);
                METRICS.routing_table_version.set(i64::try_from(cached.version()).unwrap_or(i64::MAX));
                tracing::info!(version = cached.version(), path = %cache.path().display(), "Serving the cached routing table until the control plane answers.");
                cached
            }
            Err(error) => {
                tracing::warn!(%error, "Ignoring the cached routing table.");
                ResourceSet::default()
            }
        }
    }

    /// One connection: Hello, then apply updates until the stream ends.
    async fn session(&self, set: &mut ResourceSet, received: &mut bool) -> Result<(), SessionError> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.control_plane.clone())?;
        if let Some(ca) = &self.control_plane_ca {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let (tx, rx) = mpsc::channel(16);
        let hello = Hello {
            proxy_id: self.proxy_id.clone(),
            applied_version: set.version(),
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        // The receiver lives in the request stream below, so this send cannot fail.
        let _ = tx.send(message(proxy_message::Kind::Hello(hello))).await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(token) = &self.proxy_token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        // A snapshot carries every server's catalog (each at most 4 MiB): far above tonic's 4 MiB default.
        let mut updates = RoutingDiscoveryClient::new(channel)
            .max_decoding_message_size(MAX_UPDATE_BYTES)
            .stream_routes(request)
            .await?
            .into_inner();
        METRICS.control_plane_connected.set(1);
        tracing::info!(control_plane = %self.control_plane, "Routing stream connected.");
        let mut passive = self.passive_health.clone();
        passive.mark_changed();
        let mut passive_open = true;
        let mut stats = tokio::time::interval(STATS_INTERVAL);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let refresh = self.peer_settings.dns_refresh;
        let mut dns = tokio::time::interval(if refresh.is_zero() {
            Duration::from_secs(86_400 * 365)
        } else {
            refresh
        });
        dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        dns.tick().await;
        loop {
            let update = tokio::select! {
                _ = dns.tick(), if !refresh.is_zero() => {
                    self.refresh_addresses(set).await;
                    continue;
                }
                update = updates.message() => match update? {
                    Some(update) => update,
                    None => break,
                },
                _ = stats.tick() => {
                    let report = proxy_message::Kind::Stats(crate::metrics::stats());
                    if tx.send(message(report)).await.is_err() {
                        break;
                    }
                    continue;
                }
                changed = passive.changed(), if passive_open => {
                    if changed.is_err() {
                        passive_open = false;
                        continue;
                    }
                    let instances = passive.borrow_and_update().clone();
                    let report = proxy_message::Kind::PassiveHealth(PassiveHealth { instances });
                    if tx.send(message(report)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            *received = true;
            let reply = match self.apply(set, &update).await {
                Ok(()) => proxy_message::Kind::Ack(Ack { version: update.version }),
                Err(reason) => {
                    METRICS.routing_updates.with_label_values(&["rejected"]).inc();
                    tracing::error!(version = update.version, %reason, "Routing update rejected; keeping the current table.");
                    proxy_message::Kind::Nack(Nack { version: update.version, reason })
                }
            };
            if tx.send(message(reply)).await.is_err() {
                break;
            }
        }
        Err(SessionError::Closed)
    }

    /// Resolves the upstream host names again; when one moved, swaps in a table with new peers for every
    /// named host (same version: nothing else changed). Connections already open stay where they are.
    async fn refresh_addresses(&self, set: &ResourceSet) {
        let current = self.routes.current();
        if !current.addresses_moved(&self.peer_settings.ssrf).await {
            return;
        }
        match RoutingTable::build_resolving(set, &current, &self.routes.states, &self.peer_settings, true)
            .await
        {
            Ok(table) => self.routes.store(table),
            Err(error) => tracing::warn!(%error, "Could not rebuild the routing table with new addresses."),
        }
    }

    /// Applies one update to `set` and swaps in the table built from it; `set` is untouched on error.
    async fn apply(&self, set: &mut ResourceSet, update: &RoutingUpdate) -> Result<(), String> {
        let next = set.apply(update).map_err(|e| e.to_string())?;
        let table =
            RoutingTable::build(&next, &self.routes.current(), &self.routes.states, &self.peer_settings)
                .await
                .map_err(|e| e.to_string())?;
        self.routes.store(table);
        if let Some(cache) = &self.cache
            && let Err(error) = cache.store(&next).await
        {
            tracing::warn!(%error, "Could not save the routing table for a cold start.");
        }
        *set = next;
        METRICS.routing_table_version.set(i64::try_from(update.version).unwrap_or(i64::MAX));
        METRICS.routing_updates.with_label_values(&["applied"]).inc();
        tracing::info!(
            version = update.version,
            snapshot = update.snapshot,
            upserts = update.upserts.len(),
            removals = update.removals.len(),
            "Routing table applied."
        );
        Ok(())
    }
}

fn message(kind: proxy_message::Kind) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

/// `d` scaled by a random factor in [0.5, 1.0) so proxies do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    d.mul_f64(0.5 + (random % 1000) as f64 / 2000.0)
}
