//! The MCP listener's request path (one request of a connection `crate::connections` serves): route `/mcp/{server}`, read and inspect the body
//! once, admit it (`route`), and hand it to `/mcp` (`aggregate`) or to the upstream stack (`upstream`). Every request is answered
//! here, in [`Gateway::exchange`], so that bodies of any size (up to the limit) reach the upstream intact and
//! the response streams back under our own timeouts and cancellation rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mcpgw_proto::v1::Transport;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::server::ShutdownWatch;
use serde_json::Value;

use crate::drain::Closing;
use crate::error::{Failure, ProxyError};
use crate::jsonrpc::Rpc;
use crate::request::{RequestCtx, Session};
use crate::route::{self, Route};
use crate::shared::Shared;
use crate::trace::Trace;
use crate::upstream::bridge::Bridges;
use crate::upstream::http::Relay;
use crate::upstream::{Plan, Rewrite};

/// The MCP listener: the shared parts every handler uses, and the registries of the bridged transports
/// and of `/mcp`.
pub struct Gateway {
    pub shared: Shared,
    /// Sessions bridged onto message transports (legacy SSE, WebSocket, stdio), held by this replica.
    pub bridges: Arc<Bridges>,
    /// `/mcp`'s upstream sessions, HTTP+SSE client streams and registrar.
    pub aggregate: crate::aggregate::State,
}

impl std::ops::Deref for Gateway {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

fn http_method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::DELETE => "DELETE",
        http::Method::POST => "POST",
        _ => "other",
    }
}

/// What a connection does after a request ([`Gateway::exchange`]).
pub enum Next {
    /// Closes.
    Close,
    /// Reads its next request.
    Reuse,
    /// Relays the request's GET stream first ([`Gateway::relay`]); the request's own future has ended.
    Relay(Box<Relayed>),
}

/// A request whose answer is a GET stream still flowing: the stream's state and what its record needs.
pub struct Relayed {
    relay: Relay,
    ctx: RequestCtx,
}

/// How a request's handling ends: answered (`None`), or with a GET stream to relay.
type Answered = Result<Option<Relay>, Failure>;

impl Gateway {
    /// Serves one request of a client connection: reads its head (or learns that the connection is idle and
    /// closing), answers it and records it — or, when the answer is a GET stream, leaves the rest of it to
    /// [`Gateway::relay`], so that an idle stream does not hold the request path's futures.
    pub async fn exchange(&self, session: &mut Session, closing: &Closing, shutdown: &ShutdownWatch) -> Next {
        let read = tokio::select! {
            biased; // a request already buffered is served, not dropped
            read = session.read_request() => read,
            () = closing.wait() => return Next::Close,
        };
        match read {
            Ok(true) => {}
            Ok(false) => return Next::Close,
            Err(e) => {
                if matches!(e.etype(), InvalidHTTPHeader) {
                    tracing::debug!(error = %e, "Refused a request head that does not parse.");
                    let _ = session.respond_error(400).await;
                }
                session.shutdown().await;
                return Next::Close;
            }
        }
        if session.req_header().method == http::Method::CONNECT {
            let _ = session.respond_error(405).await;
            session.shutdown().await;
            return Next::Close;
        }
        if *shutdown.borrow() {
            // The listener is stopping: this answer is the connection's last.
            session.set_keepalive(None);
        }
        // Bytes of the client's next request that arrive while this one is answered are kept for it, not
        // dropped (`Session::client_gone`). HTTP/1.1 requests on one connection are still answered in
        // order, one at a time (RFC 9112 §9.3.2).
        let mut ctx = RequestCtx::new();
        ctx.trace = Trace::start(session.req_header(), session.noted(), self.tracer.as_deref());
        let trace = ctx.trace.id;
        // Polled in place: moving this future (tens of KiB) into a wrapper would copy it every request.
        let answered = {
            let answer = std::pin::pin!(self.answer(session, &mut ctx));
            mcpgw_proto::otlp::InTrace::new(trace, answer).await
        };
        let reuse = match answered {
            Ok(Some(relay)) => return Next::Relay(Box::new(Relayed { relay, ctx })),
            Ok(None) => true,
            Err(e) => {
                failed(session, &e).await;
                false
            }
        };
        self.record(session, &mut ctx);
        if reuse { Next::Reuse } else { Next::Close }
    }

