//! Leader election: the replica holding a PostgreSQL advisory lock on a dedicated connection runs the
//! health checks, the periodic discovery, the JWKS refresh and the Kubernetes service discovery. The others wait in `pg_advisory_lock` on their own
//! connection, so when the leader dies (its session ends and PostgreSQL releases the lock) one of them
//! takes over at once. The leader checks its lock connection every second and steps down when it fails,
//! before another replica could have the lock for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use super::Checker;
use crate::db::store;
use crate::discovery::Discoverer;
use crate::jwks::Refresher;

/// Advisory lock key of the health-check leader ("mcpgwh" in ASCII; the migration lock is "mcpgw").
pub const LEADER_LOCK_KEY: i64 = 0x6d63_7067_7768;
/// How often the leader checks its lock connection.
const WATCHDOG: Duration = Duration::from_secs(1);

/// Everything the leader runs.
pub struct Leader {
    pub database_url: String,
    pub checker: Checker,
    pub discoverer: Discoverer,
    pub discovery_interval: Option<Duration>,
    /// Refreshes every trusted issuer's JWKS (`--jwks-refresh`).
    pub jwks: Refresher,
    /// True while this replica leads (shown by `/api/v1/admin/stats`).
    pub is_leader: Arc<AtomicBool>,
    /// Kubernetes service discovery (`--kubernetes-discovery`).
    pub kubernetes: Option<crate::kube::KubeSync>,
}

impl Leader {
    /// Competes for the lead until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failing = false;
        while !shutdown.is_cancelled() {
            match self.lead_once(&shutdown).await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "Leader election: the lock connection failed; retrying.");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    async fn lead_once(&self, shutdown: &CancellationToken) -> Result<(), String> {
        let mut config: tokio_postgres::Config = self.database_url.parse().map_err(|e| format!("{e}"))?;
        config.keepalives_idle(Duration::from_secs(10)).application_name("mcpgw-leader");
        let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        let lost = CancellationToken::new();
        let driver = tokio::spawn({
            let lost = lost.clone();
            async move {
                let _ = connection.await;
                lost.cancel();
            }
        });
        let locked = tokio::select! {
            _ = shutdown.cancelled() => Ok(false),
            _ = lost.cancelled() => Err("the lock connection closed while waiting".to_owned()),
            r = client.execute("SELECT pg_advisory_lock($1)", &[&LEADER_LOCK_KEY]) => r.map(|_| true).map_err(|e| e.to_string()),
        };
        if !matches!(locked, Ok(true)) {
            driver.abort();
            return locked.map(drop);
        }
        self.is_leader.store(true, Ordering::SeqCst);
        let replica = self.checker.replica_id.clone();
        tracing::info!(replica_id = %replica, "This replica now leads the health checks.");
        if let Ok(mut conn) = self.checker.pool.get().await
            && let Err(error) = store::health::set_leader(&mut conn, &replica).await
        {
            tracing::warn!(%error, "Could not record the leader.");
        }
        let stop = CancellationToken::new();
        let checks = tokio::spawn({
            let (checker, stop) = (self.checker.clone(), stop.clone());
            async move { checker.run(stop).await }
        });
        let discovery = tokio::spawn(self.discoverer.clone().periodic(self.discovery_interval, stop.clone()));
        let watcher = tokio::spawn(crate::discovery::watch::run(self.discoverer.clone(), stop.clone()));
        let jwks = tokio::spawn(self.jwks.clone().run(stop.clone()));
        let kubernetes = self.kubernetes.clone().map(|sync| tokio::spawn(sync.run(stop.clone())));
        let outcome = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = lost.cancelled() => break Err("the lock connection closed".to_owned()),
                _ = tokio::time::sleep(WATCHDOG) => {
                    match tokio::time::timeout(2 * WATCHDOG, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break Err(e.to_string()),
                        Err(_) => break Err("the lock connection stopped answering".to_owned()),
                    }
                }
            }
        };
        stop.cancel();
        self.is_leader.store(false, Ordering::SeqCst);
        let _ = checks.await;
        discovery.abort();
        watcher.abort();
        jwks.abort();
        if let Some(kubernetes) = kubernetes {
            kubernetes.abort();
        }
        drop(client);
        driver.abort();
        tracing::info!(replica_id = %replica, "This replica stopped leading the health checks.");
        outcome
    }
}
