//! One upstream exchange: send the request to the chosen instance through the pooled connector, stream the
//! response back chunk by chunk (SSE events are never buffered), and apply the era's cancellation rule when
//! the client goes away: a 2026-07-28 client closing its stream cancels the upstream request; a legacy
//! client's disconnect does not (it cancels with `notifications/cancelled`), so the upstream response is
//! drained in the background instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use mcpgw_proto::v1::HealthStatus;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession as UpstreamSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use crate::balance::{Gate, InFlight};
use crate::breaker::Outcome;
use crate::error::ProxyError;
use crate::gateway::{Gateway, RequestCtx};
use crate::headers;
use crate::metrics::METRICS;
use crate::routing::{Instance, Server, UpstreamAuth, UpstreamHeader};
use crate::session::Scope;
use crate::sse::EndpointRewriter;

/// Longest time a legacy response is drained after its client left.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// Resolves when the client has closed or reset its connection; pending while it is open.
///
/// Pingora's idle probe reads one byte from the client. On a keep-alive connection that byte may be the
/// first of the client's next request (sent as soon as a `Content-Length` response was complete): with
/// pipelining enabled on the session (`Gateway::request_filter`) Pingora keeps it for that request and
/// the probe stays pending; without, the byte was lost and the next request reached the upstream as
/// `OST …`. Whatever ends the wait, the connection is not reused: a stream we stopped reading in order
/// cannot carry another request.
pub(crate) async fn client_gone(session: &mut Session) {
    let _ = session.read_body_or_idle(true).await;
    session.set_keepalive(None);
}

/// How a request ends early.
pub enum Failure {
    /// Answer the client with this error (if no response has started yet).
    Reply(ProxyError),
    /// Drop the client connection.
    Abort(Box<pingora::Error>),
    /// The upstream answered 404 to the session the gateway holds for `/mcp` (`Plan::reopen`): nothing
    /// was processed or sent to the client; the caller opens a new upstream session and sends again.
    UpstreamSessionGone,
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Self::Reply(e)
    }
}

/// Which instance serves the request.
pub enum Target {
    /// Chosen by the server's policy; `hash` is the consistent-hash key (empty for other policies).
    Balanced { hash: Vec<u8> },
    /// The instance holding the client's session.
    Pinned(Arc<Instance>),
}

/// What the response needs on its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rewrite {
    #[default]
    None,
    /// Replace the upstream's `Mcp-Session-Id` with a sealed token.
    SessionToken,
    /// Replace the legacy SSE `endpoint` event's URI with the proxy's message URL.
    SseEndpoint,
    /// Remove the upstream's `Mcp-Session-Id`: the session is the gateway's (`/mcp`), not the client's.
    DropSession,
}

/// How to forward one request.
pub struct Plan {
    pub target: Target,
    /// Upstream path and query replacing the instance's endpoint path (legacy SSE messages).
    pub upstream_path: Option<String>,
    /// The upstream's session id, restored into `Mcp-Session-Id`.
    pub upstream_session: Option<String>,
    /// The token the client sent, echoed back while its upstream session id is unchanged.
    pub client_token: Option<String>,
    pub rewrite: Rewrite,
    /// A list answer the caller may see only part of.
    pub filter: Option<crate::policy::ListFilter>,
    /// A legacy SSE stream of a restricted caller: list answers on it are filtered (`PendingLists`).
    pub legacy_lists: bool,
    /// Headers set on the upstream request over the client's (`/mcp`: the original `Mcp-Name`, the
    /// upstream session's protocol version).
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
    /// An upstream 404 means the gateway's own upstream session is gone: `Failure::UpstreamSessionGone`.
    pub reopen: bool,
    /// `/mcp`: what changes in the upstream's answer (ids of requests it sends the client, fields a
    /// 2026-07-28 client needs from a legacy session's result).
    pub rewrites: crate::sse::Rewrites,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            target: Target::Balanced { hash: Vec::new() },
            upstream_path: None,
            upstream_session: None,
            client_token: None,
            rewrite: Rewrite::None,
            filter: None,
            legacy_lists: false,
            headers: Vec::new(),
            reopen: false,
            rewrites: crate::sse::Rewrites::default(),
        }
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus those the proxy sets itself.
fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
    )
}

