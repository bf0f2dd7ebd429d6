//! Streamable HTTP clients in front of legacy HTTP+SSE (2024-11-05) servers. The proxy holds the upstream
//! SSE stream for each bridged session, POSTs every client message to the upstream's message endpoint, and
//! hands each response back on the POST that asked for it; server-initiated messages go to the client's
//! GET stream (held back, bounded, until one is open).
//!
//! The upstream stream lives in this process, so a bridged session belongs to the replica that opened it:
//! another replica answers its token with 404 and the client re-initializes there (see `proxy/SESSIONS.md`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ProxyError;
use crate::forward::{Failure, client_gone};
use crate::gateway::{Gateway, RequestCtx};
use crate::jsonrpc::Rpc;
use crate::routing::{Instance, Server, UpstreamAuth};
use crate::session::Scope;
use crate::sse::Parser;

/// Server-initiated messages kept for a client that has no GET stream open, at most (count, bytes).
const BACKLOG: usize = 1024;
const BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Prefix of the upstream part of a bridged session's token.
const BRIDGE: &str = "bridge:";

/// Bridged sessions held by this replica.
#[derive(Default)]
pub struct Bridges(Mutex<HashMap<String, Arc<Bridge>>>);

impl Bridges {
    fn get(&self, id: &str) -> Option<Arc<Bridge>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    fn insert(&self, bridge: Arc<Bridge>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(bridge.id.clone(), bridge);
    }