    /// Relays a GET stream to its end, then records its request. `false` when the connection cannot carry
    /// another request.
    pub async fn relay(&self, session: &mut Session, mut relayed: Box<Relayed>) -> bool {
        // Left in its box: the stream's future holds references, not the request's state.
        let Relayed { relay, ctx } = &mut *relayed;
        let trace = ctx.trace.id;
        let outcome = {
            let run = std::pin::pin!(relay.run(&self.shared, session, ctx));
            mcpgw_proto::otlp::InTrace::new(trace, run).await
        };
        let reuse = match outcome {
            Ok(()) => true,
            Err(e) => {
                // Boxed: rare, and its future (1.4 KiB) would otherwise be carried by every idle stream's.
                Box::pin(failed(session, &e)).await;
                false
            }
        };
        self.record(session, ctx);
        reuse
    }

    /// Counts, traces and audits a request that has ended.
    fn record(&self, session: &Session, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let method =
            if ctx.method.is_empty() { http_method_label(&session.req_header().method) } else { ctx.method };
        let elapsed = ctx.started.elapsed();
        crate::metrics::observe_request(
            ctx.server.as_ref(),
            method,
            status_label(status),
            ctx.response_started.map(|at| at - ctx.started),
            elapsed,
        );
        if let Some(tracer) = self.tracer.as_deref() {
            if !ctx.trace.recorded() {
                // Not sampled, or sampled while the exporter refused spans: nothing is built.
                ctx.trace.count_refused(tracer);
            } else {
                let req = session.req_header();
                let audited = &ctx.audited;
                let outcome = outcome(audited, status);
                let mut id = crate::audit::capture::IdText::default();
                let root = crate::trace::Root {
                    http_method: req.method.as_str(),
                    path: req.uri.path(),
                    status,
                    mcp_method: audited.method.as_deref(),
                    target: audited.target.as_deref(),
                    request_id: audited.request_id.as_ref().map(|i| id.of(i)),
                    protocol_version: session
                        .mcp_headers()
                        .protocol_version_value()
                        .and_then(|v| v.to_str().ok())
                        .or(audited.protocol_version.as_deref()),
                    server: ctx.server.as_ref(),
                    instance: audited.instance.as_ref(),
                    outcome: &outcome,
                };
                ctx.trace.export(tracer, ctx.started, root);
            }
        }
        let slot = std::mem::replace(&mut ctx.audit, crate::audit::Slot::None);
        if !matches!(slot, crate::audit::Slot::None) {
            let record = self.audit_record(session, ctx, status, elapsed);
            self.auditor.submit(slot, record);
        }
    }
}