/// Headers never forwarded upstream: hop-by-hop ones, those the proxy sets itself, and the client's own
/// credentials — a token issued for the gateway must never reach an upstream (no token passthrough, MCP
/// 2025-06-18 §Authorization); an upstream gets the credentials registered for it instead.
fn skip_request_header(name: &HeaderName) -> bool {
    is_hop_header(name)
        || *name == header::AUTHORIZATION
        || *name == header::COOKIE
        || *name == header::HOST
        || *name == header::ORIGIN
        || *name == header::CONTENT_LENGTH
        || *name == header::TRANSFER_ENCODING
        || *name == header::EXPECT
}

/// What to do with the upstream when the client leaves before the response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnClientGone {
    /// Close the upstream connection: the upstream sees the cancellation.
    Cancel,
    /// Read the upstream response to its end in the background, then pool the connection.
    Drain,
}

fn on_client_gone(req: &RequestHeader) -> OnClientGone {
    // A legacy GET stream carries no request to finish; only legacy POSTs are drained.
    if !headers::is_stateless(req) && req.method == http::Method::POST {
        OnClientGone::Drain
    } else {
        OnClientGone::Cancel
    }
}

/// The request as the upstream must see it: its endpoint path, its own authority as `Host`, no `Origin`
/// (SDK servers reject foreign ones), no hop-by-hop headers and none of the client's credentials; every MCP
/// header passes unchanged except `Mcp-Session-Id`, which carries the upstream's own id again.
pub(crate) fn upstream_request(
    down: &RequestHeader,
    instance: &Instance,
    credential: Option<&UpstreamHeader>,
    body_len: usize,
    plan: &Plan,
) -> pingora::Result<RequestHeader> {
    let path = match &plan.upstream_path {
        Some(path) => path.clone(),
        None => {
            let mut path = instance.path_and_query.clone();
            if let Some(query) = down.uri.query() {
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(query);
            }
            path
        }
    };
    let mut req = RequestHeader::build(down.method.clone(), path.as_bytes(), Some(down.headers.len() + 1))?;
    for (name, value) in &down.headers {
        if !skip_request_header(name) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header(header::HOST, &instance.authority)?;
    if let Some(c) = credential {
        req.insert_header(c.name.clone(), c.value.clone())?;
    }
    if body_len > 0 || down.method == http::Method::POST {
        req.insert_header(header::CONTENT_LENGTH, body_len.to_string())?;
    }
    if let Some(upstream) = &plan.upstream_session {
        req.insert_header("mcp-session-id", upstream)?;
    }
    for (name, value) in &plan.headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(req)
}

/// The upstream's response header as the client must see it.
fn downstream_response(up: &ResponseHeader) -> pingora::Result<ResponseHeader> {
    let mut resp = up.clone();
    let hop: Vec<HeaderName> = resp.headers.keys().filter(|n| is_hop_header(n)).cloned().collect();
    for name in hop {
        resp.remove_header(&name);
    }
    resp.set_version(http::Version::HTTP_11);
    let bodiless = resp.status.is_informational() || matches!(resp.status.as_u16(), 204 | 304);
    if !bodiless
        && !resp.headers.contains_key(header::CONTENT_LENGTH)
        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
    {
        // The upstream delimits its body by closing; re-frame it so the client connection can be reused.
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(resp)
}

fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

fn upstream_error(server: &Server, e: &pingora::Error) -> ProxyError {
    let server = server.name.to_string();
    let detail = format!("{}: {}", e.etype().as_str(), e.root_cause());
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ProxyError::UpstreamTimeout { server, detail }
        }
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError
        | ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert => ProxyError::UpstreamUnreachable { server, detail },
        _ => ProxyError::UpstreamFailed { server, detail },
    }
}

