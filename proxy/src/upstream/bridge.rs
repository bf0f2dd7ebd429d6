//! Streamable HTTP sessions carried on a message transport: servers registered as legacy HTTP+SSE
//! ([`super::sse`]), WebSocket ([`super::websocket`]) or stdio ([`super::stdio`]) speak in messages, not in
//! HTTP exchanges. On a client's `initialize` the proxy opens a *link* to one instance (through the same
//! instance choice, retries and breaker as every upstream request); every client message goes out on it,
//! each response comes back on the POST that asked for it, and server-initiated messages go to the
//! client's GET stream (held back, bounded in count and bytes, until one is open). Progress notifications
//! of a request that asked for them (`_meta.progressToken`) come back on that request's POST instead, as
//! an SSE stream ending with its response: in the order the server sent them, so none arrives after the
//! result (on the GET stream one could, and the client had stopped listening for it by then).
//!
//! A link lives in this process, so a bridged session belongs to the replica that opened it: another
//! replica answers its token with 404 and the client re-initializes there (see `proxy/SESSIONS.md`). A
//! bridge holds one of its principal's capped stream places and counts as in flight on its instance
//! (least connections) while it lives; it ends on `DELETE`, when its link ends, after `--bridge-idle-timeout`
//! without a message either way (while no GET stream is open), and at the latest when its session token
//! expires (`--session-ttl`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::request::Session;
use async_trait::async_trait;
use bytes::Bytes;
use mcpgw_proto::v1::Transport;
use pingora::http::{RequestHeader, ResponseHeader};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{Attempt, Pinning, Target};
use crate::balance::InFlight;
use crate::error::{Failure, ProxyError};
use crate::jsonrpc::Rpc;
use crate::request::{RequestCtx, client_gone, reply};
use crate::routing::{Instance, Server};
use crate::session::Scope;
use crate::shared::Shared;

/// Server-initiated messages kept for a client that has no GET stream open, at most (count, bytes).
const BACKLOG: usize = 1024;
const BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Why a bridge ended, when the upstream ended it.
const LINK_ENDED: &str = "its link ended";
/// Prefix of the upstream part of a bridged session's token.
const BRIDGE: &str = "bridge:";

/// Sends client messages to the upstream end of a bridge.
#[async_trait]
pub(crate) trait Link: Send + Sync {
    /// Sends one JSON-RPC message. `down` is the client request carrying it (its caller is who the
    /// upstream credential is for).
    async fn send(
        &self,
        gw: &Shared,
        server: &Server,
        down: &RequestHeader,
        message: Bytes,
    ) -> Result<(), ProxyError>;

    /// Ends the link now, without waiting (a stdio process is killed); dropping it does the rest.
    fn close(&self) {}
}

/// Messages from the upstream end of a bridge.
#[async_trait]
pub(crate) trait Inbound: Send {
    /// The next message; `None` once the link has ended (the transport logs why).
    async fn next(&mut self) -> Option<Bytes>;
}

/// A link just opened: its two directions, and messages the upstream sent before it was ready.
pub(crate) struct Opened {
    pub link: Box<dyn Link>,
    pub inbound: Box<dyn Inbound>,
    pub early: Vec<Bytes>,
}

/// The bridge a caller's sessionless requests share on one server: (server id, principal binding).
type SharedKey = (String, Arc<str>);

/// Bridged sessions held by this replica: the clients' (by bridge id), and the gateway's own, one per
/// server and caller, which carry requests made without a session (2026-07-28 clients, `/mcp`).
#[derive(Default)]
pub struct Bridges {
    sessions: Mutex<HashMap<String, Arc<Bridge>>>,
    shared: Mutex<HashMap<SharedKey, Arc<tokio::sync::OnceCell<Arc<Bridge>>>>>,
}

impl Bridges {
    fn get(&self, id: &str) -> Option<Arc<Bridge>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn insert(&self, bridge: Arc<Bridge>) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(bridge.id.clone(), bridge);
    }

    fn remove(&self, id: &str) -> Option<Arc<Bridge>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Bridges open now.
    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every bridge (shutdown): waiting requests fail, links close, stdio processes are killed.
    pub fn close_all(&self) {
        let all: Vec<_> =
            self.sessions.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, b)| b).collect();
        all.iter().for_each(|b| b.close());
        let shared: Vec<_> = self.shared.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        shared.iter().filter_map(|(_, cell)| cell.get()).for_each(|b| b.close());
    }
}

