//! Change notification between replicas: PostgreSQL LISTEN/NOTIFY. Every bump of
//! `routing_state.version` fires `pg_notify('mcpgw_routing', version)` from a trigger, delivered on commit
//! and in commit order, so a replica that hears it can read the change. The hub's slow poll stays as the
//! safety net for a listener that is reconnecting.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::hub::RoutingHub;

/// The channel the migration's trigger notifies.
pub const CHANNEL: &str = "mcpgw_routing";

/// Listens until `shutdown`, refreshing the hub on every notification (bursts coalesce into one refresh).
pub async fn listen(database_url: String, hub: Arc<RoutingHub>, shutdown: CancellationToken) {
    let wake = Arc::new(Notify::new());
    let refresher = tokio::spawn({
        let (wake, hub) = (wake.clone(), hub.clone());
        async move {
            loop {
                wake.notified().await;
                if let Err(error) = hub.refresh().await {
                    tracing::debug!(%error, "A refresh after a notification failed; the poller retries.");
                }
            }
        }
    });
    let mut failing = false;
    while !shutdown.is_cancelled() {
        match listen_once(&database_url, &wake, &shutdown).await {
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "The change listener lost PostgreSQL; reconnecting (the poller covers meanwhile).");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    refresher.abort();
}

async fn listen_once(url: &str, wake: &Notify, shutdown: &CancellationToken) -> Result<(), String> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    // The connection must be polled for the LISTEN to complete.
    loop {
        tokio::select! {
            done = &mut listen => { done.map_err(|e| e.to_string())?; break; }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection closed".into()),
            },
        }
    }
    // Anything committed while we were not listening is picked up now.
    wake.notify_one();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection closed".into()),
            },
        }
    }
}