/// Ends a request whose handling failed with `e`: answered with the status the error implies when no
/// answer started and the client is still there (an answer already under way is cut short by closing).
async fn failed(session: &mut Session, e: &pingora::Error) {
    let status = match e.etype() {
        HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream if matches!(e.etype(), WriteError | ReadError | ConnectionClosed) => 0,
            ErrorSource::Downstream => 400,
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    if status == 0 {
        tracing::debug!(error = %e, "The client went away during its request.");
        return;
    }
    tracing::warn!(error = %e, status, path = session.req_header().uri.path(), "Request failed.");
    if session.response_written().is_none() {
        let _ = session.respond_error(status).await;
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        421 => "421",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "none",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

impl Gateway {
    /// Answers the request, with an error when it fails before its answer started; `Some` when the answer
    /// is a GET stream to relay.
    async fn answer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Option<Relay>> {
        match self.handle(session, ctx).await {
            Ok(relay) => Ok(relay),
            Err(Failure::Reply(error)) => {
                ctx.audited.refusal = Some(error.reason());
                self.reply_error(session, ctx, &error).await.map(|()| None)
            }
            Err(Failure::Abort(error)) => Err(error),
            Err(Failure::UpstreamSessionGone) => {
                let error = ProxyError::SessionNotFound(crate::error::UNKNOWN_SESSION.into());
                ctx.audited.refusal = Some(error.reason());
                self.reply_error(session, ctx, &error).await.map(|()| None)
            }
        }
    }

    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Answered {
        let path = session.req_header().uri.path();
        if path.starts_with("/mcp") && !path.contains("/.well-known/") {
            // An MCP request: its record is kept whatever its end (a place is reserved first with
            // `--audit-overflow refuse`).
            ctx.audit = self.auditor.admit()?;
        }
        if posts_json(session) {
            // Every MCP POST carries JSON-RPC: errors raised before the id is known answer with a null id.
            ctx.rpc_id = Some(Value::Null);
        }
        let deadline = self.limits.request_body_timeout;
        // Most bodies arrived with their head: read at once, without a timer; one still on its way is
        // read under the body timeout.
        let body = {
            let mut read = std::pin::pin!(self.read_body(session));
            match futures_util::FutureExt::now_or_never(read.as_mut()) {
                Some(body) => body?,
                None => match tokio::time::timeout(deadline, read).await {
                    Ok(body) => body?,
                    Err(_) => return Err(ProxyError::RequestTimeout { limit: deadline }.into()),
                },
            }
        };
        ctx.audited.bytes_in = body.len();
        Trace::mark(ctx.trace.marks(), &mut ctx.trace.body_read);
        let rpc = Rpc::inspect(&body);
        if let Some(rpc) = &rpc {
            ctx.method = rpc.method_label();
            ctx.rpc_id = Some(rpc.error_id());
        }
        let result = self.serve(session, ctx, body, rpc.as_ref()).await;
        if let Some(Rpc::Message { id, method, name, protocol_version, .. }) = rpc {
            let audited = &mut ctx.audited;
            audited.request_id = id;
            audited.method = Some(method);
            audited.target = name;
            audited.protocol_version = protocol_version;
        }
        result
    }

    async fn serve(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        rpc: Option<&Rpc>,
    ) -> Answered {
        self.front.check(session.req_header(), session.host(), session.noted())?;
        let path = session.req_header().uri.path();
        if let Some(resource) = metadata_resource(path, &self.auth.public_url) {
            let resource = resource.map(str::to_owned);
            return self.protected_resource_metadata(session, resource.as_deref()).await.map(|()| None);
        }
        if is_legacy_oauth_path(path) {
            return self.legacy_oauth_redirect(session).await.map(|()| None);
        }
        self.dispatch(session, ctx, body, rpc).await
    }

    /// What `/mcp` works with.
    fn aggregator(&self) -> crate::aggregate::Aggregator<'_> {
        crate::aggregate::Aggregator { shared: &self.shared, state: &self.aggregate, bridges: &self.bridges }
    }

    async fn dispatch(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        rpc: Option<&Rpc>,
    ) -> Answered {
        // The target shares the head's bytes: a clone, not a copy, outlives the borrow of the session.
        let uri = session.req_header().uri.clone();
        let path = uri.path();
        let route = Route::parse(path).ok_or_else(|| ProxyError::RouteNotFound { path: path.to_owned() })?;
        let table = self.routes.load().ok_or(ProxyError::NotReady)?;
        let principal = self.auth.authenticate(
            session.req_header(),
            session.noted(),
            table.credentials(),
            // A name that cannot be a server's is not echoed into the challenge header.
            route.server().filter(|name| mcpgw_proto::validate::server_name(name).is_ok()),
            std::time::SystemTime::now(),
        )?;
        Trace::mark(ctx.trace.marks(), &mut ctx.trace.authenticated);
        let Some(name) = route.server() else {
            // The `/mcp` paths are boxed: their futures are several times the forwarding path's, and every
            // connection's future would otherwise be as large as the largest (BENCHMARKS.md, scenario f).
            let result = Box::pin(crate::aggregate::handle(
                &self.aggregator(),
                session,
                ctx,
                &table,
                &principal,
                body,
                rpc,
            ))
            .await;
            ctx.principal = Some(principal);
            return result.map(|()| None);
        };
        if let Route::Mcp(name @ ("sse" | "message")) = route {
            // The HTTP+SSE transport (2024-11-05) of /mcp: its stream and its messages.
            let result = if name == "sse" {
                Box::pin(crate::aggregate::legacy_sse::open(&self.aggregator(), session, ctx, &principal))
                    .await
            } else {
                Box::pin(crate::aggregate::legacy_sse::message(
                    &self.aggregator(),
                    session,
                    ctx,
                    &table,
                    &principal,
                    body,
                    rpc,
                ))
                .await
            };
            ctx.principal = Some(principal);
            return result.map(|()| None);
        }
        if matches!(route, Route::Mcp(crate::aggregate::own::NAME)) {
            let result = Box::pin(crate::aggregate::own_server(
                &self.aggregator(),
                session,
                ctx,
                &table,
                &principal,
                body,
                rpc,
            ))
            .await;
            ctx.principal = Some(principal);
            return result.map(|()| None);
        }
        let binding = principal.binding().clone();
        let admitted = route::admit(self, session, ctx, &table, &principal, name, &body, rpc).await;
        // Kept for the audit record whatever the decision.
        ctx.principal = Some(principal);
        let route::Admitted { server, filter, restricted, stream } = admitted?;
        Trace::mark(ctx.trace.marks(), &mut ctx.trace.admitted);
        let plan = match route {
            Route::Mcp(_) if server.transport != Transport::StreamableHttp => {
                let target = route::balanced(session, &server);
                return Box::pin(crate::upstream::bridge::handle(
                    self,
                    &self.bridges,
                    session,
                    ctx,
                    &server,
                    target,
                    body,
                    rpc,
                    filter.as_ref(),
                ))
                .await
                .map(|()| None);
            }
            Route::Mcp(_) => {
                Plan { filter, ..route::mcp_plan(self, session, &table, &server, rpc, &binding)? }
            }
            Route::Aggregate => return Err(ProxyError::RouteNotFound { path: path.to_owned() }.into()),
            Route::Sse(_) => {
                if server.transport != Transport::Sse {
                    return Err(ProxyError::NotSse { server: server.name.to_string() }.into());
                }
                Plan {
                    target: route::balanced(session, &server),
                    rewrite: Rewrite::SseEndpoint,
                    legacy_lists: restricted,
                    ..Plan::default()
                }
            }
            Route::Message(_) => {
                let plan = route::message_plan(self, session, &table, &server, &binding)?;
                if let (Some(filter), Some(Rpc::Message { id: Some(id), .. })) = (filter, rpc) {
                    // The answer arrives on the session's SSE stream, which filters it (`upstream::http`).
                    let upstream = plan.upstream_path.clone().unwrap_or_default();
                    self.pending_lists.expect((server.id.clone(), upstream), id.to_string(), filter)?;
                }
                plan
            }
        };
        let relay = crate::upstream::http::run(self, session, ctx, &server, plan, body).await?;
        // A relayed GET stream keeps its place among the capped streams until it ends.
        Ok(relay.map(|relay| relay.holding(stream)))
    }

    /// Reads the whole request body, refusing more than the configured limit.
    async fn read_body(&self, session: &mut Session) -> Result<Bytes, Failure> {
        let limit = self.limits.max_request_body;
        let declared = session.declared_length().map(|len| usize::try_from(len).unwrap_or(usize::MAX));
        if declared.is_some_and(|len| len > limit) {
            return Err(ProxyError::BodyTooLarge { limit }.into());
        }
        if session.is_body_empty() {
            return Ok(Bytes::new());
        }
        if expects_continue(session) {
            session.write_continue_response().await.map_err(Failure::Abort)?;
        }
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        while let Some(chunk) =
            session.read_request_body().await.map_err(|e| ProxyError::BadRequestBody(e.to_string()))?
        {
            let total = first.as_ref().map_or(0, Bytes::len) + buf.len() + chunk.len();
            if total > limit {
                return Err(ProxyError::BodyTooLarge { limit }.into());
            }
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                None => buf.extend_from_slice(&chunk),
                Some(f) => {
                    buf.reserve(declared.unwrap_or(total).min(limit));
                    buf.extend_from_slice(&f);
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    }

    /// Answers with `error` (a JSON-RPC error when the request was JSON-RPC), unless a response is already
    /// underway, in which case the connection is closed.
    async fn reply_error(&self, session: &mut Session, ctx: &RequestCtx, error: &ProxyError) -> Result<()> {
        if session.response_written().is_some() {
            return Error::e_explain(WriteError, format!("response already started: {error}"));
        }
        if error.status() >= 500 {
            tracing::warn!(server = ctx.server.as_deref().unwrap_or("-"), reason = error.reason(), %error, "Request failed.");
        }
        let body = error.body(ctx.rpc_id.as_ref());
        let mut resp = ResponseHeader::build(error.status(), Some(4))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        if let Some(challenge) = error.challenge() {
            resp.insert_header(http::header::WWW_AUTHENTICATE, challenge)?;
        }
        match error {
            ProxyError::RateLimited { retry_after_secs, .. } => {
                resp.insert_header(http::header::RETRY_AFTER, retry_after_secs.to_string())?;
            }
            ProxyError::RateLimitUnavailable { .. } | ProxyError::AuditUnavailable => {
                resp.insert_header(http::header::RETRY_AFTER, "1")?
            }
            _ => {}
        }
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        let unread_body = matches!(
            error,
            ProxyError::BodyTooLarge { .. }
                | ProxyError::BadRequestBody(_)
                | ProxyError::RequestTimeout { .. }
        );
        if unread_body {
            // The rest of the body was not read: the connection cannot carry another request.
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp)).await?;
        session.write_response_body(body, true).await?;
        if unread_body && !expects_continue(session) {
            linger(session).await;
        }
        Ok(())
    }
}

impl Gateway {
    /// The audit record of a request that ended with `status` (0: no response, the connection closed), in
    /// its wire form (`audit::wire`), written from the request's fields without copying them.
    fn audit_record(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        status: u16,
        elapsed: std::time::Duration,
    ) -> crate::audit::wire::Encoded {
        use crate::audit::capture::{self, Answer};
        use crate::identity::PrincipalKind;
        let started = std::time::SystemTime::now() - elapsed;
        let unix = started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let req = session.req_header();
        let mcp = session.mcp_headers();
        let audited = std::mem::take(&mut ctx.audited);
        let legacy = {
            let path = req.uri.path();
            path.ends_with("/sse") || path.ends_with("/message")
        };
        let own;
        let principal: [&str; 4] = match ctx.principal.as_ref().map(|p| &p.kind) {
            None => ["", "", "", ""],
            Some(PrincipalKind::ApiKey { id }) => ["api-key:", id, "", ""],
            Some(PrincipalKind::Token { issuer, subject }) => {
                own = self.routes.load();
                let own = own.as_ref().and_then(|t| t.credentials().own_authorization_server());
                if own == Some(&**issuer) {
                    ["user:", subject, "", ""]
                } else {
                    ["jwt:", issuer, "#", subject]
                }
            }
            Some(PrincipalKind::Anonymous) => ["anonymous", "", "", ""],
        };
        let era = match mcp.protocol_version_value().and_then(|v| std::str::from_utf8(v.as_bytes()).ok()) {
            Some(version) if version.len() <= 32 => version,
            _ => match &audited.protocol_version {
                Some(version) => version,
                None if legacy => "2024-11-05",
                None => "",
            },
        };
        let session_token = mcp.session_id().map(http::HeaderValue::as_bytes).or_else(|| {
            let answer = session.response_written()?;
            answer.headers.get(crate::headers::MCP_SESSION_ID).map(|v| v.as_bytes())
        });
        let session_digest = match session_token {
            Some(token) => capture::session_digest(token),
            None if legacy => req
                .uri
                .query()
                .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "sessionId"))
                .map(|(_, v)| capture::session_digest(v.as_bytes()))
                .unwrap_or_default(),
            None => String::new(),
        };
        let rpc_error = match audited.answer {
            Some(Answer::Error(code)) => Some(code),
            _ => None,
        };
        let outcome = outcome(&audited, status);
        let (mut ip, mut id) = (capture::IpText::default(), capture::IdText::default());
        let client_addr =
            session.client_addr().and_then(|a| a.as_inet()).map(|a| ip.of(a.ip().to_canonical()));
        let method = audited.method.as_deref().unwrap_or_else(|| req.method.as_str());
        let mut w = crate::audit::wire::RecordWriter::default();
        w.bytes(1, &crate::audit::record_id(u64::try_from(unix.as_millis()).unwrap_or(u64::MAX)))
            .int(2, i64::try_from(unix.as_micros()).unwrap_or(i64::MAX), false)
            .text(3, &principal)
            .text(4, &[ctx.principal.as_ref().map_or("", |p| &*p.tenant)])
            .text(5, &[ctx.server.as_deref().unwrap_or_default()])
            .text(6, &[audited.instance.as_deref().unwrap_or_default()])
            .text(7, &[era])
            .text(8, &[method])
            .text(9, &[audited.target.as_deref().unwrap_or_default()])
            .text(10, &[audited.request_id.as_ref().map_or("", |i| id.of(i))])
            .text(11, &[&outcome])
            .uint(12, u64::from(status));
        if let Some(Some(code)) = rpc_error {
            // `optional`: written when the answer was an error with an integer code.
            w.int(13, code, true);
        }
        w.uint(14, u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
            .uint(15, audited.bytes_in as u64)
            .uint(16, session.body_bytes_sent() as u64)
            // ASCII text, both: written as bytes, without a UTF-8 check.
            .bytes(17, client_addr.unwrap_or_default())
            .text(18, &[&session_digest])
            .bytes(19, &mcpgw_proto::otlp::trace_hex(ctx.trace.id))
            .text(20, &[audited.arguments.as_deref().unwrap_or_default()])
            .text(21, &[self.auditor.proxy_id()]);
        w.finish()
    }
}

/// How a request ended, as its audit record and span say it: the gateway's refusal reason, `forbidden`,
/// `aborted` (no response), `http_<status>` for an error status, `error` for a JSON-RPC error, or `ok`.
fn outcome(audited: &crate::request::Audited, status: u16) -> std::borrow::Cow<'static, str> {
    if audited.forbidden {
        "forbidden".into()
    } else if let Some(reason) = audited.refusal {
        reason.into()
    } else if status == 0 {
        "aborted".into()
    } else if status >= 400 {
        format!("http_{status}").into()
    } else if matches!(audited.answer, Some(crate::audit::capture::Answer::Error(_))) {
        "error".into()
    } else {
        "ok".into()
    }
}

/// The resource a protected-resource-metadata path describes (RFC 9728 §3.1: the well-known suffix
/// inserted before the resource's path, `/.well-known/oauth-protected-resource[<prefix>]/mcp[/{server}]`,
/// or appended to it, `/mcp[/{server}]/.well-known/oauth-protected-resource`): `Some(None)` for `/mcp`,
/// `Some(Some(name))` for `/mcp/{name}`.
fn metadata_resource<'a>(path: &'a str, public_url: &url::Url) -> Option<Option<&'a str>> {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let resource = match path.strip_prefix(WELL_KNOWN) {
        Some(rest) => {
            let prefix = public_url.path().trim_end_matches('/');
            let rest = rest.strip_prefix(prefix).unwrap_or(rest);
            if rest.is_empty() { "/mcp" } else { rest }
        }
        None => path.strip_suffix(WELL_KNOWN)?,
    };
    match resource.strip_prefix("/mcp")? {
        "" => Some(None),
        name => name.strip_prefix('/').filter(|n| mcpgw_proto::validate::server_name(n).is_ok()).map(Some),
    }
}