/// How long a bridge may live.
#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    /// Without a message either way (and no GET stream open).
    pub idle: Duration,
    /// In all: the session token's lifetime.
    pub max: Duration,
}

/// One link standing in for a Streamable HTTP session.
pub struct Bridge {
    id: String,
    instance: Arc<Instance>,
    link: Box<dyn Link>,
    pending: Mutex<HashMap<String, oneshot::Sender<Bytes>>>,
    /// Progress tokens of requests in flight, and the POST each one's notifications go to.
    progress: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
    sink: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Held messages and their total size.
    backlog: Mutex<(VecDeque<Bytes>, usize)>,
    closed: AtomicBool,
    /// The task reading the link; aborting it ends the link (closes the connection, kills the process).
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    opened: Instant,
    /// Milliseconds after `opened` of the last message either way.
    last_used: AtomicU64,
    /// Its place among the caller's long-lived streams, held while the bridge lives.
    _permit: crate::caps::Permit,
    /// Counted on its instance (least connections) while it lives.
    _in_flight: InFlight,
    /// The gateway's own (`Bridges::shared`): server-initiated messages have no client to go to.
    shared: bool,
    /// Ids of the requests the gateway sends on a shared bridge.
    next_id: AtomicU64,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Bridge {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.store(ms, Ordering::Relaxed);
    }

    /// When the bridge ends unless used meanwhile, and whether that end is its lifetime's.
    fn deadline(&self, limits: Lifetimes) -> (Instant, bool) {
        let end = self.opened + limits.max;
        let streaming =
            self.sink.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|s| !s.is_closed());
        let busy = streaming || !self.pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if busy {
            // Checked again after an idle period: the stream or the request may be gone by then.
            return ((Instant::now() + limits.idle).min(end), false);
        }
        let idle = self.opened + Duration::from_millis(self.last_used.load(Ordering::Relaxed)) + limits.idle;
        (idle.min(end), end <= idle)
    }

    /// Routes one message from the upstream: a response to its waiting POST, anything else to the client.
    fn deliver(&self, message: Bytes) {
        self.touch();
        let parsed: Option<Value> = serde_json::from_slice(&message).ok();
        if let Some(v) = &parsed
            && v.get("method").is_none()
            && (v.get("result").is_some() || v.get("error").is_some())
            && let Some(id) = v.get("id")
        {
            let waiter = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id_key(id));
            if let Some(tx) = waiter {
                let _ = tx.send(message);
            }
            return;
        }
        if let Some(v) = &parsed
            && v.get("method").and_then(Value::as_str) == Some("notifications/progress")
            && let Some(token) = v.pointer("/params/progressToken")
        {
            let request =
                self.progress.lock().unwrap_or_else(|e| e.into_inner()).get(&id_key(token)).cloned();
            if request.is_some_and(|tx| tx.try_send(message.clone()).is_ok()) {
                return;
            }
        }
        if self.shared {
            tracing::debug!(bridge = %self.id, "A server message on a shared bridge has no client; dropped.");
            return;
        }
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(sink) = sink
            && sink.try_send(message.clone()).is_ok()
        {
            return;
        }
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let (held, bytes) = &mut *backlog;
        *bytes += message.len();
        held.push_back(message);
        // Oldest first out, by count and by size.
        while held.len() > BACKLOG || (*bytes > BACKLOG_BYTES && held.len() > 1) {
            if let Some(dropped) = held.pop_front() {
                *bytes -= dropped.len();
            }
            tracing::warn!(bridge = %self.id, "Dropping a server message: the client has no GET stream open.");
        }
    }

    /// The link ended: every waiting request fails and the client's stream ends.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.link.close();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            reader.abort();
        }
    }
}

fn text(v: &http::HeaderValue) -> Option<&str> {
    v.to_str().ok()
}

