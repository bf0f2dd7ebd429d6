//! One upstream exchange: send the request to the chosen instance through the connection pool, stream the
//! response back chunk by chunk (SSE events are never buffered), and apply the era's cancellation rule when
//! the client goes away: a 2026-07-28 client closing its stream cancels the upstream request; a legacy
//! client's disconnect does not (it cancels with `notifications/cancelled`), so the upstream response is
//! drained in the background instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::response::Response;
use crate::request::Session;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};

use super::{
    Attempt, Pinning, Plan, Rewrite, classify, connect_and_send, credential, report_outcome, status_ok,
};
use super::{downstream_response, is_event_stream, upstream_request};
use crate::error::{Failure, ProxyError};
use crate::headers::{self, Noted};
use crate::metrics::METRICS;
use crate::request::{RequestCtx, client_gone};
use crate::routing::{Instance, Server};
use crate::session::Scope;
use crate::shared::Shared;
use crate::sse::EndpointRewriter;

/// Longest time a legacy response is drained after its client left.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// What to do with the upstream when the client leaves before the response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnClientGone {
    /// Close the upstream connection: the upstream sees the cancellation.
    Cancel,
    /// Read the upstream response to its end in the background, then pool the connection.
    Drain,
}

fn on_client_gone(req: &RequestHeader, headers: &headers::McpHeaders) -> OnClientGone {
    // A legacy GET stream carries no request to finish; only legacy POSTs are drained.
    if !headers.is_stateless() && req.method == http::Method::POST {
        OnClientGone::Drain
    } else {
        OnClientGone::Cancel
    }
}

/// Forwards one request per `plan` (through [`super::Attempts`]: instance choice, retries, breaker); `Some`
/// when the answer is a GET stream whose rest is relayed after the request's future ended ([`Relay`]).
pub async fn run(
    gw: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    plan: Plan,
    body: Bytes,
) -> Result<Option<Relay>, Failure> {
    let pinning = if plan.reopen {
        Pinning::GatewaySession
    } else if plan.rewrite == Rewrite::DropSession {
        Pinning::None
    } else {
        Pinning::ClientSession
    };
    let mut attempts = super::Attempts::new(gw, server, &plan.target, pinning);
    loop {
        let in_flight = attempts.next()?;
        let instance = in_flight.instance();
        ctx.audited.instance = Some(instance.id.clone());
        let mut relayed = None;
        let result =
            exchange(gw, session, ctx, server, instance, &plan, &body, &mut relayed).await.map(|ok| ((), ok));
        ctx.trace.attempt_ended(ctx.response_started);
        if let Some(()) = attempts.settle(instance, result)? {
            return Ok(relayed.map(|streaming| Relay {
                streaming,
                server: server.clone(),
                in_flight,
                _stream: None,
            }));
        }
    }
}

/// [`run`], with a GET stream relayed in place (the `/mcp` paths, whose futures are boxed apart).
pub async fn run_in_place(
    gw: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    plan: Plan,
    body: Bytes,
) -> Result<(), Failure> {
    match run(gw, session, ctx, server, plan, body).await? {
        Some(mut relay) => relay.run(gw, session, ctx).await.map_err(Failure::Abort),
        None => Ok(()),
    }
}

/// Largest answer the gateway reads whole for itself (`request_whole`).
const MAX_WHOLE_BODY: usize = 4 * 1024 * 1024;