/// Paths where 2025-03-26 clients look for the authorization server: on the MCP server's origin (the MCP
/// URL with its path discarded), metadata first, then the default endpoints.
const LEGACY_OAUTH_PATHS: [(&str, &str); 5] = [
    ("/.well-known/oauth-authorization-server", ""),
    ("/.well-known/openid-configuration", "/.well-known/openid-configuration"),
    ("/authorize", "/oauth/authorize"),
    ("/token", "/oauth/token"),
    ("/register", "/oauth/register"),
];

fn is_legacy_oauth_path(path: &str) -> bool {
    LEGACY_OAUTH_PATHS.iter().any(|(p, _)| *p == path)
}

/// Where a 2025-03-26 client's request for `path?query` belongs at the authorization server `issuer`.
fn legacy_oauth_target(issuer: &str, path: &str, query: Option<&str>) -> Option<String> {
    let (_, target) = LEGACY_OAUTH_PATHS.iter().find(|(p, _)| *p == path)?;
    let mut location = if target.is_empty() {
        // RFC 8414 §3: the well-known segment goes before the issuer's path.
        let url = url::Url::parse(issuer).ok()?;
        let issuer_path = url.path().trim_end_matches('/');
        format!("{}/.well-known/oauth-authorization-server{issuer_path}", url.origin().ascii_serialization())
    } else {
        format!("{}{target}", issuer.trim_end_matches('/'))
    };
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    Some(location)
}