/// Handles a request on `/mcp/{server}` for a server on a message transport; a new session's link goes
/// to an instance of `target`.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    gw: &Shared,
    bridges: &Arc<Bridges>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    target: Target,
    body: Bytes,
    rpc: Option<&Rpc>,
    filter: Option<&crate::policy::ListFilter>,
) -> Result<(), Failure> {
    let req = session.req_header();
    let method = req.method.clone();
    let token = session.mcp_headers().session_id().and_then(text).map(str::to_owned);
    let Some(token) = token else {
        if method != http::Method::POST {
            return Err(ProxyError::BadRequest("Mcp-Session-Id header is required".into()).into());
        }
        match rpc {
            Some(Rpc::Message { method, .. }) if method == "initialize" => {}
            // Dual-era clients discover first: told this server is reached through sessions, they open one.
            Some(Rpc::Message { method, .. }) if method == "server/discover" => {
                return Err(ProxyError::LegacyOnly { server: server.name.to_string() }.into());
            }
            _ => {
                if session.mcp_headers().is_stateless() {
                    // A 2026-07-28 request's routing headers must match its body, as on any server.
                    crate::headers::check(session.mcp_headers(), rpc).map_err(ProxyError::from)?;
                }
                let answer =
                    request_shared(gw, bridges, session.req_header(), ctx, server, &target, &body, rpc)
                        .await?;
                let answer = match (answer, filter) {
                    (Some(answer), Some(filter)) => Some(filter.apply(&answer, false)),
                    (answer, _) => answer,
                };
                return match answer {
                    Some(answer) => reply(session, ctx, 200, Some("application/json"), answer, None).await,
                    None => reply(session, ctx, 202, None, Bytes::new(), None).await,
                };
            }
        }
        let bridge = open(gw, bridges, session.req_header(), server, &target, &ctx.binding(), false).await?;
        ctx.audited.instance = Some(bridge.instance.id.clone());
        let token = gw.sessions.seal(
            Scope::Session(&server.id, &ctx.binding()),
            &bridge.instance.id,
            &format!("{BRIDGE}{}", bridge.id),
        );
        return send(gw, session, ctx, server, &bridge, body, rpc, None, Some(token)).await;
    };
    let bridge = gw
        .sessions
        .open(Scope::Session(&server.id, &ctx.binding()), &token)
        .ok()
        .and_then(|claims| claims.upstream.strip_prefix(BRIDGE).map(str::to_owned))
        .and_then(|id| bridges.get(&id))
        .filter(|b| !b.closed.load(Ordering::Acquire))
        .ok_or_else(|| ProxyError::SessionNotFound(crate::error::UNKNOWN_SESSION.into()))?;
    ctx.audited.instance = Some(bridge.instance.id.clone());
    match method {
        http::Method::POST => send(gw, session, ctx, server, &bridge, body, rpc, filter, None).await,
        http::Method::GET => stream(session, ctx, &bridge, &gw.draining).await,
        http::Method::DELETE => {
            if let Some(b) = bridges.remove(&bridge.id) {
                b.close();
            }
            reply(session, ctx, 200, None, Bytes::new(), None).await
        }
        _ => Err(ProxyError::BadRequest(format!("{method} is not supported on an MCP endpoint")).into()),
    }
}

/// Opens a link on an instance of `target` (another is tried while none could be reached) and starts
/// reading it. The bridge counts among `principal`'s long-lived streams (429/503 over the caps).
async fn open(
    gw: &Shared,
    bridges: &Arc<Bridges>,
    down: &RequestHeader,
    server: &Arc<Server>,
    target: &Target,
    principal: &Arc<str>,
    shared: bool,
) -> Result<Arc<Bridge>, Failure> {
    let permit = gw.streams.acquire_stream(principal)?;
    let mut attempts = super::Attempts::new(gw, server, target, Pinning::None);
    let (opened, in_flight) = loop {
        let in_flight = attempts.next()?;
        let instance = in_flight.instance();
        let opened = match server.transport {
            Transport::Sse => super::sse::open(gw, server, instance, down).await,
            Transport::Websocket => super::websocket::open(gw, server, instance, down).await,
            Transport::Stdio => super::stdio::open(gw, server, instance).await,
            _ => Err(Attempt::Failed(
                ProxyError::BadRequest(format!("server {} is not on a message transport", server.name))
                    .into(),
                None,
            )),
        };
        if let Some(opened) = attempts.settle(instance, opened.map(|o| (o, Some(true))))? {
            break (opened, in_flight);
        }
    };
    let Opened { link, mut inbound, early } = opened;
    let bridge = Arc::new(Bridge {
        id: crate::session::random_id(),
        instance: in_flight.instance().clone(),
        link,
        pending: Mutex::default(),
        progress: Mutex::default(),
        sink: Mutex::default(),
        backlog: Mutex::new({
            let bytes = early.iter().map(Bytes::len).sum();
            (early.into_iter().collect(), bytes)
        }),
        closed: AtomicBool::new(false),
        reader: Mutex::default(),
        opened: Instant::now(),
        last_used: AtomicU64::new(0),
        _permit: permit,
        _in_flight: in_flight,
        shared,
        next_id: AtomicU64::new(1),
    });
    if !shared {
        bridges.insert(bridge.clone());
    }
    let registry = bridges.clone();
    let reader = bridge.clone();
    let lifetimes = Lifetimes { idle: gw.limits.bridge_idle_timeout, max: gw.limits.bridge_lifetime };
    let name = server.name.clone();
    let (breakers, breaker) = (gw.breakers.clone(), server.breaker);
    let task = tokio::spawn(async move {
        let why = loop {
            let (deadline, lifetime) = reader.deadline(lifetimes);
            tokio::select! {
                message = inbound.next() => match message {
                    Some(m) => reader.deliver(m),
                    None => break LINK_ENDED,
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let (now_due, lifetime_now) = reader.deadline(lifetimes);
                    if now_due <= Instant::now() {
                        break if lifetime || lifetime_now { "its session expired" } else { "it was idle" };
                    }
                }
            }
        };
        reader.closed.store(true, Ordering::Release);
        registry.remove(&reader.id);
        if why == LINK_ENDED {
            // The upstream ended it (a process exited, a connection closed): the instance's breaker hears.
            breakers.report(crate::breaker::Outcome {
                instance_id: reader.instance.id.clone(),
                server: name.clone(),
                state: reader.instance.state.clone(),
                config: breaker,
                ok: false,
            });
        }
        tracing::debug!(server = %name, bridge = %reader.id, why, "Bridged session ended.");
        // Dropping `inbound` closes the link (connection, process); the rest of `close` runs here too.
        drop(inbound);
        reader.close();
    });
    *bridge.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    Ok(bridge)
}

