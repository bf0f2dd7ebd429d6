//! The deprecated HTTP+SSE transport (2024-11-05) on `/mcp`: `GET /mcp/sse` opens the client's stream and
//! names `/mcp/message?sessionId=<token>` in its `endpoint` event; every message POSTed there is answered
//! 202 and its answer goes on the stream. The stream lives in one proxy process, so such a session is bound
//! to the replica holding it (as bridged sessions are): a POST reaching another replica gets 404 and the
//! client reconnects. What the client said in `initialize` is kept with the stream; calls use the same
//! routing, admission and upstream sessions as Streamable HTTP clients of `/mcp`, their answers read whole
//! and put on the stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::request::Session;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Aggregator;
use super::upstreams::{self, Held};
use super::{ListKind, own};
use crate::error::{Failure, ProxyError};
use crate::identity::Principal;
use crate::jsonrpc::Rpc;
use crate::request::{RequestCtx, reply};
use crate::routing::{RoutingTable, Server};
use crate::session::{Claims, ClientHello, Scope};
use crate::upstream::{self, Plan};

/// Messages waiting for a slow SSE client before new ones are refused.
const BACKLOG: usize = 256;

/// One open client stream: where its messages go, and what its client said in `initialize`.
struct Entry {
    tx: mpsc::Sender<Bytes>,
    hello: Option<ClientHello>,
}

/// The HTTP+SSE streams this replica holds, by session id.
#[derive(Default)]
pub struct Streams(Mutex<HashMap<String, Entry>>);

/// Removes a stream's entry when its GET ends.
struct Registered<'a> {
    streams: &'a Streams,
    id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.streams.0.lock() {
            map.remove(&self.id);
        }
    }
}

/// Where a message's answers go: the client's stream.
pub struct Sink {
    tx: mpsc::Sender<Bytes>,
}

impl Sink {
    /// Puts one JSON-RPC message on the stream (refused when the client reads too slowly).
    pub(crate) fn send(&self, message: &[u8]) -> Result<(), ProxyError> {
        let mut event = Vec::with_capacity(message.len() + 24);
        event.extend_from_slice(b"event: message\ndata: ");
        event.extend_from_slice(message);
        event.extend_from_slice(b"\n\n");
        self.tx.try_send(Bytes::from(event)).map_err(|_| {
            ProxyError::Conflict(format!(
                "the session's SSE stream is not being read ({BACKLOG} messages wait)"
            ))
        })
    }

    /// Sends a call into the gateway's upstream session `held` and puts its answer (every message of an
    /// SSE answer, requests from the upstream given ids naming it) on the stream.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward(
        &self,
        gw: &Aggregator<'_>,
        session: &Session,
        ctx: &mut RequestCtx,
        server: &Server,
        held: &Held,
        plan: &Plan,
        body: &Bytes,
    ) -> Result<(), Failure> {
        ctx.audited.instance = Some(held.instance.id.clone());
        // The client's own headers (and its sessionId query) are not the upstream's business.
        let down = upstreams::own_request(
            http::Method::POST,
            Some(session.req_header()),
            Some(&held.version),
            Some(&held.id).filter(|id| !id.is_empty()).map(String::as_str),
        );
        let (resp, answer) =
            upstream::http::request_whole(gw, &down, server, &held.instance, body, plan).await?;
        if resp.status == http::StatusCode::NOT_FOUND && plan.reopen {
            return Err(Failure::UpstreamSessionGone);
        }
        ctx.audited.answer = crate::audit::capture::answer(&answer);
        let sse = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/event-stream"));
        if !sse {
            self.send(&plan.rewrites.apply_body(&answer))?;
            return Ok(());
        }
        let mut rewriter = crate::sse::MessageRewriter::new(plan.rewrites.clone());
        let mut events = rewriter.feed(answer);
        events = Bytes::from([events, rewriter.finish()].concat());
        let mut parser = crate::sse::Parser::default();
        for event in parser
            .feed(&events)
            .map_err(|e| ProxyError::UpstreamFailed { server: server.name.to_string(), detail: e.into() })?
        {
            self.send(event.data.as_bytes())?;
        }
        Ok(())
    }
}

/// `GET /mcp/sse`: opens a client's stream and tells it where to POST.
pub async fn open(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    principal: &Principal,
) -> Result<(), Failure> {
    if session.req_header().method != http::Method::GET {
        return Err(ProxyError::MethodNotAllowed { allowed: "GET" }.into());
    }
    let _permit = gw.streams.acquire_stream(principal.binding())?;
    let claims = Claims {
        instance: crate::session::random_id(),
        upstream: String::new(),
        issued: crate::session::now(),
        aggregate: Some(ClientHello {
            protocol_version: "2024-11-05".into(),
            capabilities: "{}".into(),
            client_info: "{}".into(),
        }),
    };
    let token = gw.sessions.seal_claims(Scope::Aggregate(principal.binding()), &claims);
    let (tx, mut rx) = mpsc::channel(BACKLOG);
    if let Ok(mut map) = gw.state.sse_streams.0.lock() {
        map.insert(claims.instance.clone(), Entry { tx, hello: None });
    }
    let _registered = Registered { streams: &gw.state.sse_streams, id: claims.instance.clone() };
    super::start_event_stream(session, ctx).await?;
    let endpoint = format!("event: endpoint\ndata: /mcp/message?sessionId={token}\n\n");
    session.write_response_body(Bytes::from(endpoint), false).await.map_err(Failure::Abort)?;
    loop {
        let out = tokio::select! {
            message = rx.recv() => match message {
                Some(message) => message,
                None => break,
            },
            _ = tokio::time::sleep(super::KEEPALIVE) => Bytes::from_static(b": keep-alive\n\n"),
            _ = crate::request::client_gone(session) => return Ok(()),
            _ = gw.draining.wait() => break,
        };
        if session.write_response_body(out, false).await.is_err() {
            return Ok(());
        }
    }
    session.write_response_body(Bytes::new(), true).await.map_err(Failure::Abort)
}