/// Sends the request header and body on `up`.
async fn send(up: &mut UpstreamSession, req: RequestHeader, body: &Bytes) -> pingora::Result<()> {
    up.write_request_header(Box::new(req)).await?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true).await?;
    }
    up.finish_request_body().await
}

/// Why an attempt on one instance failed.
enum Attempt {
    /// Nothing reached the upstream: another instance may be tried.
    NotSent(ProxyError),
    /// The request was sent (or a response started); `upstream_ok` is what the breaker learns.
    Failed(Failure, Option<bool>),
}

/// Opens (or reuses) a connection and sends the request. A reused pooled connection that fails while the
/// request is being written is retried once on a new one: the upstream cannot have acted on a request it
/// did not fully receive.
async fn connect_and_send(
    gw: &Gateway,
    server: &Server,
    peer: &HttpPeer,
    req: &RequestHeader,
    body: &Bytes,
) -> Result<UpstreamSession, ProxyError> {
    let mut retried = false;
    loop {
        let (mut up, reused) =
            gw.connector.get_http_session(peer).await.map_err(|e| upstream_error(server, &e))?;
        match send(&mut up, req.clone(), body).await {
            Ok(()) => return Ok(up),
            Err(e) if reused && !retried => {
                tracing::debug!(server = %server.name, error = %e, "Pooled upstream connection failed; retrying on a new one.");
                retried = true;
            }
            Err(e) => return Err(upstream_error(server, &e)),
        }
    }
}

/// Tells the instance's breaker how an exchange went (`try_send`, never waiting).
fn report_outcome(gw: &Gateway, server: &Server, instance: &Instance, ok: bool) {
    gw.breakers.report(Outcome {
        instance_id: instance.id.clone(),
        server: server.name.clone(),
        state: instance.state.clone(),
        config: server.breaker,
        ok,
    });
}

/// Most instances tried for one request that never reached an upstream.
const MAX_ATTEMPTS: usize = 3;

/// Forwards one request per `plan`: picks the instance, retries on another one while nothing was sent
/// (within the retry budget), and reports every outcome to the instance's breaker.
pub async fn run(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Arc<Server>,
    plan: Plan,
    body: Bytes,
) -> Result<(), Failure> {
    gw.retry.record_request();
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let instance = match &plan.target {
            Target::Pinned(instance) => instance.clone(),
            Target::Balanced { hash } => {
                let idx = server.selector().pick(hash, &tried).ok_or_else(|| no_instance(server))?;
                tried.push(idx);
                server.instances[idx].clone()
            }
        };
        ctx.audited.instance = Some(instance.id.clone());
        let in_flight = InFlight::new(instance.clone());
        let result = exchange(gw, session, ctx, server, in_flight.instance(), &plan, &body).await;
        let report = |ok: bool| report_outcome(gw, server, &instance, ok);
        match result {
            Ok(upstream_ok) => {
                upstream_ok.map(report);
                return Ok(());
            }
            Err(Attempt::Failed(failure, upstream_ok)) => {
                upstream_ok.map(report);
                return Err(failure);
            }
            Err(Attempt::NotSent(error)) => {
                report(false);
                if plan.reopen {
                    // A session the gateway holds for /mcp: it opens another one elsewhere.
                    return Err(Failure::UpstreamSessionGone);
                }
                if let Target::Pinned(_) = plan.target
                    && plan.rewrite != Rewrite::DropSession
                {
                    return Err(ProxyError::SessionNotFound(format!(
                        "its instance is unreachable ({})",
                        error.reason()
                    ))
                    .into());
                }
                let more = tried.len() < server.instances.len().min(MAX_ATTEMPTS);
                if !(more && gw.retry.try_retry()) {
                    return Err(error.into());
                }
                tracing::debug!(server = %server.name, instance = %instance.id, %error, "Nothing was sent; trying another instance.");
            }
        }
    }
}

