//! Rediscovery on `notifications/*/list_changed`: the leader keeps a notification stream open to every
//! discovered Streamable HTTP server that advertises `listChanged` (the GET stream of a legacy session, or
//! a 2026-07-28 `subscriptions/listen`) and a WebSocket open to every such WebSocket server, and
//! rediscovers the server when a list changes. Streams that end are reopened with backoff; servers that
//! refuse the stream (405, -32601) are left to the periodic refresh, and so are HTTP+SSE and stdio servers
//! (a stdio server would need a process kept running for it).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Discoverer;
use crate::db::store;
use crate::mcp::sse::Parser;
use crate::mcp::{Connection, Credential, McpClient, McpError};
use crate::model::TransportType;

/// How often the set of watched servers is reconciled with the registry.
const RECONCILE: Duration = Duration::from_secs(2);
/// Quiet time after a notification before rediscovering (bursts collapse into one discovery).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Least time between two rediscoveries of one server on its notifications: a server announcing changes
/// without end costs one discovery per interval, not one per notification.
pub const MIN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait before reopening a stream that ended.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to watch for one server: its first instance, with that instance's upstream credential (a changed
/// URL or credential restarts the stream).
#[derive(Debug, Clone, PartialEq)]
struct Target {
    url: String,
    transport: TransportType,
    credential: Option<Credential>,
}

/// Watches until `stop` (leadership lost or shutdown).
pub async fn run(discoverer: Discoverer, stop: CancellationToken) {
    let mut watching: HashMap<Uuid, (Target, CancellationToken)> = HashMap::new();
    let mut ticker = tokio::time::interval(RECONCILE);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let wanted = match targets(&discoverer).await {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::debug!(%error, "The list_changed watcher cannot read the registry.");
                continue;
            }
        };
        watching.retain(|id, (target, token)| {
            let keep = wanted.get(id) == Some(target);
            if !keep {
                token.cancel();
            }
            keep
        });
        for (id, target) in wanted {
            if watching.contains_key(&id) {
                continue;
            }
            let token = stop.child_token();
            let client = discoverer.client.authenticated(target.credential.clone());
            tokio::spawn(watch(discoverer.clone(), client, id, target.clone(), token.clone()));
            watching.insert(id, (target, token));
        }
    }
    for (_, token) in watching.values() {
        token.cancel();
    }
}

/// Servers whose last discovery advertised a `listChanged` capability.
async fn targets(discoverer: &Discoverer) -> Result<HashMap<Uuid, Target>, String> {
    let mut conn = discoverer.pool.get().await.map_err(|e| e.to_string())?;
    let servers = store::list(&mut conn).await.map_err(|e| e.to_string())?;
    let ids: Vec<Uuid> = servers.iter().map(|s| s.id).collect();
    let outcomes = store::discovery::outcomes(&mut conn, &ids).await.map_err(|e| e.to_string())?;
    let mut instances = store::instances_of(&mut conn, Some(&ids)).await.map_err(|e| e.to_string())?;
    let mut wanted = HashMap::new();
    for server in servers {
        let transport = match TransportType::parse(&server.transport_type) {
            Some(t @ (TransportType::StreamableHttp | TransportType::WebSocket)) => t,
            _ => continue,
        };
        let Some(caps) = outcomes.get(&server.id).and_then(|o| o.capabilities.clone()) else { continue };
        let changes = ["tools", "resources", "prompts"]
            .iter()
            .any(|k| caps.get(k).and_then(|c| c.get("listChanged")).and_then(Value::as_bool) == Some(true));
        let first = instances.remove(&server.id).and_then(|list| list.into_iter().next());
        if let (true, Some(instance)) = (changes, first) {
            let credential = discoverer.hub.upstream_credential(instance.id);
            wanted.insert(server.id, Target { url: instance.endpoint_url, transport, credential });
        }
    }
    Ok(wanted)
}

