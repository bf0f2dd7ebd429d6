//! Active health checks, run by the elected leader only (`leader`): every instance of every server with
//! checks enabled is probed at its interval, with bounded concurrency. Results are stored with recent
//! history; a status change bumps the routing version in the same transaction, so every proxy gets an
//! `InstanceHealth` delta (this replica publishes at once, the others on the NOTIFY).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::HealthDefaults;
use crate::db::{DbPool, store};
use crate::hub::RoutingHub;
use crate::mcp::{Credential, Era, McpClient, StdioCommand};
use crate::model::{HealthRecord, InstanceHealthRow, TransportType};

pub mod leader;
mod probe;
mod state;

pub use probe::{ProbeResult, probe};
pub use state::{Thresholds, Tracker};

/// Probes kept per instance in `instance_health.history`.
pub const HISTORY_LEN: usize = 20;
/// How often the checker looks for due probes.
const TICK: Duration = Duration::from_millis(20);
/// How often the checker re-reads the registry when the routing version moved.
const RELOAD: Duration = Duration::from_millis(250);
/// Passive reports older than this are dropped (their proxy is gone); checked every minute.
const PASSIVE_TTL: Duration = Duration::from_secs(600);

/// What to probe for one instance, with the server's settings resolved against the defaults.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    url: String,
    /// The upstream credential the proxies present to this instance; the probe presents it too.
    credential: Option<Credential>,
    /// A stdio instance's command as the proxies start it; the probe starts it too.
    command: Option<StdioCommand>,
    transport: TransportType,
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
}

struct Slot {
    tracker: Tracker,
    next_due: Instant,
    in_flight: bool,
    era: Option<Era>,
    history: Vec<HealthRecord>,
    last_change_at: DateTime<Utc>,
}

/// Everything the checker needs; cheap to clone into the leader's task.
#[derive(Clone)]
pub struct Checker {
    pub pool: DbPool,
    pub client: McpClient,
    pub defaults: HealthDefaults,
    pub replica_id: String,
    pub hub: Arc<RoutingHub>,
}

impl Checker {
    /// Runs the checks until `stop` (leadership lost or shutdown).
    pub async fn run(&self, stop: CancellationToken) {
        let semaphore = Arc::new(Semaphore::new(self.defaults.concurrency));
        let (tx, mut rx) = mpsc::channel::<(Uuid, ProbeResult)>(1024);
        let mut targets: HashMap<Uuid, Target> = HashMap::new();
        let mut slots: HashMap<Uuid, Slot> = HashMap::new();
        let mut loaded_version = None;
        let mut tick = tokio::time::interval(TICK);
        let mut reload = tokio::time::interval(RELOAD);
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = prune.tick() => {
                    let before = Utc::now() - chrono::Duration::from_std(PASSIVE_TTL).unwrap_or_default();
                    if let Ok(mut conn) = self.pool.get().await
                        && let Err(error) = store::health::prune_passive(&mut conn, before).await
                    {
                        tracing::debug!(%error, "Could not prune old passive health reports.");
                    }
                }
                _ = reload.tick() => {
                    let version = self.hub.current().version();
                    if loaded_version != Some(version) {
                        match self.load(&mut targets, &mut slots).await {
                            Ok(()) => loaded_version = Some(version),
                            Err(error) => tracing::warn!(%error, "Health checks cannot read the registry."),
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (id, target) in &targets {
                        let Some(slot) = slots.get_mut(id) else { continue };
                        if slot.in_flight || slot.next_due > now {
                            continue;
                        }
                        let Ok(permit) = semaphore.clone().try_acquire_owned() else { break };
                        slot.in_flight = true;
                        slot.next_due = now + target.interval;
                        let client =
                            self.client.for_instance(target.credential.clone(), target.command.clone());
                        let (target, tx, id, hint) = (target.clone(), tx.clone(), *id, slot.era);
                        tokio::spawn(async move {
                            let span = if crate::telemetry::exporting() {
                                tracing::info_span!(
                                    "health_check",
                                    otel.kind = "client",
                                    mcpgw.instance_id = %id,
                                    url.full = %target.url,
                                    mcpgw.outcome = tracing::field::Empty,
                                )
                            } else {
                                tracing::Span::none()
                            };
                            let check = probe(&client, &target.url, target.transport, hint, target.timeout);
                            let result = crate::telemetry::traced(span.clone(), None, check).await;
                            span.record("mcpgw.outcome", if result.error.is_none() { "healthy" } else { "unhealthy" });
                            crate::metrics::METRICS.health_check(result.error.is_none(), result.latency);
                            drop(permit);
                            let _ = tx.send((id, result)).await;
                        });
                    }
                }
                Some((id, result)) = rx.recv() => self.apply(id, result, &targets, &mut slots).await,
            }
        }
    }

