//! The upstream stack: everything a request needs on its way to an upstream whatever the transport —
//! the instance it goes to (balanced, or pinned by a session), connecting with the pooled-connection
//! retry, the request as the upstream must see it (credentials, headers, session id), one classification
//! of failures into the client's error (502/503/504) and the breaker's outcome, and the breaker /
//! in-flight / retry-budget accounting. One module per transport sits on top:
//!
//! - [`http`]: Streamable HTTP servers (and legacy HTTP+SSE clients' streams), forwarded as they are;
//! - [`bridge`]: sessions of Streamable HTTP clients carried on a message transport — [`sse`] (legacy
//!   HTTP+SSE servers), [`websocket`] and [`stdio`] servers.

use std::sync::Arc;

use ::http::header::{self, HeaderName};
use mcpgw_proto::v1::HealthStatus;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use response::Response;

use crate::balance::{Gate, InFlight};
use crate::breaker::Outcome;
use crate::error::{Failure, ProxyError};
use crate::headers::Noted;
use crate::routing::{Instance, Server, UpstreamAuth, UpstreamHeader};
use crate::shared::Shared;
use pool::Head;

pub mod bridge;
pub mod http;
pub mod pool;
pub mod response;
pub mod sse;
pub mod stdio;
pub mod websocket;

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
    pub headers: Vec<(HeaderName, ::http::HeaderValue)>,
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
pub(crate) fn is_hop_header(name: &HeaderName) -> bool {
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

/// Headers never forwarded upstream: hop-by-hop ones, those the proxy sets itself, the client's own
/// credentials — a token issued for the gateway must never reach an upstream (no token passthrough, MCP
/// 2025-06-18 §Authorization); an upstream gets the credentials registered for it instead — and claims
/// about the client's address or the request's origin that the client made itself (`Forwarded`,
/// `X-Forwarded-*`, `X-Real-IP`), which an upstream might trust.
fn skip_request_header(name: &HeaderName) -> bool {
    is_hop_header(name)
        || *name == header::AUTHORIZATION
        || *name == header::COOKIE
        || *name == header::HOST
        || *name == header::ORIGIN
        || *name == header::CONTENT_LENGTH
        || *name == header::TRANSFER_ENCODING
        || *name == header::EXPECT
        || *name == header::FORWARDED
        || name.as_str().starts_with("x-forwarded-")
        || name.as_str() == "x-real-ip"
}

/// Headers the client named in its `Connection` header: hop-by-hop by its own word (RFC 9110 §7.6.1).
fn connection_options(headers: &::http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

/// Upstream response headers never served: hop-by-hop ones, and those that would act for the gateway's
/// whole origin, which every upstream shares — cookies (`Set-Cookie`), alternative services (`Alt-Svc`)
/// and HSTS (`Strict-Transport-Security`).
fn skip_response_header(name: &HeaderName) -> bool {
    is_hop_header(name)
        || *name == header::SET_COOKIE
        || *name == header::ALT_SVC
        || *name == header::STRICT_TRANSPORT_SECURITY
}

/// The request as the upstream must see it: its endpoint path, its own authority as `Host`, no `Origin`
/// (SDK servers reject foreign ones), no hop-by-hop headers and none of the client's credentials; every MCP
/// header passes unchanged except `Mcp-Session-Id`, which carries the upstream's own id again. `fields`:
/// which of the fields [`Noted`] knows `down` has.
pub(crate) fn upstream_request(
    down: &RequestHeader,
    instance: &Instance,
    credential: Option<&UpstreamHeader>,
    body_len: usize,
    plan: &Plan,
    traceparent: Option<&[u8]>,
    fields: Noted,
) -> pingora::Result<Head> {
    // The registered endpoint exactly: a client's query string would reach the upstream as the gateway's
    // own parameters (the legacy transport's `sessionId` is the plan's `upstream_path`).
    let path = plan.upstream_path.as_deref().unwrap_or(&instance.path_and_query);
    let mut head = Head::new(&down.method, path)?;
    let nominated = if fields.get(&down.headers, &header::CONNECTION).is_some() {
        connection_options(&down.headers)
    } else {
        Vec::new()
    };
    // What the gateway sets below replaces the client's header of that name.
    let replaced = |name: &HeaderName| {
        credential.is_some_and(|c| c.name == *name)
            || (plan.upstream_session.is_some() && name.as_str() == "mcp-session-id")
            || plan.headers.iter().any(|(n, _)| n == name)
            || (traceparent.is_some() && name.as_str() == "traceparent")
    };
    for (name, value) in &down.headers {
        if !skip_request_header(name) && !nominated.contains(name) && !replaced(name) {
            head.field(name, value);
        }
    }
    head.header("host", instance.authority.as_bytes())?;
    if let Some(c) = credential {
        head.header(c.name.as_str(), c.value.as_bytes())?;
    }
    if body_len > 0 || down.method == ::http::Method::POST {
        head.content_length(body_len);
    }
    if let Some(upstream) = &plan.upstream_session {
        head.header("mcp-session-id", upstream.as_bytes())?;
    }
    for (name, value) in &plan.headers {
        head.header(name.as_str(), value.as_bytes())?;
    }
    if let Some(traceparent) = traceparent {
        // The upstream's spans are children of this attempt's (or at least in this request's trace).
        head.header("traceparent", traceparent)?;
    }
    Ok(head)
}

/// The upstream's response header as the client must see it (`fields`: which of the fields [`Noted`]
/// knows it has).
pub(crate) fn downstream_response(
    mut resp: ResponseHeader,
    fields: Noted,
) -> pingora::Result<ResponseHeader> {
    let mut gone: Vec<HeaderName> =
        resp.headers.keys().filter(|n| skip_response_header(n)).cloned().collect();
    if fields.get(&resp.headers, &header::CONNECTION).is_some() {
        gone.extend(connection_options(&resp.headers));
    }
    for name in gone {
        resp.remove_header(&name);
    }
    resp.set_version(::http::Version::HTTP_11);
    let bodiless = resp.status.is_informational() || matches!(resp.status.as_u16(), 204 | 304);
    let has = |name: &HeaderName| fields.get(&resp.headers, name).is_some();
    if !bodiless && !has(&header::CONTENT_LENGTH) && !has(&header::TRANSFER_ENCODING) {
        // The upstream delimits its body by closing; re-frame it so the client connection can be reused.
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(resp)
}

pub(crate) fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| starts_with_ignore_case(v.trim_start(), "text/event-stream"))
}

/// Whether `text` starts with `prefix`, ASCII case ignored (media types are case-insensitive).
pub(crate) fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The one place a failed exchange becomes the client's error: timeouts (connecting included) 504,
/// failures to reach the instance 502 `upstream_unreachable` (another instance may be tried), anything
/// else 502 `upstream_failed`. What the breaker learns of it is `breaker_ok`.
pub(crate) fn classify(server: &Server, e: &pingora::Error) -> ProxyError {
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

/// Why an attempt on one instance failed.
pub(crate) enum Attempt {
    /// Nothing reached the upstream: another instance may be tried.
    NotSent(ProxyError),
    /// The request was sent (or a response started); `upstream_ok` is what the breaker learns.
    Failed(Failure, Option<bool>),
}

/// Opens (or reuses) a connection and sends the request ([`pool::Pool::send`]). Failures are
/// [`classify`]'d.
pub(crate) async fn connect_and_send(
    gw: &Shared,
    server: &Server,
    peer: &HttpPeer,
    head: &Head,
    body: &[u8],
) -> Result<Response, ProxyError> {
    gw.pool.send(peer, head, body).await.map_err(|e| classify(server, &e))
}

/// The credential the gateway can present to `instance` with no caller at hand (its own exchanges): a
/// static header; a per-caller token exchange has no caller to act for.
pub(crate) fn static_credential(instance: &Instance) -> Option<UpstreamHeader> {
    match &instance.credential {
        Some(UpstreamAuth::Header(header)) => Some(header.clone()),
        _ => None,
    }
}

/// Tells the instance's breaker how an exchange went (`try_send`, never waiting).
pub(crate) fn report_outcome(gw: &Shared, server: &Server, instance: &Instance, ok: bool) {
    gw.breakers.report(Outcome {
        instance_id: instance.id.clone(),
        server: server.name.clone(),
        state: instance.state.clone(),
        config: server.breaker,
        ok,
    });
}

/// Whether a failed exchange says nothing against the instance (for its breaker): only failing to reach it
/// or a broken exchange do; a refusal of the gateway's credentials, a timeout of one slow call or the
/// gateway's own refusal do not.
pub(crate) fn breaker_ok(e: &ProxyError) -> bool {
    !matches!(e, ProxyError::UpstreamUnreachable { .. } | ProxyError::UpstreamFailed { .. })
}

/// Most instances tried for one request that never reached an upstream.
const MAX_ATTEMPTS: usize = 3;

/// What a request that reached no instance becomes when its instance was fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pinning {
    /// Balanced, or pinned without a client session to lose: try another instance (budget permitting).
    None,
    /// The client's session lives on that instance: it is gone (404, the client re-initializes).
    ClientSession,
    /// A session the gateway holds for `/mcp`: it opens another one elsewhere (`UpstreamSessionGone`).
    GatewaySession,
}

/// The instances one request is tried on: the one `target` names, or balanced ones until one takes it —
/// another is tried only while nothing was sent (at most three, within the retry budget). Every outcome
/// reaches the instance's breaker; an instance counts as in flight (least connections) while its
/// [`InFlight`] lives — the exchange, or a bridged session's whole life. Every transport goes through here:
///
/// ```text
/// let mut attempts = Attempts::new(gw, server, target, pinning);
/// loop {
///     let in_flight = attempts.next()?;
///     let result = exchange(in_flight.instance()).await;
///     if let Some(done) = attempts.settle(in_flight.instance(), result)? { break done }
/// }
/// ```
pub(crate) struct Attempts<'a> {
    gw: &'a Shared,
    server: &'a Server,
    target: &'a Target,
    pinning: Pinning,
    /// The balanced instances tried, in `tried[..attempts]` (no allocation a request).
    tried: [usize; MAX_ATTEMPTS],
    attempts: usize,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(gw: &'a Shared, server: &'a Server, target: &'a Target, pinning: Pinning) -> Self {
        gw.retry.record_request();
        Self { gw, server, target, pinning, tried: [0; MAX_ATTEMPTS], attempts: 0 }
    }

    /// The next instance to try, counted in flight.
    pub(crate) fn next(&mut self) -> Result<InFlight, Failure> {
        let instance = match self.target {
            Target::Pinned(instance) => instance.clone(),
            Target::Balanced { hash } => {
                let server = self.server;
                let tried = &self.tried[..self.attempts];
                let idx = server.selector().pick(hash, tried).ok_or_else(|| no_instance(server))?;
                // `settle` asks for another attempt only below MAX_ATTEMPTS.
                let slot = self.tried.get_mut(self.attempts).ok_or_else(|| no_instance(server))?;
                *slot = idx;
                self.attempts += 1;
                server.instances[idx].clone()
            }
        };
        Ok(InFlight::new(instance))
    }

    /// Reports how the attempt on `instance` went: `Some` when the request is done, `None` to try the next
    /// instance, or why it failed.
    pub(crate) fn settle<T>(
        &mut self,
        instance: &Instance,
        result: Result<(T, Option<bool>), Attempt>,
    ) -> Result<Option<T>, Failure> {
        let (gw, server) = (self.gw, self.server);
        let report = |ok: bool| report_outcome(gw, server, instance, ok);
        let error = match result {
            Ok((value, upstream_ok)) => {
                upstream_ok.map(report);
                return Ok(Some(value));
            }
            Err(Attempt::Failed(failure, upstream_ok)) => {
                upstream_ok.map(report);
                return Err(failure);
            }
            Err(Attempt::NotSent(error)) => error,
        };
        report(false);
        match (self.target, self.pinning) {
            (_, Pinning::GatewaySession) => return Err(Failure::UpstreamSessionGone),
            (Target::Pinned(_), Pinning::ClientSession) => {
                return Err(ProxyError::SessionNotFound(format!(
                    "its instance is unreachable ({})",
                    error.reason()
                ))
                .into());
            }
            _ => {}
        }
        let more = self.attempts < server.instances.len().min(MAX_ATTEMPTS);
        if !(more && gw.retry.try_retry()) {
            return Err(error.into());
        }
        tracing::debug!(server = %server.name, instance = %instance.id, %error, "Nothing was sent; trying another instance.");
        Ok(None)
    }
}

/// The credential the gateway presents to `instance` for the caller of `down`.
pub(crate) async fn credential(
    gw: &Shared,
    down: &RequestHeader,
    server: &Server,
    instance: &Instance,
) -> Result<Option<UpstreamHeader>, ProxyError> {
    Ok(match &instance.credential {
        None => None,
        Some(UpstreamAuth::Header(header)) => Some(header.clone()),
        Some(UpstreamAuth::Exchange { audience, scopes }) => {
            // Boxed: the exchange (a gRPC call on a cache miss) is a future of ~2 KiB that every request's
            // future would otherwise carry.
            Some(Box::pin(exchanged_token(gw, down, server, audience, scopes)).await?)
        }
    })
}

/// The caller's credential exchanged for a token for `audience` (not an instance failure: no breaker
/// report, no retry on another instance).
async fn exchanged_token(
    gw: &Shared,
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
pub(crate) fn status_ok(status: u16) -> bool {
    !matches!(status, 502 | 503)
}
