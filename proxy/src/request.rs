//! One request's state on its way through the gateway, and the small answers every handler writes.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use serde_json::Value;

use crate::error::{Failure, ProxyError, UNKNOWN_SESSION};
use crate::identity::Principal;
use crate::session::TokenError;

/// The client's side of one HTTP/1 request on the MCP listener (`crate::connections` serves a connection's
/// requests one after another, each its own session).
pub type Session = crate::downstream::Session;

/// Per-request state, read by `Gateway::record` for metrics and the audit record.
pub struct RequestCtx {
    pub(crate) started: Instant,
    /// The request's place in the audit queue.
    pub(crate) audit: crate::audit::Slot,
    /// What the audit record says of the request beyond what the session shows.
    pub(crate) audited: Audited,
    /// Registered server name; `None` (label `-`) when the request matched none (bounded label values).
    pub(crate) server: Option<Arc<str>>,
    pub(crate) method: &'static str,
    /// Id for a JSON-RPC error answer; `None` when the request was not JSON-RPC.
    pub(crate) rpc_id: Option<Value>,
    pub(crate) response_started: Option<Instant>,
    /// Who the request acts for, once authenticated.
    pub(crate) principal: Option<Principal>,
    /// The request's trace (`crate::trace`), set when its head is read.
    pub(crate) trace: crate::trace::Trace,
}

/// What a request's audit record needs that only the request path learns.
#[derive(Default)]
pub(crate) struct Audited {
    /// JSON-RPC method, target name, id and protocol revision (`_meta`) of the body.
    pub(crate) method: Option<crate::jsonrpc::Method>,
    pub(crate) target: Option<String>,
    pub(crate) request_id: Option<serde_json::Value>,
    pub(crate) protocol_version: Option<std::borrow::Cow<'static, str>>,
    /// The gateway's refusal reason (the error table's), when it answered with an error.
    pub(crate) refusal: Option<&'static str>,
    /// The caller may not use what it asked for (the client was told it does not exist).
    pub(crate) forbidden: bool,
    /// The instance that served the request.
    pub(crate) instance: Option<Arc<str>>,
    /// Whether the upstream's answer was a JSON-RPC result or error.
    pub(crate) answer: Option<crate::audit::capture::Answer>,
    /// The arguments as the server's `audit_arguments` keeps them.
    pub(crate) arguments: Option<String>,
    pub(crate) bytes_in: usize,
}

impl RequestCtx {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            audit: crate::audit::Slot::None,
            audited: Audited::default(),
            server: None,
            method: "",
            rpc_id: None,
            response_started: None,
            principal: None,
            trace: crate::trace::Trace::default(),
        }
    }

    /// The principal's session binding (`Principal::binding`); empty before authentication.
    pub(crate) fn binding(&self) -> Arc<str> {
        self.principal.as_ref().map_or_else(|| Arc::from(""), |p| p.binding().clone())
    }
}

/// The `sessionId` query parameter of a legacy HTTP+SSE message POST.
pub(crate) fn session_id_query(session: &Session) -> Result<String, ProxyError> {
    let query = session.req_header().uri.query().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "sessionId")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ProxyError::BadRequest("the sessionId query parameter is required".into()))
}

/// A token that does not open: the reason is logged, the client is told the same thing whatever it was.
pub(crate) fn unknown_session(e: TokenError) -> ProxyError {
    tracing::debug!(reason = %e, "A session token was refused.");
    ProxyError::SessionNotFound(UNKNOWN_SESSION.into())
}

/// Resolves when the client has closed or reset its connection; pending while it is open.
///
///
/// Bytes the client sends meanwhile (its next request, sent as soon as a `Content-Length` answer was
/// complete) are kept in the session for that request (`Session::client_gone`); once the client went,
/// the connection is not reused.
pub(crate) async fn client_gone(session: &mut Session) {
    session.client_gone().await;
}

/// Answers with `body` (empty: no body), carrying a session token when there is one.
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
    session.write_response_header(Box::new(resp)).await.map_err(Failure::Abort)?;
    ctx.response_started = Some(std::time::Instant::now());
    ctx.audited.answer = crate::audit::capture::answer(&body);
    if !body.is_empty() {
        session.write_response_body(body, true).await.map_err(Failure::Abort)?;
    }
    Ok(())
}