impl Gateway {
    /// Sends a 2025-03-26 client to the control plane's authorization server (307 keeps a POST a POST);
    /// 404 when the gateway has none.
    async fn legacy_oauth_redirect(&self, session: &mut Session) -> Result<(), Failure> {
        let table = self.routes.load().ok_or(ProxyError::NotReady)?;
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let target = table
            .credentials()
            .own_authorization_server()
            .and_then(|issuer| legacy_oauth_target(issuer, &path, req.uri.query()))
            .ok_or_else(|| ProxyError::RouteNotFound { path: path.clone() })?;
        let mut resp = ResponseHeader::build(307, Some(3)).map_err(Failure::Abort)?;
        for (name, value) in [
            (http::header::LOCATION, target),
            (http::header::CONTENT_LENGTH, "0".to_owned()),
            (http::header::CACHE_CONTROL, "no-store".to_owned()),
        ] {
            resp.insert_header(name, value).map_err(Failure::Abort)?;
        }
        session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)
    }

    /// Answers a protected resource metadata request (RFC 9728): public, cacheable, GET only. It is the
    /// same for any server name, registered or not, so that callers without credentials cannot learn which
    /// servers exist.
    async fn protected_resource_metadata(
        &self,
        session: &mut Session,
        resource: Option<&str>,
    ) -> Result<(), Failure> {
        if session.req_header().method != http::Method::GET {
            return Err(ProxyError::BadRequest("protected resource metadata is read with GET".into()).into());
        }
        let table = self.routes.load().ok_or(ProxyError::NotReady)?;
        let body = Bytes::from(self.auth.metadata(resource, table.authorization_servers()).to_string());
        let mut resp = ResponseHeader::build(200, Some(3)).map_err(Failure::Abort)?;
        let headers = [
            (http::header::CONTENT_TYPE, "application/json".to_owned()),
            (http::header::CONTENT_LENGTH, body.len().to_string()),
            (http::header::CACHE_CONTROL, "max-age=300".to_owned()),
        ];
        for (name, value) in headers {
            resp.insert_header(name, value).map_err(Failure::Abort)?;
        }
        session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)?;
        session.write_response_body(body, true).await.map_err(Failure::Abort)
    }
}

