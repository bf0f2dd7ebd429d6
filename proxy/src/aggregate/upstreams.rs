//! The upstream sessions `/mcp` opens for its clients: one per (client session, server), opened on the
//! first call to the server with the client's own `initialize` parameters, cached by this replica only
//! (bounded in count and idle time) and re-opened whenever it is missing or gone — any replica can make
//! an equivalent one from the client's token (`proxy/SESSIONS.md` "Aggregation").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpgw_proto::v1::HealthStatus;
use pingora::http::RequestHeader;
use serde_json::{Value, json};

use crate::balance::Gate;
use crate::error::ProxyError;
use crate::headers::Noted;
use crate::routing::{Instance, Server};
use crate::session::ClientHello;
use crate::shared::Shared;
use crate::upstream::{self, Plan};

/// Most upstream sessions one replica holds; beyond, the least recently used is forgotten (and closed).
const MAX_SESSIONS: usize = 100_000;
/// An upstream session unused this long is forgotten (and closed).
const IDLE: Duration = Duration::from_secs(30 * 60);

/// An upstream session the gateway holds.
#[derive(Debug)]
pub struct Held {
    /// The server as it was when the session was opened.
    pub server: Arc<Server>,
    pub instance: Arc<Instance>,
    /// The upstream's `Mcp-Session-Id`.
    pub id: String,
    /// The protocol version the upstream agreed to.
    pub version: String,
    /// Milliseconds since `UpstreamSessions::epoch` of the last use.
    last_used: AtomicU64,
}

type Slot = Arc<tokio::sync::OnceCell<Arc<Held>>>;

/// Upstream sessions by (client session key, server id), and the requests in flight on them.
pub struct UpstreamSessions {
    sessions: Mutex<HashMap<(Arc<str>, String), Slot>>,
    /// Which server each in-flight request of a client session went to: (session key, request id as
    /// JSON) → server id. Cancellations are forwarded by it.
    in_flight: Mutex<HashMap<(Arc<str>, String), String>>,
    epoch: Instant,
    /// Announces each upstream session opened, (client session key, server id): a client's GET stream on
    /// this replica starts relaying that session's own stream.
    opened: tokio::sync::broadcast::Sender<(Arc<str>, String)>,
}

impl Default for UpstreamSessions {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            in_flight: Mutex::default(),
            epoch: Instant::now(),
            opened: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

/// Removes an in-flight request when its exchange ends, however it ends.
pub struct InFlightGuard<'a> {
    owner: &'a UpstreamSessions,
    key: Option<(Arc<str>, String)>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take()
            && let Ok(mut map) = self.owner.in_flight.lock()
        {
            map.remove(&key);
        }
    }
}

/// Whether `instance` can still serve a session pinned to it.
fn serves(server: &Server, instance: &Instance) -> bool {
    server.instances.iter().any(|i| i.id == instance.id)
        && instance.health != HealthStatus::Unhealthy
        && instance.state.gate() != Gate::Open
}

impl UpstreamSessions {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The session held for (`key`, `server`), opened now when there is none or its instance can no
    /// longer serve it.
    pub async fn get(
        &self,
        gw: &Shared,
        down: &RequestHeader,
        server: &Arc<Server>,
        key: &Arc<str>,
        hello: &ClientHello,
    ) -> Result<Arc<Held>, ProxyError> {
        let map_key = (key.clone(), server.id.clone());
        // Told to listeners once the session is in the table, so that one woken on another worker finds it.
        let opened_here = std::sync::atomic::AtomicBool::new(false);
        loop {
            let slot = {
                let mut map = self.sessions.lock().map_err(|_| poisoned())?;
                if map.len() >= MAX_SESSIONS && !map.contains_key(&map_key) {
                    self.evict(&mut map, gw);
                }
                map.entry(map_key.clone()).or_default().clone()
            };
            let held = slot
                .get_or_try_init(|| async {
                    let held = open(gw, down, server, key, hello).await?;
                    opened_here.store(true, Ordering::Relaxed);
                    Ok::<_, ProxyError>(held)
                })
                .await?
                .clone();
            if opened_here.swap(false, Ordering::Relaxed) {
                let _ = self.opened.send((key.clone(), server.id.clone()));
            }
            if serves(server, &held.instance) {
                held.last_used.store(self.now_ms(), Ordering::Relaxed);
                return Ok(held);
            }
            self.forget(key, &server.id, &held);
        }
    }