/// One exchange the gateway makes for itself (opening an upstream session for `/mcp`): the request is
/// `down` (its credentials those of the caller it acts for) rewritten as for a forwarded one; the answer
/// is read whole (bounded) and the connection pooled again. Outcomes reach the instance's breaker.
pub async fn request_whole(
    gw: &Shared,
    down: &RequestHeader,
    server: &Server,
    instance: &Instance,
    body: &Bytes,
    plan: &Plan,
) -> Result<(ResponseHeader, Bytes), ProxyError> {
    let peer = instance.peer.as_ref().map_err(|detail| ProxyError::UpstreamUnreachable {
        server: server.name.to_string(),
        detail: format!("cannot resolve {}: {detail}", instance.authority),
    })?;
    let credential = credential(gw, down, server, instance).await?;
    let req = upstream_request(down, instance, credential.as_ref(), body.len(), plan, None, Noted::ANY)
        .map_err(|e| classify(server, &e))?;
    let timeout = |what: &str| ProxyError::UpstreamTimeout {
        server: server.name.to_string(),
        detail: format!("{what} within {:?}", gw.limits.upstream_timeout),
    };
    let read = async {
        let mut up = connect_and_send(gw, server, peer, &req, body).await?;
        up.read_response_header().await.map_err(|e| classify(server, &e))?;
        let header = up.take_response_header().ok_or_else(|| ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: "no response header".into(),
        })?;
        let mut out = bytes::BytesMut::new();
        let sse = is_event_stream(&header);
        while let Some(chunk) = up.read_response_body().await.map_err(|e| classify(server, &e))? {
            if out.len() + chunk.len() > MAX_WHOLE_BODY {
                return Err(ProxyError::UpstreamFailed {
                    server: server.name.to_string(),
                    detail: format!("an answer over {MAX_WHOLE_BODY} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
            // An SSE answer ends with its JSON-RPC response; the stream may stay open after it.
            if sse && crate::audit::capture::answer(&out).is_some() && out.ends_with(b"\n\n") {
                return Ok((header, out.freeze()));
            }
        }
        gw.pool.release(up, Some(gw.limits.pool_idle_timeout));
        Ok((header, out.freeze()))
    };
    let outcome =
        tokio::time::timeout(gw.limits.upstream_timeout, read).await.map_err(|_| timeout("no answer"))?;
    let ok = match &outcome {
        Ok((header, _)) => status_ok(header.status.as_u16()),
        Err(e) => super::breaker_ok(e),
    };
    report_outcome(gw, server, instance, ok);
    outcome
}

/// One request/response exchange with `instance`; `Ok` carries what the breaker learns (`None`: nothing,
/// the client left before the outcome was known, or the answer is a GET stream, left in `relayed` to go on
/// after the request's future ended).
#[allow(clippy::too_many_arguments)]
async fn exchange(
    gw: &Shared,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Server,
    instance: &Instance,
    plan: &Plan,
    body: &Bytes,
    relayed: &mut Option<Box<Streaming>>,
) -> Result<Option<bool>, Attempt> {
    let peer = instance.peer.as_ref().map_err(|detail| {
        Attempt::NotSent(ProxyError::UpstreamUnreachable {
            server: server.name.to_string(),
            detail: format!("cannot resolve {}: {detail}", instance.authority),
        })
    })?;
    let credential = credential(gw, session.req_header(), server, instance)
        .await
        .map_err(|e| Attempt::Failed(e.into(), None))?;
    // The attempt's `traceparent`, or none when the caller's own goes upstream as it came.
    let traceparent = ctx.trace.upstream(&instance.id, &instance.authority);
    let down = session.req_header();
    let req = upstream_request(
        down,
        instance,
        credential.as_ref(),
        body.len(),
        plan,
        traceparent.as_ref().map(|t| &t[..]),
        session.noted(),
    )
    .map_err(|e| Attempt::Failed(Failure::Abort(e), None))?;
    // The upstream request keeps the client's method and MCP headers: the client's request decides.
    let gone = on_client_gone(session.req_header(), session.mcp_headers());
    let mut up = connect_and_send(gw, server, peer, &req, body).await.map_err(Attempt::NotSent)?;
    let failed = |e: ProxyError| Attempt::Failed(e.into(), Some(false));

    // Wait for the response header, watching for the client leaving meanwhile. Biased, here and in the
    // answer's loops: an upstream read that is ready is taken without polling the client's socket first
    // (each such poll costs ~550 instructions; in random order a small answer polled it ~2.5 times).
    let mut timer = session.timer(gw.limits.upstream_timeout);
    let header = tokio::select! {
        biased;
        r = up.read_response_header() => Some(r),
        () = &mut timer => None,
        _ = client_gone(session) => {
            session.give_timer(timer);
            abandon(gw, up, gone);
            return Ok(None);
        }
    };
    session.give_timer(timer);
    match header {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(failed(classify(server, &e))),
        None => {
            // A slow tool is one caller's problem, not the instance's: not reported to its breaker (a hung
            // instance fails the control plane's health checks instead).
            return Err(Attempt::Failed(
                ProxyError::UpstreamTimeout {
                    server: server.name.to_string(),
                    detail: format!("no response within {:?}", gw.limits.upstream_timeout),
                }
                .into(),
                None,
            ));
        }
    }
    let Some(up_resp) = up.take_response_header() else {
        return Err(failed(ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: "no response header".into(),
        }));
    };
    let upstream_ok = status_ok(up_resp.status.as_u16());
    if up_resp.status == http::StatusCode::UNAUTHORIZED {
        // The upstream's challenge names the upstream and its authorization server, and it is about the
        // gateway's credentials, not the client's: the client gets the gateway's own error.
        tracing::warn!(server = %server.name, instance = %instance.id, "The upstream refused the gateway's credentials (401).");
        return Err(Attempt::Failed(
            ProxyError::UpstreamAuthRefused { server: server.name.to_string() }.into(),
            Some(upstream_ok),
        ));
    }
    if plan.reopen && up_resp.status == http::StatusCode::NOT_FOUND {
        return Err(Attempt::Failed(Failure::UpstreamSessionGone, Some(true)));
    }
    let sse = is_event_stream(&up_resp);
    let fields = up.response_fields();
    let mut resp = downstream_response(up_resp, fields)
        .map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    match plan.rewrite {
        Rewrite::SessionToken => {
            seal_session_id(gw, server, instance, plan, &ctx.binding(), &mut resp, fields)
        }
        Rewrite::DropSession => {
            resp.remove_header("mcp-session-id");
        }
        Rewrite::None | Rewrite::SseEndpoint => {}
    }
    up.set_read_timeout(if sse { None } else { Some(gw.limits.idle_timeout) });
    // An answer changed before it goes on is read whole (`filtered`): a list filtered for a restricted
    // caller, or a JSON answer that needs fields added — unless it arrives whole in its first chunk and
    // needs nothing, when it goes on as usual.
    let (apply_filter, complete);
    let mut whole: Option<(&Transform<'_>, Option<Bytes>)> = None;
    let mut first_chunk = None;
    if let Some(filter) = &plan.filter {
        apply_filter = move |body: &[u8], sse: bool| filter.apply(body, sse);
        whole = Some((&apply_filter, None));
    } else if plan.rewrites.complete.is_some() && !sse {
        let declared = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Bounded by the idle timeout set above.
        match up.read_response_body().await {
            Ok(Some(data)) if declared == Some(data.len()) && !plan.rewrites.concerns(&data) => {
                first_chunk = Some(data);
            }
            Ok(data) => {
                complete = |body: &[u8], _: bool| plan.rewrites.apply_body(body);
                whole = Some((&complete, data));
            }
            Err(e) => return Err(Attempt::Failed(Failure::Abort(e), Some(false))),
        }
    }
    if let Some((transform, first)) = whole {
        // Boxed: a rare path whose future would otherwise be carried by every exchange's.
        return Box::pin(filtered(gw, session, server, up, gone, resp, transform, first, sse, upstream_ok))
            .await;
    }

    if session.write_response_header(Box::new(resp)).await.is_err() {
        abandon(gw, up, gone);
        return Ok(Some(upstream_ok));
    }
    ctx.response_started = Some(Instant::now());
    // The answer to a POST is one JSON-RPC message (JSON) or ends with one (SSE): its error code is
    // recorded. Streams opened by GET carry many messages, none of them this request's answer.
    let mut sniff = session.req_header().method == http::Method::POST;
    if let Some(data) = first_chunk.take() {
        if let Some(answer) = crate::audit::capture::answer(&data) {
            ctx.audited.answer = Some(answer);
            sniff = false;
        }
        if session.write_response_body(data, false).await.is_err() {
            abandon(gw, up, gone);
            return Ok(Some(upstream_ok));
        }
    }
    // A GET stream outlives any request; it ends when the proxy drains (its client reconnects elsewhere).
    // An answer to a POST is a request in flight, which gets the whole drain deadline.
    let long_lived = session.req_header().method == http::Method::GET;
    let mut streaming = Streaming {
        up: Some(up),
        gone,
        upstream_ok,
        sniff,
        long_lived,
        endpoint: (plan.rewrite == Rewrite::SseEndpoint).then(EndpointRewriter::default),
        upstream_path: None,
        lists: plan
            .legacy_lists
            .then(|| crate::policy::LegacyListStream::new(gw.pending_lists.clone(), &server.id)),
        rewriter: (sse && !plan.rewrites.is_empty())
            .then(|| crate::sse::MessageRewriter::new(plan.rewrites.clone())),
        _gauge: sse.then(StreamGauge::open),
    };
    if long_lived && sse {
        // Relayed after the request's future ended (`Relay`): an idle stream holds this state and the
        // two connections, not the request path's futures. What the breaker learns, it learns at the end.
        *relayed = Some(Box::new(streaming));
        return Ok(None);
    }
    streaming
        .pump(gw, session, ctx, server, instance)
        .await
        .map_err(|(e, upstream_ok)| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))
}

/// The rest of an answer whose head went to the client: read from the upstream, changed as the plan says
/// (legacy endpoint, list filtering, message rewrites) and written on. An answer to a POST is pumped in
/// place; a GET stream's goes on after its request's future ended ([`Relay`]).
pub(crate) struct Streaming {
    /// Taken when the stream ends (pooled again, drained or closed).
    up: Option<Response>,
    gone: OnClientGone,
    upstream_ok: bool,
    /// Still looking for the answer's JSON-RPC message (for the audit record).
    sniff: bool,
    long_lived: bool,
    endpoint: Option<EndpointRewriter>,
    /// The upstream's message path of this legacy session, once its endpoint event is seen.
    upstream_path: Option<String>,
    lists: Option<crate::policy::LegacyListStream>,
    rewriter: Option<crate::sse::MessageRewriter>,
    _gauge: Option<StreamGauge>,
}

impl Streaming {
    fn up(&mut self) -> &mut Response {
        self.up.as_mut().expect("the upstream answer is read until the stream ends")
    }

    fn take_up(&mut self) -> Response {
        self.up.take().expect("the stream ends once")
    }

    /// Streams the answer to its end, or until the client leaves, the upstream fails or (a GET stream)
    /// the proxy drains; both carry what the breaker learns (`Err`: the answer broke off).
    async fn pump(
        &mut self,
        gw: &Shared,
        session: &mut Session,
        ctx: &mut RequestCtx,
        server: &Server,
        instance: &Instance,
    ) -> Result<Option<bool>, (pingora::BError, bool)> {
        let upstream_ok = self.upstream_ok;
        loop {
            tokio::select! {
                biased;
                _ = gw.draining.wait(), if self.long_lived => {
                    // The upstream stream is cut (a GET carries no request to finish); the client's ends cleanly.
                    drop(self.take_up());
                    let _ = session.write_response_body(Bytes::new(), true).await;
                    return Ok(Some(upstream_ok));
                }
                chunk = self.up().read_response_body() => match chunk {
                    Ok(Some(data)) => {
                        if self.sniff && let Some(answer) = crate::audit::capture::answer(&data) {
                            ctx.audited.answer = Some(answer);
                            self.sniff = false;
                        }
                        let data = match self.endpoint.as_mut() {
                            Some(endpoint) => endpoint.feed(data, |uri: &str| {
                                let target = instance.endpoint.join(uri).ok()?;
                                let mut path = target.path().to_owned();
                                if let Some(q) = target.query() {
                                    path.push('?');
                                    path.push_str(q);
                                }
                                let token = gw.sessions.seal(
                                    Scope::SseMessage(&server.id, &ctx.binding()),
                                    &instance.id,
                                    &path,
                                );
                                self.upstream_path = Some(path);
                                Some(format!("/mcp/{}/message?sessionId={token}", server.name))
                            }),
                            None => data,
                        };
                        let data = match self.rewriter.as_mut() { Some(r) => r.feed(data), None => data };
                        let data = match self.lists.as_mut() {
                            Some(lists) => match lists.feed(data, self.upstream_path.as_ref()) {
                                Ok(data) => data,
                                Err(why) => {
                                    tracing::warn!(server = %server.name, why, "Closing a legacy SSE stream whose list answer cannot be filtered.");
                                    abandon(gw, self.take_up(), self.gone);
                                    return Ok(Some(upstream_ok));
                                }
                            },
                            None => data,
                        };
                        if !data.is_empty() && session.write_response_body(data, false).await.is_err() {
                            abandon(gw, self.take_up(), self.gone);
                            return Ok(Some(upstream_ok));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(server = %server.name, error = %e, "Upstream failed mid-response; closing the client connection.");
                        return Err((e, false));
                    }
                },
                _ = client_gone(session) => {
                    abandon(gw, self.take_up(), self.gone);
                    return Ok(Some(upstream_ok));
                }
            }
        }
        let tail = self
            .endpoint
            .as_mut()
            .map(EndpointRewriter::finish)
            .or_else(|| self.rewriter.as_mut().map(crate::sse::MessageRewriter::finish))
            .unwrap_or_default();
        session.write_response_body(tail, true).await.map_err(|e| (e, upstream_ok))?;
        gw.pool.release(self.take_up(), Some(gw.limits.pool_idle_timeout));
        Ok(Some(upstream_ok))
    }
}

/// A GET stream relayed after its request's future ended: the rest of the answer ([`Streaming`]) with the
/// server and instance it streams from (counted in flight until it ends).
pub struct Relay {
    streaming: Box<Streaming>,
    server: Arc<Server>,
    in_flight: crate::balance::InFlight,
    /// The stream's place among the capped long-lived streams, held until it ends.
    _stream: Option<crate::caps::Permit>,
}

impl Relay {
    /// The relay, holding the stream's place among the capped streams until it ends.
    pub(crate) fn holding(self, stream: Option<crate::caps::Permit>) -> Self {
        Self { _stream: stream, ..self }
    }

    /// Streams to the end and reports the outcome to the instance's breaker; `Err` when the upstream failed
    /// mid-answer (the client connection is then closed).
    pub async fn run(
        &mut self,
        gw: &Shared,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Self { streaming, server, in_flight, _stream } = self;
        let instance = in_flight.instance();
        let (outcome, upstream_ok) = match streaming.pump(gw, session, ctx, server, instance).await {
            Ok(upstream_ok) => (Ok(()), upstream_ok),
            Err((e, upstream_ok)) => (Err(e), Some(upstream_ok)),
        };
        if let Some(ok) = upstream_ok {
            super::report_outcome(gw, server, instance, ok);
        }
        outcome
    }
}

/// How `filtered` changes an answer read whole: (body, whether SSE) → the body to send.
type Transform<'a> = dyn Fn(&[u8], bool) -> Bytes + Sync + 'a;

/// Reads an answer whole (bounded), changes it with `transform` (body, whether SSE) — a list filtered for
/// a restricted caller, a legacy result completed for a 2026-07-28 one — and answers with it.
#[allow(clippy::too_many_arguments)]
async fn filtered(
    gw: &Shared,
    session: &mut Session,
    server: &Server,
    mut up: Response,
    gone: OnClientGone,
    mut resp: ResponseHeader,
    transform: &Transform<'_>,
    first: Option<Bytes>,
    sse: bool,
    upstream_ok: bool,
) -> Result<Option<bool>, Attempt> {
    let mut body = bytes::BytesMut::new();
    if let Some(first) = first {
        body.extend_from_slice(&first);
    }
    loop {
        tokio::select! {
            biased;
            chunk = tokio::time::timeout(gw.limits.upstream_timeout, up.read_response_body()) => match chunk {
                Ok(Ok(Some(data))) => {
                    if body.len() + data.len() > crate::policy::MAX_FILTERED_BODY {
                        return Err(Attempt::Failed(ProxyError::UpstreamFailed {
                            server: server.name.to_string(),
                            detail: format!("an answer over {} bytes cannot be filtered or completed", crate::policy::MAX_FILTERED_BODY),
                        }.into(), Some(upstream_ok)));
                    }
                    body.extend_from_slice(&data);
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(Attempt::Failed(Failure::Abort(e), Some(false))),
                Err(_) => {
                    return Err(Attempt::Failed(ProxyError::UpstreamTimeout {
                        server: server.name.to_string(),
                        detail: "the answer did not end in time".into(),
                    }.into(), Some(false)));
                }
            },
            _ = client_gone(session) => {
                abandon(gw, up, gone);
                return Ok(Some(upstream_ok));
            }
        }
    }
    let out = transform(&body, sse);
    resp.remove_header(&header::TRANSFER_ENCODING);
    resp.insert_header(header::CONTENT_LENGTH, out.len().to_string())
        .map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    let write = async {
        session.write_response_header(Box::new(resp)).await?;
        session.write_response_body(out, true).await
    };
    write.await.map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    gw.pool.release(up, Some(gw.limits.pool_idle_timeout));
    Ok(Some(upstream_ok))
}

/// Replaces the upstream's `Mcp-Session-Id` with a token naming this instance (or echoes the client's
/// token while the upstream id is unchanged).
fn seal_session_id(
    gw: &Shared,
    server: &Server,
    instance: &Instance,
    plan: &Plan,
    principal: &str,
    resp: &mut ResponseHeader,
    fields: Noted,
) {
    let Some(upstream) = fields
        .get(&resp.headers, &crate::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return;
    };
    let token = match (&plan.client_token, &plan.upstream_session) {
        (Some(token), Some(current)) if *current == upstream => token.clone(),
        _ => gw.sessions.seal(Scope::Session(&server.id, principal), &instance.id, &upstream),
    };
    // A base64url token is always a valid header value.
    let _ = resp.insert_header("mcp-session-id", token);
}

/// The client left before the response ended: cancel or drain per the request's era.
fn abandon(gw: &Shared, mut up: Response, gone: OnClientGone) {
    if gone == OnClientGone::Cancel {
        // Dropping the session closes the upstream connection, which cancels the request upstream.
        return;
    }
    let pool = gw.pool.clone();
    let pool_idle = gw.limits.pool_idle_timeout;
    tokio::spawn(async move {
        let drained: Result<pingora::Result<()>, _> = tokio::time::timeout(DRAIN_LIMIT, async {
            up.read_response_header().await?;
            while up.read_response_body().await?.is_some() {}
            Ok(())
        })
        .await;
        if matches!(drained, Ok(Ok(()))) {
            pool.release(up, Some(pool_idle));
        }
    });
}

/// Counts an SSE response in `mcpgw_proxy_open_streams` while it lives.
struct StreamGauge;

impl StreamGauge {
    fn open() -> Self {
        METRICS.open_streams.inc();
        Self
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        METRICS.open_streams.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::routing::table::{InstanceStates, PeerSettings, RoutingTable};
    use mcpgw_proto::ResourceSet;
    use mcpgw_proto::v1::{Instance as PInstance, Resource, Server as PServer, Transport, resource::Kind};

    async fn instance(url: &str) -> std::sync::Arc<Instance> {
        let set = ResourceSet::new(
            1,
            [
                Resource {
                    kind: Some(Kind::Server(PServer {
                        id: "s".into(),
                        name: "a".into(),
                        transport: Transport::StreamableHttp as i32,
                        ..Default::default()
                    })),
                },
                Resource {
                    kind: Some(Kind::Instance(PInstance {
                        id: "i".into(),
                        server_id: "s".into(),
                        endpoint_url: url.into(),
                        weight: 1,
                        ..Default::default()
                    })),
                },
            ],
        )
        .unwrap();
        let settings = PeerSettings {
            connect_timeout: Duration::from_secs(1),
            pool_idle_timeout: Duration::from_secs(1),
            dns_refresh: Duration::ZERO,
            ssrf: Default::default(),
        };
        let table =
            RoutingTable::build(&set, &RoutingTable::default(), &InstanceStates::default(), &settings)
                .await
                .unwrap();
        table.server("a").unwrap().instances[0].clone()
    }

    #[tokio::test]
    async fn request_is_rewritten_for_the_upstream() {
        let inst = instance("http://127.0.0.1:3001/v1/mcp").await;
        let mut down = RequestHeader::build("POST", b"/mcp/a?sessionId=1&api_key=guess", None).unwrap();
        for (k, v) in [
            ("host", "gateway.example:8080"),
            ("origin", "http://evil.example"),
            ("connection", "keep-alive, x-internal-hop"),
            ("x-internal-hop", "1"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "admin.internal"),
            ("x-real-ip", "10.0.0.1"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("content-length", "999"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "7"),
            ("authorization", "Bearer t"),
            ("cookie", "sid=1"),
            ("proxy-authorization", "Basic eA=="),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ] {
            down.append_header(k, v).unwrap();
        }
        let plan = Plan { upstream_session: Some("upstream-sid".into()), ..Plan::default() };
        let ours = b"00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        // With the fields noted as a parsed head's are, or looked up.
        let up = upstream_request(&down, &inst, None, 12, &plan, Some(ours), noted(&down.headers))
            .unwrap()
            .parsed();
        let traceparents: Vec<_> = up.headers.get_all("traceparent").iter().collect();
        assert_eq!(traceparents, [&ours[..]], "the attempt's traceparent replaces the caller's");
        let forwarded = upstream_request(&down, &inst, None, 12, &plan, None, Noted::ANY).unwrap().parsed();
        assert_eq!(
            forwarded.headers.get("traceparent"),
            down.headers.get("traceparent"),
            "or it goes as it came"
        );
        assert_eq!(up.uri.to_string(), "/v1/mcp", "the client's query string is not the upstream's");
        let get = |n: &str| up.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("host").as_deref(), Some("127.0.0.1:3001"));
        assert_eq!(get("content-length").as_deref(), Some("12"));
        for gone in [
            "origin",
            "connection",
            "x-internal-hop",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-real-ip",
            "transfer-encoding",
            "expect",
            "authorization",
            "cookie",
            "proxy-authorization",
        ] {
            assert_eq!(get(gone), None, "{gone} must not be forwarded");
        }
        for kept in
            ["accept", "mcp-protocol-version", "mcp-method", "mcp-name", "mcp-param-region", "last-event-id"]
        {
            assert_eq!(get(kept), down.headers.get(kept).map(|v| v.to_str().unwrap().to_owned()), "{kept}");
        }
        assert_eq!(on_client_gone(&down, &headers::McpHeaders::of(&down)), OnClientGone::Drain);
    }

    #[tokio::test]
    async fn cancellation_follows_the_era() {
        let mut modern = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        modern.insert_header("MCP-Protocol-Version", "2026-07-28").unwrap();
        assert_eq!(on_client_gone(&modern, &headers::McpHeaders::of(&modern)), OnClientGone::Cancel);
        let get = RequestHeader::build("GET", b"/mcp/a", None).unwrap();
        assert_eq!(on_client_gone(&get, &headers::McpHeaders::of(&get)), OnClientGone::Cancel);
        let legacy = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        assert_eq!(on_client_gone(&legacy, &headers::McpHeaders::of(&legacy)), OnClientGone::Drain);
    }

    #[test]
    fn only_the_instances_own_faults_count_against_it() {
        for status in [200, 400, 404, 500, 501, 504] {
            assert!(status_ok(status), "{status}: a caller's or a tool's problem");
        }
        for status in [502, 503] {
            assert!(!status_ok(status), "{status}: the instance itself");
        }
    }

    /// The fields of `headers` [`Noted`] knows, as a parsed head notes them.
    fn noted(headers: &http::HeaderMap) -> Noted {
        let mut fields = Noted::default();
        headers.iter().for_each(|(name, value)| fields.note(name, value.as_bytes()));
        fields
    }

    #[test]
    fn response_framing() {
        let mut close_delimited = ResponseHeader::build(200, None).unwrap();
        close_delimited.insert_header("content-type", "text/event-stream").unwrap();
        close_delimited.insert_header("connection", "close").unwrap();
        let fields = noted(&close_delimited.headers);
        let resp = downstream_response(close_delimited, fields).unwrap();
        assert!(is_event_stream(&resp));
        assert_eq!(resp.headers.get("transfer-encoding").unwrap(), "chunked");
        assert!(resp.headers.get("connection").is_none());
        let mut sized = ResponseHeader::build(202, None).unwrap();
        sized.insert_header("content-length", "0").unwrap();
        assert!(downstream_response(sized, Noted::ANY).unwrap().headers.get("transfer-encoding").is_none());
        let no_content = ResponseHeader::build(204, None).unwrap();
        assert!(
            downstream_response(no_content, Noted::ANY).unwrap().headers.get("transfer-encoding").is_none()
        );
    }

    #[test]
    fn upstream_headers_acting_for_the_gateways_origin_are_not_served() {
        let mut up = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("set-cookie", "session=upstream; Path=/"),
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=63072000; includeSubDomains"),
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "1"),
            ("mcp-session-id", "s1"),
        ] {
            up.append_header(k, v).unwrap();
        }
        let fields = noted(&up.headers);
        let resp = downstream_response(up, fields).unwrap();
        for gone in ["set-cookie", "alt-svc", "strict-transport-security", "connection", "x-upstream-hop"] {
            assert!(resp.headers.get(gone).is_none(), "{gone} must not be served");
        }
        for kept in ["content-type", "content-length", "mcp-session-id"] {
            assert!(resp.headers.get(kept).is_some(), "{kept}");
        }
    }
}