fn posts_json(session: &Session) -> bool {
    let req = session.req_header();
    req.method == http::Method::POST
        && req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| crate::upstream::starts_with_ignore_case(v.trim_start(), "application/json"))
}

fn expects_continue(session: &Session) -> bool {
    session
        .noted()
        .get(&session.req_header().headers, &http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Most bytes read and discarded after refusing a body.
const LINGER_BYTES: usize = 64 * 1024 * 1024;
/// Longest time spent discarding a refused body.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what the client is still sending of a refused body, so that closing the connection
/// does not reset it before the client has read the error (the TCP stack answers unread data with RST).
async fn linger(session: &mut Session) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut discarded = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            discarded += chunk.len();
            if discarded > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_clients_are_sent_to_the_authorization_server() {
        let target = |issuer: &str, path: &str, query: Option<&str>| legacy_oauth_target(issuer, path, query);
        assert_eq!(
            target("https://cp.example", "/.well-known/oauth-authorization-server", None).as_deref(),
            Some("https://cp.example/.well-known/oauth-authorization-server")
        );
        assert_eq!(
            target("https://cp.example/auth", "/.well-known/oauth-authorization-server", None).as_deref(),
            Some("https://cp.example/.well-known/oauth-authorization-server/auth"),
            "RFC 8414 form for an issuer with a path"
        );
        assert_eq!(
            target("https://cp.example/auth", "/authorize", Some("client_id=a&state=b")).as_deref(),
            Some("https://cp.example/auth/oauth/authorize?client_id=a&state=b")
        );
        assert_eq!(
            target("https://cp.example", "/token", None).as_deref(),
            Some("https://cp.example/oauth/token")
        );
        assert_eq!(target("https://cp.example", "/mcp/a", None), None);
    }

    #[test]
    fn metadata_paths_in_both_well_known_forms() {
        let plain = url::Url::parse("http://127.0.0.1:8080").unwrap();
        let prefixed = url::Url::parse("https://gw.example/base").unwrap();
        let cases = [
            (&plain, "/.well-known/oauth-protected-resource/mcp/alpha", Some(Some("alpha"))),
            (&plain, "/.well-known/oauth-protected-resource/mcp", Some(None)),
            (&plain, "/.well-known/oauth-protected-resource", Some(None)),
            (&plain, "/mcp/alpha/.well-known/oauth-protected-resource", Some(Some("alpha"))),
            (&plain, "/mcp/.well-known/oauth-protected-resource", Some(None)),
            (&plain, "/.well-known/oauth-protected-resource/mcp/a/b", None),
            (&plain, "/.well-known/oauth-protected-resource/mcp/a%22b", None),
            (&plain, "/.well-known/oauth-protected-resource/other", None),
            (&plain, "/mcp/alpha", None),
            (&prefixed, "/.well-known/oauth-protected-resource/base/mcp/alpha", Some(Some("alpha"))),
        ];
        for (public, path, expected) in cases {
            assert_eq!(metadata_resource(path, public), expected, "{path}");
        }
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(0), "none");
    }
}