/// The credential the gateway presents to `instance` for the caller of `down`.
async fn credential(
    gw: &Gateway,
    down: &RequestHeader,
    server: &Server,
    instance: &Instance,
) -> Result<Option<UpstreamHeader>, ProxyError> {
    Ok(match &instance.credential {
        None => None,
        Some(UpstreamAuth::Header(header)) => Some(header.clone()),
        Some(UpstreamAuth::Exchange { audience, scopes }) => {
            Some(exchanged_token(gw, down, server, audience, scopes).await?)
        }
    })
}

/// Largest answer the gateway reads whole for itself (`request_whole`).
const MAX_WHOLE_BODY: usize = 4 * 1024 * 1024;

/// One exchange the gateway makes for itself (opening an upstream session for `/mcp`): the request is
/// `down` (its credentials those of the caller it acts for) rewritten as for a forwarded one; the answer
/// is read whole (bounded) and the connection pooled again. Outcomes reach the instance's breaker.
pub async fn request_whole(
    gw: &Gateway,
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
    let req = upstream_request(down, instance, credential.as_ref(), body.len(), plan)
        .map_err(|e| upstream_error(server, &e))?;
    let timeout = |what: &str| ProxyError::UpstreamTimeout {
        server: server.name.to_string(),
        detail: format!("{what} within {:?}", gw.limits.upstream_timeout),
    };
    let read = async {
        let mut up = connect_and_send(gw, server, peer, &req, body).await?;
        up.read_response_header().await.map_err(|e| upstream_error(server, &e))?;
        let header = up.response_header().cloned().ok_or_else(|| ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: "no response header".into(),
        })?;
        let mut out = bytes::BytesMut::new();
        let sse = is_event_stream(&header);
        while let Some(chunk) = up.read_response_body().await.map_err(|e| upstream_error(server, &e))? {
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
        gw.connector.release_http_session(up, peer, Some(gw.limits.pool_idle_timeout)).await;
        Ok((header, out.freeze()))
    };
    let outcome =
        tokio::time::timeout(gw.limits.upstream_timeout, read).await.map_err(|_| timeout("no answer"))?;
    let ok = match &outcome {
        Ok((header, _)) => status_ok(header.status.as_u16()),
        Err(ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. }) => false,
        Err(_) => true,
    };
    report_outcome(gw, server, instance, ok);
    outcome
}

/// The caller's credential exchanged for a token for `audience` (not an instance failure: no breaker
/// report, no retry on another instance).
async fn exchanged_token(
    gw: &Gateway,
    down: &RequestHeader,
    server: &Server,
    audience: &str,
    scopes: &[String],
) -> Result<UpstreamHeader, ProxyError> {
    let unavailable = |detail: String| ProxyError::UpstreamCredentialUnavailable {
        server: server.name.to_string(),
        detail,
    };
    let subject = down
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unavailable("this server acts on behalf of the caller, who presented no credential".into())
        })?;
    let value = gw.exchanger.header(subject, audience, scopes).await.map_err(unavailable)?;
    Ok(UpstreamHeader { name: header::AUTHORIZATION, value })
}

pub(crate) fn no_instance(server: &Server) -> ProxyError {
    let total = server.instances.len();
    let unhealthy = server.instances.iter().filter(|i| i.health == HealthStatus::Unhealthy).count();
    let ejected = server.instances.iter().filter(|i| i.state.gate() == Gate::Open).count();
    let detail = if total == 0 {
        "it has no instances".to_owned()
    } else {
        format!("{total} instances: {unhealthy} unhealthy, {ejected} ejected by the circuit breaker")
    };
    ProxyError::NoInstance { server: server.name.to_string(), detail }
}

