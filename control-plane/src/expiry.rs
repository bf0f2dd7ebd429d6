//! Removes API keys that expired more than a day ago. Proxies refuse an expired key on their own (they
//! check `expires_at_unix`), so this only keeps the table and the routing stream from growing forever; the
//! day of grace lets `GET /api/v1/api-keys` still show why a key stopped working. Expired console sessions
//! go in the same sweep (they are refused once expired; this only keeps the table small).

use std::time::Duration;

use chrono::Utc;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::db::{DbError, DbPool, store};
use crate::hub::RoutingHub;

/// How often each replica sweeps. Every replica may: a concurrent sweep deletes nothing more.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// How long an expired key stays listed before it is deleted.
pub const GRACE: Duration = Duration::from_secs(86_400);

/// Deletes the keys expired for more than `GRACE` and publishes the change; how many were deleted.
pub async fn sweep_once(pool: &DbPool, hub: &RoutingHub) -> Result<usize, DbError> {
    let before = Utc::now() - GRACE;
    let mut conn = pool.get().await?;
    let (deleted, version) = store::api_keys::delete_expired(&mut conn, before).await?;
    let sessions = store::console::delete_expired(&mut conn, Utc::now()).await?;
    drop(conn);
    if sessions > 0 {
        tracing::debug!(sessions, "Deleted expired console sessions.");
    }
    if let Some(version) = version {
        tracing::info!(deleted, version, "Deleted API keys expired for more than a day.");
        if let Err(error) = hub.refresh().await {
            tracing::warn!(%error, "Could not publish the expired keys' removal; the poller will retry.");
        }
    }
    Ok(deleted)
}

/// Sweeps at start and then every `interval`, until `shutdown`.
pub async fn sweep(pool: DbPool, hub: Arc<RoutingHub>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = sweep_once(&pool, &hub).await {
            tracing::warn!(%error, "Could not delete expired API keys; trying again later.");
        }
    }
}