/// `POST /mcp/message?sessionId=…`: one message of a client whose stream this replica holds; 202, the
/// answer on the stream.
pub async fn message(
    gw: &Aggregator<'_>,
    session: &mut Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &Principal,
    body: Bytes,
    rpc: Option<&Rpc>,
) -> Result<(), Failure> {
    if session.req_header().method != http::Method::POST {
        return Err(ProxyError::MethodNotAllowed { allowed: "POST" }.into());
    }
    let token = crate::request::session_id_query(session)?;
    let claims = gw
        .sessions
        .open(Scope::Aggregate(principal.binding()), &token)
        .map_err(crate::request::unknown_session)?;
    let gone = || ProxyError::SessionNotFound("its stream is not open on this proxy".into());
    let (tx, hello) = {
        let map = gw.state.sse_streams.0.lock().map_err(|_| gone())?;
        let entry = map.get(&claims.instance).ok_or_else(gone)?;
        (entry.tx.clone(), entry.hello.clone())
    };
    let sink = Sink { tx };
    let Some(Rpc::Message { id, method, name, .. }) = rpc else {
        // Answers to requests from upstreams are not routed on this transport; accepted, dropped.
        return accepted(session, ctx).await;
    };
    let id = id.as_ref();
    let answer = |result: &Value| super::result(id, result, false);
    match &**method {
        "initialize" => {
            let params = serde_json::from_slice::<Value>(&body).ok().and_then(|d| d.get("params").cloned());
            let params = params.unwrap_or_default();
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or("2024-11-05");
            let version = if super::VERSIONS[1..].contains(&asked) || asked == "2024-11-05" {
                asked.to_owned()
            } else {
                "2024-11-05".to_owned()
            };
            let hello = ClientHello {
                // Upstream sessions are Streamable HTTP ones: opened in the oldest revision they speak.
                protocol_version: if version == "2024-11-05" { "2025-03-26".into() } else { version.clone() },
                capabilities: params.get("capabilities").cloned().unwrap_or_else(|| json!({})).to_string(),
                client_info: params.get("clientInfo").cloned().unwrap_or_else(|| json!({})).to_string(),
            };
            if let Ok(mut map) = gw.state.sse_streams.0.lock()
                && let Some(entry) = map.get_mut(&claims.instance)
            {
                entry.hello = Some(hello);
            }
            sink.send(&answer(&super::initialize_result(table, principal, &version)))?;
        }
        "ping" | "logging/setLevel" => sink.send(&answer(&json!({})))?,
        m if ListKind::of_list(m).is_some() => {
            let kind = ListKind::of_list(m).unwrap_or(ListKind::Tools);
            match super::list(gw, table, principal, kind, &body, id, false) {
                Ok(list) => sink.send(&list)?,
                Err(e) => sink.send(&e.body(Some(id.unwrap_or(&Value::Null))))?,
            }
        }
        "tools/call"
            if name.as_deref().and_then(|n| n.strip_prefix(super::OWN_PREFIX)).is_some_and(own::is_tool) =>
        {
            let tool = name.as_deref().and_then(|n| n.strip_prefix(super::OWN_PREFIX)).unwrap_or_default();
            let args = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|d| d.pointer("/params/arguments").cloned())
                .unwrap_or_else(|| json!({}));
            ctx.server = Some(Arc::from(own::NAME));
            let result = match own::call(table, principal, tool, &args) {
                own::Outcome::Done(value) => value,
                own::Outcome::Register(spec) => super::register(gw, session.req_header(), &spec).await,
            };
            sink.send(&answer(&result))?;
        }
        "tools/call"
        | "prompts/get"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "completion/complete" => {
            let claims = Claims { aggregate: hello, ..claims };
            if claims.aggregate.is_none() {
                sink.send(
                    &ProxyError::InvalidRequest("initialize first".into())
                        .body(Some(id.unwrap_or(&Value::Null))),
                )?;
            } else if let Err(failure) = super::call(
                gw,
                session,
                ctx,
                table,
                principal,
                body,
                rpc,
                super::Caller::Legacy(&claims),
                Some(&sink),
            )
            .await
            {
                match failure {
                    Failure::Reply(e) => {
                        ctx.audited.refusal = Some(e.reason());
                        sink.send(&e.body(Some(id.unwrap_or(&Value::Null))))?;
                    }
                    other => return Err(other),
                }
            }
        }
        _ if id.is_none() => {}
        other => {
            let e = ProxyError::MethodNotFound { method: other.to_owned(), modern: false };
            sink.send(&e.body(Some(id.unwrap_or(&Value::Null))))?;
        }
    }
    accepted(session, ctx).await
}

async fn accepted(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Failure> {
    reply(session, ctx, 202, None, Bytes::new(), None).await
}