/// Whether an upstream status is fine for the instance's breaker. Only what says the instance itself is in
/// trouble counts against it — 502 and 503 (besides connect failures and resets); a 500 or 504 is usually
/// one tool failing or being slow for one caller, and must not eject the instance for everyone.
fn status_ok(status: u16) -> bool {
    !matches!(status, 502 | 503)
}

/// One request/response exchange with `instance`; `Ok` carries what the breaker learns (`None`: nothing,
/// the client left before the outcome was known).
async fn exchange(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Server,
    instance: &Instance,
    plan: &Plan,
    body: &Bytes,
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
    let req = upstream_request(session.req_header(), instance, credential.as_ref(), body.len(), plan)
        .map_err(|e| Attempt::Failed(Failure::Abort(e), None))?;
    let gone = on_client_gone(&req);
    let mut up = connect_and_send(gw, server, peer, &req, body).await.map_err(Attempt::NotSent)?;
    let failed = |e: ProxyError| Attempt::Failed(e.into(), Some(false));

    // Wait for the response header, watching for the client leaving meanwhile.
    let header = tokio::select! {
        r = tokio::time::timeout(gw.limits.upstream_timeout, up.read_response_header()) => r,
        _ = client_gone(session) => {
            abandon(gw, up, peer, gone);
            return Ok(None);
        }
    };
    match header {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(upstream_error(server, &e))),
        Err(_) => {
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
    let Some(up_resp) = up.response_header() else {
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
    let sse = is_event_stream(up_resp);
    let mut resp =
        downstream_response(up_resp).map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    match plan.rewrite {
        Rewrite::SessionToken => seal_session_id(gw, server, instance, plan, &ctx.binding(), &mut resp),
        Rewrite::DropSession => {
            resp.remove_header("mcp-session-id");
        }
        Rewrite::None | Rewrite::SseEndpoint => {}
    }
    up.set_read_timeout(if sse { None } else { Some(gw.limits.idle_timeout) });
    if let Some(filter) = &plan.filter {
        let filter = |body: &[u8], sse: bool| filter.apply(body, sse);
        return filtered(gw, session, server, up, peer, gone, resp, &filter, None, sse, upstream_ok).await;
    }
    // A JSON answer that may need fields added: when it arrives whole in its first chunk and needs
    // nothing, it goes on as usual; otherwise it is read whole and changed.
    let mut first_chunk = None;
    if plan.rewrites.complete.is_some() && !sse {
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
                let complete = |body: &[u8], _: bool| plan.rewrites.apply_body(body);
                return filtered(
                    gw,
                    session,
                    server,
                    up,
                    peer,
                    gone,
                    resp,
                    &complete,
                    data,
                    sse,
                    upstream_ok,
                )
                .await;
            }
            Err(e) => return Err(Attempt::Failed(Failure::Abort(e), Some(false))),
        }
    }

    if session.write_response_header(Box::new(resp), false).await.is_err() {
        abandon(gw, up, peer, gone);
        return Ok(Some(upstream_ok));
    }
    ctx.response_started = Some(Instant::now());
    let _stream_guard = sse.then(StreamGauge::open);
    let sessions = &gw.sessions;
    let binding = ctx.binding();
    // The upstream's message path of this legacy session, once its endpoint event is seen.
    let upstream_path = std::sync::OnceLock::new();
    let mut endpoint = (plan.rewrite == Rewrite::SseEndpoint).then(|| {
        EndpointRewriter::new(|uri: &str| {
            let target = instance.endpoint.join(uri).ok()?;
            let mut path = target.path().to_owned();
            if let Some(q) = target.query() {
                path.push('?');
                path.push_str(q);
            }
            let token = sessions.seal(Scope::SseMessage(&server.id, &binding), &instance.id, &path);
            let _ = upstream_path.set(path);
            Some(format!("/mcp/{}/message?sessionId={token}", server.name))
        })
    });
    let mut lists =
        plan.legacy_lists.then(|| crate::policy::LegacyListStream::new(&gw.pending_lists, &server.id));
    let mut rewriter =
        (sse && !plan.rewrites.is_empty()).then(|| crate::sse::MessageRewriter::new(plan.rewrites.clone()));
    // The answer to a POST is one JSON-RPC message (JSON) or ends with one (SSE): its error code is
    // recorded. Streams opened by GET carry many messages, none of them this request's answer.
    let mut sniff = session.req_header().method == http::Method::POST;
    if let Some(data) = first_chunk.take() {
        if let Some(answer) = crate::audit::capture::answer(&data) {
            ctx.audited.answer = Some(answer);
            sniff = false;
        }
        if session.write_response_body(Some(data), false).await.is_err() {
            abandon(gw, up, peer, gone);
            return Ok(Some(upstream_ok));
        }
    }
    loop {
        tokio::select! {
            chunk = up.read_response_body() => match chunk {
                Ok(Some(data)) => {
                    if sniff && let Some(answer) = crate::audit::capture::answer(&data) {
                        ctx.audited.answer = Some(answer);
                        sniff = false;
                    }
                    let data = match endpoint.as_mut() { Some(r) => r.feed(data), None => data };
                    let data = match rewriter.as_mut() { Some(r) => r.feed(data), None => data };
                    let data = match lists.as_mut() {
                        Some(lists) => match lists.feed(data, upstream_path.get()) {
                            Ok(data) => data,
                            Err(why) => {
                                tracing::warn!(server = %server.name, why, "Closing a legacy SSE stream whose list answer cannot be filtered.");
                                abandon(gw, up, peer, gone);
                                return Ok(Some(upstream_ok));
                            }
                        },
                        None => data,
                    };
                    if !data.is_empty() && session.write_response_body(Some(data), false).await.is_err() {
                        abandon(gw, up, peer, gone);
                        return Ok(Some(upstream_ok));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "Upstream failed mid-response; closing the client connection.");
                    return Err(Attempt::Failed(Failure::Abort(e), Some(false)));
                }
            },
            _ = client_gone(session) => {
                abandon(gw, up, peer, gone);
                return Ok(Some(upstream_ok));
            }
        }
    }
    let tail = endpoint
        .as_mut()
        .map(EndpointRewriter::finish)
        .or_else(|| rewriter.as_mut().map(crate::sse::MessageRewriter::finish))
        .filter(|t| !t.is_empty());
    session
        .write_response_body(tail, true)
        .await
        .map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    gw.connector.release_http_session(up, peer, Some(gw.limits.pool_idle_timeout)).await;
    Ok(Some(upstream_ok))
}