/// Sends one client message upstream; a request's response comes back on this POST.
#[allow(clippy::too_many_arguments)]
async fn send(
    gw: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Server,
    bridge: &Bridge,
    body: Bytes,
    rpc: Option<&Rpc>,
    filter: Option<&crate::policy::ListFilter>,
    token: Option<String>,
) -> Result<(), Failure> {
    let request_id = match rpc {
        Some(Rpc::Message { id: Some(id), .. }) => Some(id_key(id)),
        _ => None,
    };
    // Its waiter leaves with the request, however it ends (answered, timed out, client gone): declared
    // before the waiter, so it is dropped after it and finds the waiter's sender closed.
    let _waiting = request_id.as_ref().map(|id| Waiting { bridge, id });
    let waiter = match &request_id {
        None => None,
        Some(id) => {
            let mut pending = bridge.pending.lock().unwrap_or_else(|e| e.into_inner());
            // A second request with the id of one in flight would take its answer: refused.
            if pending.get(id).is_some_and(|tx| !tx.is_closed()) {
                return Err(
                    ProxyError::Conflict(format!("a request with id {id} is already in flight")).into()
                );
            }
            let (tx, rx) = oneshot::channel();
            pending.insert(id.clone(), tx);
            Some(rx)
        }
    };
    // Its progress notifications come back on this POST (in order, before its response).
    let mut progress = progress_token(&body).filter(|_| waiter.is_some()).map(|key| {
        let (tx, rx) = mpsc::channel(PROGRESS_BACKLOG);
        bridge.progress.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), tx);
        (ProgressRoute { bridge, key }, rx)
    });
    bridge.post(gw, server, session.req_header(), body).await?;
    let Some(mut waiter) = waiter else {
        return reply(session, ctx, 202, None, Bytes::new(), token).await;
    };
    let limit = gw.limits.upstream_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let mut streaming = false;
    let response = loop {
        let note = async {
            match &mut progress {
                Some((_, rx)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Notifications first: one sent before the response is written before it.
            biased;
            Some(note) = note => {
                if !streaming {
                    start_events(session, ctx, token.as_deref()).await?;
                    streaming = true;
                }
                if write_event(session, &note).await.is_err() {
                    return Ok(());
                }
            }
            r = tokio::time::timeout_at(deadline, &mut waiter) => break r,
            _ = client_gone(session) => {
                // A legacy client's disconnect is not a cancellation; the late response is dropped.
                return Ok(());
            }
        }
    };
    let message = answered(server, limit, response)?;
    let message = match filter {
        Some(filter) => filter.apply(&message, false),
        None => message,
    };
    if !streaming {
        return reply(session, ctx, 200, Some("application/json"), message, token).await;
    }
    ctx.audited.answer = crate::audit::capture::answer(&message);
    if write_event(session, &message).await.is_err() {
        return Ok(());
    }
    session.write_response_body(Bytes::new(), true).await.map_err(Failure::Abort)
}

/// Notifications a request's POST holds while its client reads them, at most.
const PROGRESS_BACKLOG: usize = 64;

/// The key of a request's `params._meta.progressToken`, if it has one.
fn progress_token(body: &[u8]) -> Option<String> {
    memchr::memmem::find(body, b"progressToken")?;
    crate::jsonrpc::params_meta(body).get("progressToken").map(id_key)
}

/// Sends a request's progress notifications to its POST while it lives.
struct ProgressRoute<'a> {
    bridge: &'a Bridge,
    key: String,
}