    /// Forgets `held` (its upstream answered 404, or its instance is gone), unless another request has
    /// already replaced it.
    pub fn forget(&self, key: &Arc<str>, server_id: &str, held: &Arc<Held>) {
        let Ok(mut map) = self.sessions.lock() else { return };
        let map_key = (key.clone(), server_id.to_owned());
        if map.get(&map_key).and_then(|slot| slot.get()).is_some_and(|h| Arc::ptr_eq(h, held)) {
            map.remove(&map_key);
        }
    }

    /// Drops idle sessions and, if still full, the least recently used tenth; closes them upstream.
    fn evict(&self, map: &mut HashMap<(Arc<str>, String), Slot>, gw: &Shared) {
        let now = self.now_ms();
        let idle = u64::try_from(IDLE.as_millis()).unwrap_or(u64::MAX);
        let last = |slot: &Slot| slot.get().map_or(0, |h| h.last_used.load(Ordering::Relaxed));
        let mut gone: Vec<Arc<Held>> = Vec::new();
        map.retain(|_, slot| {
            let keep = now.saturating_sub(last(slot)) < idle;
            if !keep && let Some(h) = slot.get() {
                gone.push(h.clone());
            }
            keep
        });
        if map.len() >= MAX_SESSIONS {
            let mut ages: Vec<u64> = map.values().map(last).collect();
            let cut = ages.len() / 10;
            let (_, threshold, _) = ages.select_nth_unstable(cut);
            let threshold = *threshold;
            map.retain(|_, slot| {
                let keep = last(slot) > threshold;
                if !keep && let Some(h) = slot.get() {
                    gone.push(h.clone());
                }
                keep
            });
        }
        for held in gone {
            close(gw, held);
        }
    }

    /// Closes every upstream session of a client session (the client's DELETE).
    pub fn close_all(&self, gw: &Shared, key: &str) -> usize {
        let Ok(mut map) = self.sessions.lock() else { return 0 };
        let mut gone = Vec::new();
        map.retain(|(k, _), slot| {
            let keep = &**k != key;
            if !keep && let Some(h) = slot.get() {
                gone.push(h.clone());
            }
            keep
        });
        let n = gone.len();
        for held in gone {
            close(gw, held);
        }
        n
    }

    /// Notes that request `id` of client session `key` went to `server_id`, until the guard drops.
    pub fn track(&self, key: &Arc<str>, id: Option<&Value>, server_id: &str) -> InFlightGuard<'_> {
        let key = id.map(|id| (key.clone(), id.to_string()));
        if let Some(k) = &key
            && let Ok(mut map) = self.in_flight.lock()
            // Bounded by the requests being served; a client reusing an id in flight replaces it.
            && map.len() < MAX_SESSIONS
        {
            map.insert(k.clone(), server_id.to_owned());
        }
        InFlightGuard { owner: self, key }
    }

    /// The server request `id` of client session `key` is in flight on, on this replica.
    pub fn in_flight(&self, key: &Arc<str>, id: &Value) -> Option<String> {
        self.in_flight.lock().ok()?.get(&(key.clone(), id.to_string())).cloned()
    }

    /// Hears of every upstream session opened from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(Arc<str>, String)> {
        self.opened.subscribe()
    }

    /// The sessions held for client session `key`, by server id.
    pub fn held_of(&self, key: &str) -> Vec<(String, Arc<Held>)> {
        let Ok(map) = self.sessions.lock() else { return Vec::new() };
        map.iter()
            .filter(|((k, _), _)| &**k == key)
            .filter_map(|((_, server), slot)| Some((server.clone(), slot.get()?.clone())))
            .collect()
    }

    /// The session held for (`key`, `server_id`), if one is open.
    pub fn held(&self, key: &Arc<str>, server_id: &str) -> Option<Arc<Held>> {
        self.sessions.lock().ok()?.get(&(key.clone(), server_id.to_owned()))?.get().cloned()
    }
}

fn poisoned() -> ProxyError {
    ProxyError::UpstreamFailed { server: "-".into(), detail: "upstream session table unavailable".into() }
}

/// The headers of a request the gateway makes on a client's behalf: the client's credential (for
/// `token_exchange` upstreams), JSON in, JSON or SSE out.
pub fn own_request(
    method: http::Method,
    down: Option<&RequestHeader>,
    version: Option<&str>,
    session: Option<&str>,
) -> RequestHeader {
    // Building a header from constants cannot fail.
    let mut req = RequestHeader::build(method, b"/mcp", Some(6)).expect("request header");
    if let Some(auth) = down.and_then(|d| d.headers.get(http::header::AUTHORIZATION)) {
        let _ = req.insert_header(http::header::AUTHORIZATION, auth.clone());
    }
    let _ = req.insert_header(http::header::ACCEPT, "application/json, text/event-stream");
    let _ = req.insert_header(http::header::CONTENT_TYPE, "application/json");
    if let Some(v) = version {
        let _ = req.insert_header("mcp-protocol-version", v);
    }
    if let Some(s) = session {
        let _ = req.insert_header("mcp-session-id", s);
    }
    req
}