/// Reads an answer whole (bounded), changes it with `transform` (body, whether SSE) — a list filtered for
/// a restricted caller, a legacy result completed for a 2026-07-28 one — and answers with it.
#[allow(clippy::too_many_arguments)]
async fn filtered(
    gw: &Gateway,
    session: &mut Session,
    server: &Server,
    mut up: pingora::protocols::http::client::HttpSession,
    peer: &HttpPeer,
    gone: OnClientGone,
    mut resp: ResponseHeader,
    transform: &(dyn Fn(&[u8], bool) -> Bytes + Sync),
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
                abandon(gw, up, peer, gone);
                return Ok(Some(upstream_ok));
            }
        }
    }
    let out = transform(&body, sse);
    resp.remove_header(&header::TRANSFER_ENCODING);
    resp.insert_header(header::CONTENT_LENGTH, out.len().to_string())
        .map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    let write = async {
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(out), true).await
    };
    write.await.map_err(|e| Attempt::Failed(Failure::Abort(e), Some(upstream_ok)))?;
    gw.connector.release_http_session(up, peer, Some(gw.limits.pool_idle_timeout)).await;
    Ok(Some(upstream_ok))
}

/// Replaces the upstream's `Mcp-Session-Id` with a token naming this instance (or echoes the client's
/// token while the upstream id is unchanged).
fn seal_session_id(
    gw: &Gateway,
    server: &Server,
    instance: &Instance,
    plan: &Plan,
    principal: &str,
    resp: &mut ResponseHeader,
) {
    let Some(upstream) = resp.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
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
fn abandon(gw: &Gateway, mut up: UpstreamSession, peer: &HttpPeer, gone: OnClientGone) {
    if gone == OnClientGone::Cancel {
        // Dropping the session closes the upstream connection, which cancels the request upstream.
        return;
    }
    let connector = gw.connector.clone();
    let peer = peer.clone();
    let pool_idle = gw.limits.pool_idle_timeout;
    tokio::spawn(async move {
        let drained: Result<pingora::Result<()>, _> = tokio::time::timeout(DRAIN_LIMIT, async {
            if up.response_header().is_none() {
                up.read_response_header().await?;
            }
            while up.read_response_body().await?.is_some() {}
            Ok(())
        })
        .await;
        if matches!(drained, Ok(Ok(()))) {
            connector.release_http_session(up, &peer, Some(pool_idle)).await;
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
        };
        let table = RoutingTable::build(&set, &RoutingTable::default(), &InstanceStates::default(), settings)
            .await
            .unwrap();
        table.server("a").unwrap().instances[0].clone()
    }

    #[tokio::test]
    async fn request_is_rewritten_for_the_upstream() {
        let inst = instance("http://127.0.0.1:3001/v1/mcp").await;
        let mut down = RequestHeader::build("POST", b"/mcp/a?sessionId=1", None).unwrap();
        for (k, v) in [
            ("host", "gateway.example:8080"),
            ("origin", "http://evil.example"),
            ("connection", "keep-alive"),
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
        ] {
            down.append_header(k, v).unwrap();
        }
        let plan = Plan { upstream_session: Some("upstream-sid".into()), ..Plan::default() };
        let up = upstream_request(&down, &inst, None, 12, &plan).unwrap();
        assert_eq!(up.uri.to_string(), "/v1/mcp?sessionId=1");
        let get = |n: &str| up.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("host").as_deref(), Some("127.0.0.1:3001"));
        assert_eq!(get("content-length").as_deref(), Some("12"));
        for gone in [
            "origin",
            "connection",
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
        assert_eq!(on_client_gone(&up), OnClientGone::Drain);
    }

    #[tokio::test]
    async fn cancellation_follows_the_era() {
        let mut modern = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        modern.insert_header("MCP-Protocol-Version", "2026-07-28").unwrap();
        assert_eq!(on_client_gone(&modern), OnClientGone::Cancel);
        let get = RequestHeader::build("GET", b"/mcp/a", None).unwrap();
        assert_eq!(on_client_gone(&get), OnClientGone::Cancel);
        let legacy = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        assert_eq!(on_client_gone(&legacy), OnClientGone::Drain);
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

    #[test]
    fn response_framing() {
        let mut close_delimited = ResponseHeader::build(200, None).unwrap();
        close_delimited.insert_header("content-type", "text/event-stream").unwrap();
        close_delimited.insert_header("connection", "close").unwrap();
        let resp = downstream_response(&close_delimited).unwrap();
        assert!(is_event_stream(&resp));
        assert_eq!(resp.headers.get("transfer-encoding").unwrap(), "chunked");
        assert!(resp.headers.get("connection").is_none());
        let mut sized = ResponseHeader::build(202, None).unwrap();
        sized.insert_header("content-length", "0").unwrap();
        assert!(downstream_response(&sized).unwrap().headers.get("transfer-encoding").is_none());
        let no_content = ResponseHeader::build(204, None).unwrap();
        assert!(downstream_response(&no_content).unwrap().headers.get("transfer-encoding").is_none());
    }
}