    async fn load(
        &self,
        targets: &mut HashMap<Uuid, Target>,
        slots: &mut HashMap<Uuid, Slot>,
    ) -> Result<(), String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let servers = store::list(&mut conn).await.map_err(|e| e.to_string())?;
        let mut instances = store::instances_of(&mut conn, None).await.map_err(|e| e.to_string())?;
        let mut fresh = HashMap::new();
        let d = self.defaults;
        let disabled: Vec<Uuid> = servers
            .iter()
            .filter(|s| !s.health_check_enabled)
            .flat_map(|s| instances.get(&s.id).into_iter().flatten().map(|i| i.id))
            .collect();
        if !disabled.is_empty()
            && store::health::clear(&mut conn, &disabled).await.map_err(|e| e.to_string())?.is_some()
        {
            tracing::info!(
                instances = disabled.len(),
                "Health checks turned off: those instances are unknown again."
            );
            let _ = self.hub.refresh().await;
        }
        for server in servers.iter().filter(|s| s.health_check_enabled) {
            let h = server.health_check();
            let ms = |v: Option<u32>, default: Duration| {
                v.map_or(default, |ms| Duration::from_millis(u64::from(ms)))
            };
            for instance in instances.remove(&server.id).unwrap_or_default() {
                // Not published yet: probed from the next reload on, with the credential the proxies have
                // (probing now would reach the upstream without it).
                if !self.hub.knows_instance(instance.id) {
                    continue;
                }
                fresh.insert(
                    instance.id,
                    Target {
                        credential: self.hub.upstream_credential(instance.id),
                        command: self.hub.stdio_command(instance.id),
                        url: instance.endpoint_url,
                        transport: TransportType::parse(&server.transport_type)
                            .unwrap_or(TransportType::StreamableHttp),
                        interval: ms(h.interval_ms, d.interval),
                        timeout: ms(h.timeout_ms, d.timeout),
                        thresholds: Thresholds {
                            healthy: h.healthy_threshold.unwrap_or(d.healthy_threshold),
                            unhealthy: h.unhealthy_threshold.unwrap_or(d.unhealthy_threshold),
                        },
                    },
                );
            }
        }
        let new_ids: Vec<Uuid> = fresh.keys().filter(|id| !slots.contains_key(*id)).copied().collect();
        let rows = store::health::active(&mut conn, Some(&new_ids)).await.map_err(|e| e.to_string())?;
        for id in new_ids {
            let interval = fresh.get(&id).map_or(d.interval, |t| t.interval);
            slots.insert(id, slot_from(rows.get(&id), interval));
        }
        slots.retain(|id, _| fresh.contains_key(id));
        *targets = fresh;
        Ok(())
    }

    async fn apply(
        &self,
        id: Uuid,
        result: ProbeResult,
        targets: &HashMap<Uuid, Target>,
        slots: &mut HashMap<Uuid, Slot>,
    ) {
        let (Some(target), Some(slot)) = (targets.get(&id), slots.get_mut(&id)) else { return };
        slot.in_flight = false;
        slot.era = result.era;
        let ok = result.error.is_none();
        let changed = slot.tracker.observe(ok, target.thresholds);
        let now = Utc::now();
        if changed {
            slot.last_change_at = now;
            tracing::info!(instance_id = %id, endpoint = %mcpgw_proto::validate::redacted_str(&target.url), status = slot.tracker.status.as_str(),
                error = result.error.as_deref().unwrap_or(""), "An instance changed health.");
        }
        let latency_ms = u32::try_from(result.latency.as_millis()).unwrap_or(u32::MAX);
        slot.history.insert(0, HealthRecord { at: now, ok, latency_ms, error: result.error.clone() });
        slot.history.truncate(HISTORY_LEN);
        let row = InstanceHealthRow {
            instance_id: id,
            status: slot.tracker.status.as_str().to_owned(),
            last_check_at: now,
            last_change_at: slot.last_change_at,
            consecutive_failures: i32::try_from(slot.tracker.failures).unwrap_or(i32::MAX),
            consecutive_successes: i32::try_from(slot.tracker.successes).unwrap_or(i32::MAX),
            latency_ms: i32::try_from(latency_ms).ok(),
            last_error: result.error,
            checked_by: self.replica_id.clone(),
            history: serde_json::to_value(&slot.history).unwrap_or_default(),
        };
        let written = match self.pool.get().await {
            Ok(mut conn) => store::health::record(&mut conn, &row, changed).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(Some(_version)) => {
                if let Err(error) = self.hub.refresh().await {
                    tracing::warn!(%error, "Could not publish a health change; the poller will retry.");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, instance_id = %id, "Could not store a health check result."),
        }
    }
}

/// The slot of an instance the checker starts tracking: its stored state (so a new leader continues the
/// counts) and its first probe one interval after the last one, or now.
fn slot_from(row: Option<&InstanceHealthRow>, interval: Duration) -> Slot {
    let now = Instant::now();
    let Some(row) = row else {
        return Slot {
            tracker: Tracker::default(),
            next_due: now,
            in_flight: false,
            era: None,
            history: Vec::new(),
            last_change_at: Utc::now(),
        };
    };
    let since = (Utc::now() - row.last_check_at).to_std().unwrap_or_default();
    Slot {
        tracker: Tracker {
            status: row.status(),
            successes: u32::try_from(row.consecutive_successes).unwrap_or(0),
            failures: u32::try_from(row.consecutive_failures).unwrap_or(0),
        },
        next_due: now + interval.saturating_sub(since),
        in_flight: false,
        era: None,
        history: row.history(),
        last_change_at: row.last_change_at,
    }
}
