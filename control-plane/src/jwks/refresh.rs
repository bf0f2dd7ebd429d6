//! The periodic JWKS refresh, run by the leader every `--jwks-refresh`. A fetched JWKS that differs from the
//! stored one is written with a routing-version bump in one transaction (so every proxy gets the new
//! `TrustedIssuer` and a key rotated out stops verifying within one interval); an unchanged one only
//! records the fetch time. A failure keeps the last good JWKS and records why. The write is conditional on
//! the stored document, so replicas refreshing at once (a leader hand-over) bump the version once.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::JwksFetcher;
use crate::db::{DbError, DbPool, store};
use crate::hub::RoutingHub;

/// Issuers fetched at once.
const CONCURRENCY: usize = 8;

/// What one round found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Issuers whose JWKS changed (and was published).
    pub changed: usize,
    /// Issuers whose fetch failed (their last good JWKS stays).
    pub failed: usize,
}

/// Refreshes every trusted issuer's JWKS.
#[derive(Clone)]
pub struct Refresher {
    pub pool: DbPool,
    pub hub: Arc<RoutingHub>,
    pub fetcher: JwksFetcher,
    pub interval: Duration,
}

impl Refresher {
    /// Refreshes at once and then every `interval`, until `stop` (leadership lost or shutdown).
    pub async fn run(self, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.refresh_all().await {
                tracing::warn!(%error, "The JWKS refresh cannot read or write the database; retrying next interval.");
            }
        }
    }

    /// Fetches every issuer's JWKS once and stores the outcomes.
    pub async fn refresh_all(&self) -> Result<Round, DbError> {
        let mut conn = self.pool.get().await?;
        let issuers = store::trusted_issuers::list(&mut conn).await?;
        drop(conn);
        let fetched: Vec<_> = futures_util::stream::iter(issuers)
            .map(|issuer| async move {
                let outcome = self.fetcher.jwks(&issuer.jwks_uri).await;
                (issuer, outcome)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut round = Round::default();
        let mut conn = self.pool.get().await?;
        for (issuer, outcome) in fetched {
            match outcome {
                Ok(jwks) => {
                    let changed =
                        store::trusted_issuers::record_jwks(&mut conn, issuer.id, &issuer.jwks_uri, &jwks)
                            .await?;
                    if let Some(version) = changed {
                        round.changed += 1;
                        tracing::info!(issuer = %issuer.issuer, version, "A trusted issuer's JWKS changed; publishing it.");
                    } else if issuer.last_error.is_some() {
                        tracing::info!(issuer = %issuer.issuer, "A trusted issuer's JWKS can be fetched again.");
                    }
                }
                Err(error) => {
                    round.failed += 1;
                    let error = error.to_string();
                    // One warning when the failure starts or changes, not one per interval.
                    if issuer.last_error.as_deref() != Some(error.as_str()) {
                        tracing::warn!(issuer = %issuer.issuer, %error,
                            "Cannot refresh a trusted issuer's JWKS; the last good one stays in use.");
                    }
                    store::trusted_issuers::record_error(&mut conn, issuer.id, &issuer.jwks_uri, &error)
                        .await?;
                }
            }
        }
        drop(conn);
        if round.changed > 0
            && let Err(error) = self.hub.refresh().await
        {
            tracing::warn!(%error, "Could not publish a JWKS change; the poller will retry.");
        }
        Ok(round)
    }
}