impl Drop for ProgressRoute<'_> {
    fn drop(&mut self) {
        self.bridge.progress.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// Starts a POST's answer as an SSE stream.
async fn start_events(
    session: &mut Session,
    ctx: &mut RequestCtx,
    token: Option<&str>,
) -> Result<(), Failure> {
    let mut resp = ResponseHeader::build(200, Some(4)).map_err(Failure::Abort)?;
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream");
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-cache");
    let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    if let Some(token) = token {
        let _ = resp.insert_header("mcp-session-id", token);
    }
    session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    Ok(())
}

/// Writes one message as an SSE event.
async fn write_event(session: &mut Session, message: &[u8]) -> pingora::Result<()> {
    let event = [b"event: message\ndata: ".as_slice(), message, b"\n\n"].concat();
    session.write_response_body(Bytes::from(event), false).await
}

/// The answer a request waited for, or why there is none (the link ended, or the upstream timeout).
fn answered(
    server: &Server,
    limit: Duration,
    waited: Result<Result<Bytes, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
) -> Result<Bytes, ProxyError> {
    match waited {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(_)) => Err(ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: "the upstream link ended before the response".into(),
        }),
        Err(_) => Err(ProxyError::UpstreamTimeout {
            server: server.name.to_string(),
            detail: format!("no response within {limit:?}"),
        }),
    }
}

/// Removes a request's waiter from its bridge when the request ends.
struct Waiting<'a> {
    bridge: &'a Bridge,
    id: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut pending = self.bridge.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Only this request's own waiter, whose receiver is gone by now (not a later request's).
        if pending.get(self.id).is_some_and(oneshot::Sender::is_closed) {
            pending.remove(self.id);
        }
    }
}

/// The client's GET stream: server-initiated messages, oldest first.
async fn stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    bridge: &Bridge,
    draining: &crate::drain::Draining,
) -> Result<(), Failure> {
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    {
        let mut sink = bridge.sink.lock().unwrap_or_else(|e| e.into_inner());
        if sink.as_ref().is_some_and(|s| !s.is_closed()) {
            return Err(ProxyError::Conflict("this session already has a GET stream".into()).into());
        }
        let mut backlog = bridge.backlog.lock().unwrap_or_else(|e| e.into_inner());
        backlog.1 = 0;
        backlog.0.drain(..).for_each(|m| {
            let _ = tx.try_send(m);
        });
        *sink = Some(tx);
    }
    let mut resp = ResponseHeader::build(200, Some(3)).map_err(Failure::Abort)?;
    let _ = resp.insert_header(http::header::CONTENT_TYPE, "text/event-stream");
    let _ = resp.insert_header(http::header::CACHE_CONTROL, "no-cache");
    let _ = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(m) => {
                    if write_event(session, &m).await.is_err() {
                        return Ok(());
                    }
                }
                None => break,
            },
            _ = client_gone(session) => return Ok(()),
            _ = draining.wait() => break,
        }
    }
    session.write_response_body(Bytes::new(), true).await.map_err(Failure::Abort)
}

/// The protocol revision the gateway asks for when it opens a bridge for itself.
const SHARED_VERSION: &str = "2025-11-25";