/// The JSON-RPC message of an answer: the body itself, or the last `data` of an SSE body.
pub fn message_of(body: &[u8], sse: bool) -> Option<Value> {
    if !sse {
        return serde_json::from_slice(body).ok();
    }
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim_start()).ok())
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
}

/// Opens an upstream session on an instance picked by the server's policy (keyed by the client session).
async fn open(
    gw: &Shared,
    down: &RequestHeader,
    server: &Arc<Server>,
    key: &str,
    hello: &ClientHello,
) -> Result<Arc<Held>, ProxyError> {
    let idx = server.selector().pick(key.as_bytes(), &[]).ok_or_else(|| upstream::no_instance(server))?;
    let instance = server.instances[idx].clone();
    let failed = |detail: String| ProxyError::UpstreamFailed { server: server.name.to_string(), detail };
    let capabilities: Value = serde_json::from_str(&hello.capabilities).unwrap_or_else(|_| json!({}));
    let client_info: Value = serde_json::from_str(&hello.client_info)
        .unwrap_or_else(|_| json!({"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}));
    let body = json!({
        "jsonrpc": "2.0",
        "id": "mcpgw-initialize",
        "method": "initialize",
        "params": {
            "protocolVersion": hello.protocol_version,
            "capabilities": capabilities,
            "clientInfo": client_info,
        },
    });
    let req = own_request(http::Method::POST, Some(down), None, None);
    let (resp, answer) = upstream::http::request_whole(
        gw,
        &req,
        server,
        &instance,
        &Bytes::from(body.to_string()),
        &Plan::default(),
    )
    .await?;
    if resp.status != http::StatusCode::OK {
        return Err(failed(format!("initialize answered HTTP {}", resp.status.as_u16())));
    }
    let sse = upstream::is_event_stream(&resp);
    let message =
        message_of(&answer, sse).ok_or_else(|| failed("initialize answered no JSON-RPC message".into()))?;
    if let Some(error) = message.get("error") {
        return Err(failed(format!("initialize failed: {error}")));
    }
    let version = message
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(&hello.protocol_version)
        .to_owned();
    let id = resp
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let initialized = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let session = Some(id.as_str()).filter(|id| !id.is_empty());
    let req = own_request(http::Method::POST, Some(down), Some(&version), session);
    let (resp, _) =
        upstream::http::request_whole(gw, &req, server, &instance, &initialized, &Plan::default()).await?;
    if !resp.status.is_success() {
        return Err(failed(format!("notifications/initialized answered HTTP {}", resp.status.as_u16())));
    }
    tracing::debug!(server = %server.name, instance = %instance.id, "Opened an upstream session for /mcp.");
    Ok(Arc::new(Held { server: server.clone(), instance, id, version, last_used: AtomicU64::new(0) }))
}

/// Ends an upstream session (DELETE), in the background; failures only cost the upstream's memory. Only a
/// static credential can be presented here (no caller to exchange a token for).
fn close(gw: &Shared, held: Arc<Held>) {
    if held.id.is_empty() {
        return;
    }
    let Ok(peer) = held.instance.peer.clone() else { return };
    let credential = upstream::static_credential(&held.instance);
    let down = own_request(http::Method::DELETE, None, Some(&held.version), None);
    let plan = Plan { upstream_session: Some(held.id.clone()), ..Plan::default() };
    let Ok(req) =
        upstream::upstream_request(&down, &held.instance, credential.as_ref(), 0, &plan, None, Noted::ANY)
    else {
        return;
    };
    let pool = gw.pool.clone();
    let pool_idle = gw.limits.pool_idle_timeout;
    tokio::spawn(async move {
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            let mut up = pool.send(&peer, &req, b"").await.ok()?;
            up.read_response_header().await.ok()?;
            while up.read_response_body().await.ok()?.is_some() {}
            Some(up)
        })
        .await;
        if let Ok(Some(up)) = done {
            pool.release(up, Some(pool_idle));
        }
    });
}

/// Relays an upstream session's GET stream (what the server sends the client outside any request) into
/// `tx`, for the client's `/mcp` GET stream: requests get ids naming the server (`prefix`), `list_changed`
/// notifications are left out (the catalog announces changes once). Ends when the upstream ends the
/// stream or refuses it (a server without one answers 405), or when `tx` closes. Only a static credential
/// can be presented (the client's own cannot be exchanged here).
pub async fn relay(
    pool: Arc<upstream::pool::Pool>,
    held: Arc<Held>,
    prefix: Arc<str>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let Ok(peer) = held.instance.peer.clone() else { return };
    let credential = upstream::static_credential(&held.instance);
    let mut down = own_request(http::Method::GET, None, Some(&held.version), None);
    down.remove_header(&http::header::CONTENT_TYPE);
    let _ = down.insert_header(http::header::ACCEPT, "text/event-stream");
    let plan = Plan { upstream_session: Some(held.id.clone()), ..Plan::default() };
    let Ok(req) =
        upstream::upstream_request(&down, &held.instance, credential.as_ref(), 0, &plan, None, Noted::ANY)
    else {
        return;
    };
    let Ok(mut up) = pool.send(&peer, &req, b"").await else { return };
    let opened = tokio::select! {
        r = up.read_response_header() => r.is_ok(),
        _ = tx.closed() => false,
    };
    let is_stream = up
        .response_header()
        .is_some_and(|h| h.status == http::StatusCode::OK && upstream::is_event_stream(h));
    if !opened || !is_stream {
        return;
    }
    up.set_read_timeout(None);
    let mut rewriter =
        crate::sse::MessageRewriter::new(crate::sse::Rewrites { request_ids: Some(prefix), complete: None });
    loop {
        tokio::select! {
            chunk = up.read_response_body() => match chunk {
                Ok(Some(data)) => {
                    let out = crate::sse::without_events(rewriter.feed(data), b"/list_changed\"");
                    if !out.is_empty() && tx.send(out).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            _ = tx.closed() => return,
        }
    }
}

/// Listens for updates of `uris` (the server's own URI → the one the client knows) at a 2026-07-28
/// server, for a client's `subscriptions/listen` on `/mcp`: the server's `notifications/resources/updated`
/// reach `tx` with the client's URI and subscription id (`client_id`); its acknowledgement and anything
/// else stay here. Ends with the server's stream, or when `tx` closes.
pub async fn listen_resources(
    pool: Arc<upstream::pool::Pool>,
    instance: Arc<Instance>,
    uris: Vec<(String, String)>,
    client_id: Value,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let Ok(peer) = instance.peer.clone() else { return };
    let credential = upstream::static_credential(&instance);
    let originals: Vec<&str> = uris.iter().map(|(original, _)| original.as_str()).collect();
    let body = Bytes::from(
        json!({
            "jsonrpc": "2.0",
            "id": "mcpgw-listen",
            "method": "subscriptions/listen",
            "params": {
                "notifications": {"resourceSubscriptions": originals},
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": crate::routing::catalog::MODERN,
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        })
        .to_string(),
    );
    let mut down = own_request(http::Method::POST, None, Some(crate::routing::catalog::MODERN), None);
    let _ = down.insert_header("mcp-method", "subscriptions/listen");
    let Ok(req) = upstream::upstream_request(
        &down,
        &instance,
        credential.as_ref(),
        body.len(),
        &Plan::default(),
        None,
        Noted::ANY,
    ) else {
        return;
    };
    let sent = async {
        let mut up = pool.send(&peer, &req, &body).await?;
        up.read_response_header().await?;
        Ok::<_, Box<pingora::Error>>(up)
    };
    let mut up = tokio::select! {
        r = sent => match r {
            Ok(up) => up,
            Err(_) => return,
        },
        _ = tx.closed() => return,
    };
    if up.response_header().is_none_or(|h| h.status != http::StatusCode::OK) {
        return;
    }
    up.set_read_timeout(None);
    let mut parser = crate::sse::Parser::default();
    loop {
        let chunk = tokio::select! {
            chunk = up.read_response_body() => chunk,
            _ = tx.closed() => return,
        };
        let Ok(Some(chunk)) = chunk else { return };
        let Ok(events) = parser.feed(&chunk) else { return };
        for event in events {
            let Ok(mut message) = serde_json::from_str::<Value>(&event.data) else { continue };
            if message.get("method").and_then(Value::as_str) != Some("notifications/resources/updated") {
                continue;
            }
            let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else { continue };
            if let Some(uri) = params.get("uri").and_then(Value::as_str)
                && let Some((_, exposed)) = uris.iter().find(|(original, _)| original == uri)
            {
                params.insert("uri".into(), Value::String(exposed.clone()));
            }
            params.insert("_meta".into(), json!({"io.modelcontextprotocol/subscriptionId": client_id}));
            if tx.send(Bytes::from(format!("event: message\ndata: {message}\n\n"))).await.is_err() {
                return;
            }
        }
    }
}