async fn watch(
    discoverer: Discoverer,
    client: McpClient,
    server_id: Uuid,
    target: Target,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    while !stop.is_cancelled() {
        let listened = match target.transport {
            TransportType::WebSocket => listen_ws(&discoverer, &client, server_id, &target.url, &stop).await,
            _ => listen(&discoverer, &client, server_id, &target.url, &stop).await,
        };
        match listened {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(McpError::Status { status: 405, .. } | McpError::Status { code: Some(-32601), .. }) => {
                tracing::debug!(%server_id, "The server offers no notification stream; periodic discovery only.");
                return;
            }
            Err(error) => tracing::debug!(%server_id, %error, "The list_changed stream failed; reopening."),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Opens one stream and rediscovers on every list change until it ends.
async fn listen(
    discoverer: &Discoverer,
    client: &McpClient,
    server_id: Uuid,
    url: &str,
    stop: &CancellationToken,
) -> Result<(), McpError> {
    let Connection::Http(mut session) = client.connect(url, TransportType::StreamableHttp).await? else {
        return Ok(());
    };
    let mut response = session.notifications().await?;
    let mut parser = Parser::default();
    let mut pending = Rediscoveries::default();
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => break,
            () = pending.due() => {
                pending.run(discoverer, server_id).await;
                continue;
            }
            chunk = response.chunk() => chunk?,
        };
        let Some(chunk) = chunk else { break };
        // An endless line or event ends the watch (it is opened again later) instead of growing memory.
        let events = parser.feed(&chunk).map_err(|e| McpError::Protocol(e.to_string()))?;
        let changed = events.iter().any(|event| {
            serde_json::from_str::<Value>(&event.data)
                .ok()
                .and_then(|m| m.get("method").and_then(Value::as_str).map(|m| m.ends_with("/list_changed")))
                .unwrap_or(false)
        });
        if changed {
            pending.changed();
        }
    }
    drop(response);
    session.close().await;
    Ok(())
}

/// Keeps a WebSocket open (its own `initialize`d conversation) and rediscovers on every list change until
/// it closes.
async fn listen_ws(
    discoverer: &Discoverer,
    client: &McpClient,
    server_id: Uuid,
    url: &str,
    stop: &CancellationToken,
) -> Result<(), McpError> {
    let Connection::WebSocket(mut session) = client.connect(url, TransportType::WebSocket).await? else {
        return Ok(());
    };
    let mut pending = Rediscoveries::default();
    loop {
        let method = tokio::select! {
            _ = stop.cancelled() => break,
            () = pending.due() => {
                pending.run(discoverer, server_id).await;
                continue;
            }
            method = session.next_notification() => method?,
        };
        let Some(method) = method else { break };
        if method.ends_with("/list_changed") {
            pending.changed();
        }
    }
    session.close().await;
    Ok(())
}

/// When the next rediscovery of a watched server runs: `DEBOUNCE` after the first change it has not
/// seen yet, and never sooner than `MIN_REDISCOVERY_INTERVAL` after the last one. Notifications keep
/// being read meanwhile, so a flood neither backs up the stream nor queues discoveries.
#[derive(Debug, Default)]
struct Rediscoveries {
    /// When the pending rediscovery is due (`None`: no change since the last one).
    due: Option<Instant>,
    last: Option<Instant>,
}

impl Rediscoveries {
    fn changed(&mut self) {
        self.changed_at(Instant::now());
    }

    fn changed_at(&mut self, now: Instant) {
        if self.due.is_none() {
            let debounced = now + DEBOUNCE;
            self.due =
                Some(self.last.map_or(debounced, |last| debounced.max(last + MIN_REDISCOVERY_INTERVAL)));
        }
    }

    /// Resolves when a rediscovery is due; never while none is pending.
    async fn due(&self) {
        match self.due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    async fn run(&mut self, discoverer: &Discoverer, server_id: Uuid) {
        self.due = None;
        self.last = Some(Instant::now());
        match discoverer.discover(server_id).await {
            Ok(found) => {
                tracing::info!(%server_id, tools = found.tools, "Rediscovered a server after a list change.")
            }
            Err(error) => tracing::info!(%server_id, %error, "Rediscovery after a list change failed."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rediscoveries_are_debounced_and_spaced() {
        let mut r = Rediscoveries::default();
        let start = Instant::now();
        r.changed_at(start);
        r.changed_at(start + Duration::from_millis(100));
        assert_eq!(r.due, Some(start + DEBOUNCE), "a burst is one rediscovery after the quiet time");
        (r.due, r.last) = (None, Some(start + DEBOUNCE));
        r.changed_at(start + Duration::from_secs(1));
        assert_eq!(r.due, Some(start + DEBOUNCE + MIN_REDISCOVERY_INTERVAL), "spaced from the last one");
        r.due = None;
        let later = start + Duration::from_secs(60);
        r.changed_at(later);
        assert_eq!(r.due, Some(later + DEBOUNCE), "long after the last one: only the quiet time");
    }
}
