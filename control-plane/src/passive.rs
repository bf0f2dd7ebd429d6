//! Passive health from the proxies: each `ProxyMessage.passive_health` report (the full breaker state of
//! every instance the proxy knows) replaces that proxy's rows in `passive_health`, so every replica's API
//! shows it. One writer per proxy stream stores the latest report; reports that arrive while a write runs
//! collapse into the newest, so an older report can never overwrite a newer one.

use chrono::Utc;
use mcpgw_proto::v1::{BreakerState, PassiveHealth};
use tokio::sync::watch;

use crate::db::{DbPool, store};
use crate::model::PassiveRow;

/// The per-stream writer; its task ends when the stream (and so this value) is dropped.
pub struct PassiveWriter {
    proxy_id: String,
    latest: watch::Sender<Option<Vec<PassiveRow>>>,
}

impl PassiveWriter {
    /// Starts the writer of `proxy_id`'s reports.
    pub fn spawn(pool: DbPool, proxy_id: String) -> Self {
        let (latest, mut rx) = watch::channel(None::<Vec<PassiveRow>>);
        let writer = Self { proxy_id: proxy_id.clone(), latest };
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(rows) = rx.borrow_and_update().clone() else { continue };
                let outcome = match pool.get().await {
                    Ok(mut conn) => store::health::record_passive(&mut conn, &proxy_id, rows)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = outcome {
                    tracing::warn!(%proxy_id, %error, "Could not store a passive health report.");
                }
            }
        });
        writer
    }

    /// Queues a report (replacing one not written yet). Observations of unknown ids are dropped.
    pub fn report(&self, report: PassiveHealth) {
        let proxy_id = &self.proxy_id;
        let now = Utc::now();
        let rows = report
            .instances
            .into_iter()
            .filter_map(|o| {
                let breaker = match o.breaker() {
                    BreakerState::Closed => "closed",
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "half_open",
                    BreakerState::Unspecified => "unspecified",
                };
                Some(PassiveRow {
                    instance_id: uuid::Uuid::parse_str(&o.instance_id).ok()?,
                    proxy_id: proxy_id.clone(),
                    breaker: breaker.to_owned(),
                    consecutive_failures: i32::try_from(o.consecutive_failures).unwrap_or(i32::MAX),
                    window_requests: i64::try_from(o.window_requests).unwrap_or(i64::MAX),
                    window_failures: i64::try_from(o.window_failures).unwrap_or(i64::MAX),
                    reported_at: now,
                })
            })
            .collect();
        self.latest.send_replace(Some(rows));
    }
}