    fn remove(&self, id: &str) -> Option<Arc<Bridge>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// One upstream SSE stream standing in for a Streamable HTTP session.
pub struct Bridge {
    id: String,
    instance: Arc<Instance>,
    /// Path and query of the upstream's message endpoint (from its `endpoint` event).
    message_path: String,
    pending: Mutex<HashMap<String, oneshot::Sender<Bytes>>>,
    sink: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Held messages and their total size.
    backlog: Mutex<(VecDeque<Bytes>, usize)>,
    closed: AtomicBool,
    /// The task reading the upstream stream; aborting it closes the upstream connection.
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    /// Its place among the caller's long-lived streams, held while the bridge lives.
    _permit: crate::caps::Permit,
}

fn id_key(id: &Value) -> String {
    id.to_string()
}

impl Bridge {
    /// Routes one message from the upstream: a response to its waiting POST, anything else to the client.
    fn deliver(&self, message: Bytes) {
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

    /// The upstream stream ended: every waiting request fails and the client's stream ends.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
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

/// Handles a request on `/mcp/{server}` for a server registered with the legacy SSE transport.
pub async fn handle(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    body: Bytes,
    rpc: Option<&Rpc>,
    filter: Option<&crate::policy::ListFilter>,
) -> Result<(), Failure> {
    let req = session.req_header();
    let method = req.method.clone();
    let token = req.headers.get("mcp-session-id").and_then(text).map(str::to_owned);
    let Some(token) = token else {
        if method != http::Method::POST {
            return Err(ProxyError::BadRequest("Mcp-Session-Id header is required".into()).into());
        }
        if !matches!(rpc, Some(Rpc::Message { method, .. }) if method == "initialize") {
            return Err(ProxyError::LegacyOnly { server: server.name.to_string() }.into());
        }
        let bridge = open(gw, server, &ctx.binding()).await?;
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
        .and_then(|id| gw.bridges.get(&id))
        .filter(|b| !b.closed.load(Ordering::Acquire))
        .ok_or_else(|| ProxyError::SessionNotFound(crate::error::UNKNOWN_SESSION.into()))?;
    ctx.audited.instance = Some(bridge.instance.id.clone());
    match method {
        http::Method::POST => send(gw, session, ctx, server, &bridge, body, rpc, filter, None).await,
        http::Method::GET => stream(session, ctx, &bridge).await,
        http::Method::DELETE => {
            if let Some(b) = gw.bridges.remove(&bridge.id) {
                b.close();
            }
            reply(session, ctx, 200, None, Bytes::new(), None).await
        }
        _ => Err(ProxyError::BadRequest(format!("{method} is not supported on an MCP endpoint")).into()),
    }
}

/// Opens the upstream SSE stream on a balanced instance and waits for its `endpoint` event. The bridge
/// counts among `principal`'s long-lived streams (429/503 over the caps).
async fn open(gw: &Gateway, server: &Arc<Server>, principal: &Arc<str>) -> Result<Arc<Bridge>, ProxyError> {
    let permit = gw.streams.acquire_stream(principal)?;
    let idx = server.selector().pick(&[], &[]).ok_or_else(|| ProxyError::NoInstance {
        server: server.name.to_string(),
        detail: "no instance can take a new session".into(),
    })?;
    let instance = server.instances[idx].clone();
    let unreachable =
        |detail: String| ProxyError::UpstreamUnreachable { server: server.name.to_string(), detail };
    let peer = instance.peer.as_ref().map_err(|e| unreachable(e.clone()))?;
    let mut req = RequestHeader::build("GET", instance.path_and_query.as_bytes(), None)
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = req.insert_header(http::header::HOST, &instance.authority);
    let _ = req.insert_header(http::header::ACCEPT, "text/event-stream");
    // Token exchange needs the caller of each message; a bridge's upstream stream has none (it gets no
    // credential, and an upstream that requires one refuses: 502 upstream_auth_refused).
    if let Some(UpstreamAuth::Header(c)) = &instance.credential {
        let _ = req.insert_header(c.name.clone(), c.value.clone());
    }
    let (mut up, _) = gw.connector.get_http_session(peer).await.map_err(|e| unreachable(e.to_string()))?;
    let failed = |detail: String| ProxyError::UpstreamFailed { server: server.name.to_string(), detail };
    up.write_request_header(Box::new(req)).await.map_err(|e| failed(e.to_string()))?;
    up.finish_request_body().await.map_err(|e| failed(e.to_string()))?;
    let limit = gw.limits.upstream_timeout;
    let timeout = || ProxyError::UpstreamTimeout {
        server: server.name.to_string(),
        detail: "no endpoint event".into(),
    };
    tokio::time::timeout(limit, up.read_response_header())
        .await
        .map_err(|_| timeout())?
        .map_err(|e| failed(e.to_string()))?;
    let status = up.response_header().map_or(0, |r| r.status.as_u16());
    if status != 200 {
        return Err(failed(format!("the SSE endpoint answered {status}")));
    }
    up.set_read_timeout(None);
    let mut parser = Parser::default();
    let mut early = Vec::new();
    let endpoint = tokio::time::timeout(limit, async {
        loop {
            let Some(chunk) = up.read_response_body().await.map_err(|e| failed(e.to_string()))? else {
                return Err(failed("the SSE stream ended before its endpoint event".into()));
            };
            for event in parser.feed(&chunk).map_err(|e| failed(e.into()))? {
                if event.kind == "endpoint" {
                    return Ok(event.data);
                }
                early.push(Bytes::from(event.data));
            }
        }
    })
    .await
    .map_err(|_| timeout())??;
    let target =
        instance.endpoint.join(&endpoint).map_err(|e| failed(format!("bad endpoint {endpoint:?}: {e}")))?;
    let mut message_path = target.path().to_owned();
    if let Some(q) = target.query() {
        message_path.push('?');
        message_path.push_str(q);
    }
    let bridge = Arc::new(Bridge {
        id: crate::session::random_id(),
        instance,
        message_path,
        pending: Mutex::default(),
        sink: Mutex::default(),
        backlog: Mutex::new({
            let bytes = early.iter().map(Bytes::len).sum();
            (early.into_iter().collect(), bytes)
        }),
        closed: AtomicBool::new(false),
        reader: Mutex::default(),
        _permit: permit,
    });
    gw.bridges.insert(bridge.clone());
    let bridges = gw.bridges.clone();
    let reader = bridge.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(chunk)) = up.read_response_body().await {
            match parser.feed(&chunk) {
                Ok(events) => events
                    .into_iter()
                    .filter(|e| e.kind == "message")
                    .for_each(|e| reader.deliver(Bytes::from(e.data))),
                Err(_) => break,
            }
        }
        reader.close();
        bridges.remove(&reader.id);
        tracing::debug!(bridge = %reader.id, "Bridged SSE session ended upstream.");
    });
    *bridge.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    Ok(bridge)
}

/// POSTs one client message upstream; a request's response comes back on this POST.
#[allow(clippy::too_many_arguments)]
async fn send(
    gw: &Gateway,
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
    post_upstream(gw, server, bridge, body).await?;
    let Some(waiter) = waiter else {
        return reply(session, ctx, 202, None, Bytes::new(), token).await;
    };
    let limit = gw.limits.upstream_timeout;
    let response = tokio::select! {
        r = tokio::time::timeout(limit, waiter) => r,
        _ = client_gone(session) => {
            // A legacy client's disconnect is not a cancellation; the late response is dropped.
            return Ok(());
        }
    };
    match response {
        Ok(Ok(message)) => {
            let message = match filter {
                Some(filter) => filter.apply(&message, false),
                None => message,
            };
            reply(session, ctx, 200, Some("application/json"), message, token).await
        }
        Ok(Err(_)) => Err(ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: "the upstream SSE stream ended before the response".into(),
        }
        .into()),
        Err(_) => Err(ProxyError::UpstreamTimeout {
            server: server.name.to_string(),
            detail: format!("no response within {limit:?}"),
        }
        .into()),
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

async fn post_upstream(
    gw: &Gateway,
    server: &Server,
    bridge: &Bridge,
    body: Bytes,
) -> Result<(), ProxyError> {
    let instance = &bridge.instance;
    let failed = |detail: String| ProxyError::UpstreamFailed { server: server.name.to_string(), detail };
    let peer = instance.peer.as_ref().map_err(|e| failed(e.clone()))?;
    let mut req = RequestHeader::build("POST", bridge.message_path.as_bytes(), None)
        .map_err(|e| failed(e.to_string()))?;
    let _ = req.insert_header(http::header::HOST, &instance.authority);
    let _ = req.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    // The gateway's credential for this upstream, never the client's own (no token passthrough).
    // Token exchange needs the caller of each message; a bridge's upstream stream has none (it gets no
    // credential, and an upstream that requires one refuses: 502 upstream_auth_refused).
    if let Some(UpstreamAuth::Header(c)) = &instance.credential {
        let _ = req.insert_header(c.name.clone(), c.value.clone());
    }
    let (mut up, _) = gw.connector.get_http_session(peer).await.map_err(|e| {
        ProxyError::UpstreamUnreachable { server: server.name.to_string(), detail: e.to_string() }
    })?;
    up.write_request_header(Box::new(req)).await.map_err(|e| failed(e.to_string()))?;
    up.write_request_body(body, true).await.map_err(|e| failed(e.to_string()))?;
    up.finish_request_body().await.map_err(|e| failed(e.to_string()))?;
    up.set_read_timeout(Some(gw.limits.idle_timeout));
    tokio::time::timeout(gw.limits.upstream_timeout, up.read_response_header())
        .await
        .map_err(|_| failed("the message endpoint did not answer".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let status = up.response_header().map_or(0, |r| r.status.as_u16());
    while up.read_response_body().await.map_err(|e| failed(e.to_string()))?.is_some() {}
    gw.connector.release_http_session(up, peer, Some(gw.limits.pool_idle_timeout)).await;
    if !(200..300).contains(&status) {
        return Err(failed(format!("the message endpoint answered {status}")));
    }
    Ok(())
}

/// The client's GET stream: server-initiated messages, oldest first.
async fn stream(session: &mut Session, ctx: &mut RequestCtx, bridge: &Bridge) -> Result<(), Failure> {
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
    session.write_response_header(Box::new(resp), false).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(m) => {
                    let event = [b"event: message\ndata: ".as_slice(), &m, b"\n\n"].concat();
                    if session.write_response_body(Some(Bytes::from(event)), false).await.is_err() {
                        return Ok(());
                    }
                }
                None => break,
            },
            _ = client_gone(session) => return Ok(()),
        }
    }
    session.write_response_body(None, true).await.map_err(Failure::Abort)
}

pub(crate) async fn reply(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: Option<&str>,
    body: Bytes,
    token: Option<String>,
) -> Result<(), Failure> {
    let mut resp = ResponseHeader::build(status, Some(3)).map_err(Failure::Abort)?;
    if let Some(ct) = content_type {
        let _ = resp.insert_header(http::header::CONTENT_TYPE, ct);
    }
    let _ = resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    if let Some(token) = token {
        let _ = resp.insert_header("mcp-session-id", token);
    }
    session.write_response_header(Box::new(resp), body.is_empty()).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    ctx.audited.answer = crate::audit::capture::answer(&body);
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await.map_err(Failure::Abort)?;
    }
    Ok(())
}