/// Sends one sessionless message (a 2026-07-28 client's, or `/mcp`'s) on the caller's shared bridge to
/// `server`, opening it first (link, `initialize`, `notifications/initialized`) when there is none: a
/// request's answer is returned with the client's own id (and, for a 2026-07-28 client, the fields it
/// needs of a legacy result); a notification returns `None` once sent. Server-initiated messages on a
/// shared bridge have no client to go to and are dropped.
#[allow(clippy::too_many_arguments)]
pub async fn request_shared(
    gw: &Shared,
    bridges: &Arc<Bridges>,
    down: &RequestHeader,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    target: &Target,
    body: &Bytes,
    rpc: Option<&Rpc>,
) -> Result<Option<Bytes>, Failure> {
    let Some(Rpc::Message { id, method, .. }) = rpc else {
        return Err(ProxyError::InvalidRequest("the body must be one JSON-RPC message".into()).into());
    };
    let principal = ctx.binding();
    let bridge = shared_bridge(gw, bridges, down, server, target, &principal).await?;
    ctx.audited.instance = Some(bridge.instance.id.clone());
    let mut message: Value = serde_json::from_slice(body)
        .map_err(|e| ProxyError::InvalidRequest(format!("the body is not JSON: {e}")))?;
    // The bridge speaks the handshake era: a 2026-07-28 envelope (`_meta` protocol version, client
    // capabilities and info) is not for it, and servers refuse requests carrying one on a session.
    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut)
        && let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut)
    {
        meta.retain(|key, _| !key.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params.remove("_meta");
        }
    }
    let Some(id) = id else {
        bridge.post(gw, server, down, Bytes::from(message.to_string())).await?;
        return Ok(None);
    };
    let mut answer = bridge.request(gw, server, down, message).await?;
    answer["id"] = id.clone();
    if crate::headers::McpHeaders::of(down).is_stateless() {
        let complete = crate::sse::Completion { cacheable: method == "resources/read" };
        crate::sse::Rewrites { request_ids: None, complete: Some(complete) }.apply(&mut answer);
    }
    Ok(Some(Bytes::from(answer.to_string())))
}

/// The caller's shared bridge to `server`, opened and initialized once (concurrent first requests wait
/// for the same one); one that ended is replaced.
async fn shared_bridge(
    gw: &Shared,
    bridges: &Arc<Bridges>,
    down: &RequestHeader,
    server: &Arc<Server>,
    target: &Target,
    principal: &Arc<str>,
) -> Result<Arc<Bridge>, Failure> {
    let key: SharedKey = (server.id.clone(), principal.clone());
    for _ in 0..2 {
        let cell =
            bridges.shared.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().clone();
        let bridge = cell
            .get_or_try_init(|| async {
                let bridge = open(gw, bridges, down, server, target, principal, true).await?;
                let hello = json!({
                    "jsonrpc": "2.0",
                    "method": "initialize",
                    "params": {
                        "protocolVersion": SHARED_VERSION,
                        "capabilities": {},
                        "clientInfo": {"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")},
                    },
                });
                let answer = bridge.request(gw, server, down, hello).await?;
                if answer.get("result").is_none() {
                    bridge.close();
                    return Err(Failure::from(ProxyError::UpstreamFailed {
                        server: server.name.to_string(),
                        detail: format!("initialize was refused: {}", answer["error"]),
                    }));
                }
                let initialized =
                    Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
                bridge.post(gw, server, down, initialized).await?;
                Ok::<_, Failure>(bridge)
            })
            .await?
            .clone();
        if !bridge.closed.load(Ordering::Acquire) {
            return Ok(bridge);
        }
        // Ended (its process exited, its connection closed, it idled out): the next one replaces it.
        let mut shared = bridges.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            shared.remove(&key);
        }
    }
    Err(ProxyError::UpstreamFailed {
        server: server.name.to_string(),
        detail: "the shared link ended at once".into(),
    }
    .into())
}

impl Bridge {
    /// Sends a request of the gateway's own (its id replaced by one of the bridge's) and waits for the
    /// answer, within the upstream timeout.
    async fn request(
        &self,
        gw: &Shared,
        server: &Server,
        down: &RequestHeader,
        mut message: Value,
    ) -> Result<Value, ProxyError> {
        let id = json!(format!("mcpgw-{}", self.next_id.fetch_add(1, Ordering::Relaxed)));
        message["id"] = id.clone();
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), tx);
        let _waiting = Waiting { bridge: self, id: &key };
        self.post(gw, server, down, Bytes::from(message.to_string())).await?;
        let limit = gw.limits.upstream_timeout;
        let answer = answered(server, limit, tokio::time::timeout(limit, rx).await)?;
        serde_json::from_slice(&answer).map_err(|e| ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: format!("an answer that is not JSON: {e}"),
        })
    }

    /// Sends one message on the link (it counts as use), telling the instance's breaker how that went.
    async fn post(
        &self,
        gw: &Shared,
        server: &Server,
        down: &RequestHeader,
        message: Bytes,
    ) -> Result<(), ProxyError> {
        self.touch();
        let sent = self.link.send(gw, server, down, message).await;
        let ok = sent.as_ref().map_or_else(super::breaker_ok, |()| true);
        super::report_outcome(gw, server, &self.instance, ok);
        sent
    }
}
