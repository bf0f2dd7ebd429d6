//! Routing one request: the path it names, whether its caller may make it (`admit`: the server, the item,
//! the rate limits, the stream caps — one decision for forwarded and locally answered requests), and which
//! instance serves it — the one holding the client's session (sealed in its token), or one chosen by the
//! server's balancing policy — and which upstream path.

use std::sync::Arc;

use crate::request::Session;
use bytes::Bytes;
use mcpgw_proto::v1::{AuditArguments, HealthStatus};
use mcpgw_proto::validate::HashKey;

use crate::balance::{Gate, Policy};
use crate::error::ProxyError;
use crate::error::UNKNOWN_SESSION;
use crate::headers;
use crate::jsonrpc::Rpc;
use crate::limits::Refusal;
use crate::request::{RequestCtx, session_id_query, unknown_session};
use crate::routing::{Instance, RoutingTable, Server};
use crate::session::Scope;
use crate::shared::Shared;
use crate::upstream::{Plan, Rewrite, Target};

/// The proxy's public paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/mcp/{server}`: Streamable HTTP (both eras).
    Mcp(&'a str),
    /// `GET /mcp/{server}/sse`: legacy HTTP+SSE stream.
    Sse(&'a str),
    /// `POST /mcp/{server}/message?sessionId=…`: legacy HTTP+SSE messages.
    Message(&'a str),
    /// `/mcp`: every server the caller may use, as one (`aggregate`).
    Aggregate,
}

impl<'a> Route<'a> {
    pub fn parse(path: &'a str) -> Option<Self> {
        if path == "/mcp" {
            return Some(Self::Aggregate);
        }
        let rest = path.strip_prefix("/mcp/")?;
        let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return None;
        }
        match tail {
            "" if !rest.ends_with('/') => Some(Self::Mcp(name)),
            "sse" => Some(Self::Sse(name)),
            "message" => Some(Self::Message(name)),
            _ => None,
        }
    }

    /// The server the path names (`None` for `/mcp`).
    pub(crate) fn server(&self) -> Option<&'a str> {
        match self {
            Self::Mcp(n) | Self::Sse(n) | Self::Message(n) => Some(n),
            Self::Aggregate => None,
        }
    }
}

/// A request the gateway lets through to its server.
pub(crate) struct Admitted {
    pub(crate) server: Arc<Server>,
    /// A list answer the caller may see only part of.
    pub(crate) filter: Option<crate::policy::ListFilter>,
    /// The caller's access to the server is restricted (legacy SSE streams filter their list answers).
    pub(crate) restricted: bool,
    /// A GET's place among the capped long-lived streams, held while it is served.
    pub(crate) stream: Option<crate::caps::Permit>,
}

/// Decides whether `principal` may make this request: the server, the item it names, the rate limits, the
/// stream caps.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn admit(
    gw: &Shared,
    session: &Session,
    ctx: &mut RequestCtx,
    table: &Arc<RoutingTable>,
    principal: &crate::identity::Principal,
    name: &str,
    body: &Bytes,
    rpc: Option<&Rpc>,
) -> Result<Admitted, ProxyError> {
    let unknown = || ProxyError::UnknownServer { name: name.to_owned() };
    let server = table.server(name).ok_or_else(unknown)?;
    if !table.access().allows(principal, &server.tenant, &server.name, None) {
        // Told it does not exist; recorded as what it is.
        ctx.audited.forbidden = true;
        return Err(unknown());
    }
    let server = server.clone();
    ctx.server = Some(server.name.clone());
    let unreadable = rpc.is_none() && !body.is_empty();
    if let Err(e) = authorize(table, principal, &server, rpc, unreadable) {
        ctx.audited.forbidden = matches!(e, ProxyError::UnknownItem { .. });
        return Err(e);
    }
    if server.audit_arguments != AuditArguments::None
        && matches!(rpc, Some(Rpc::Message { method, .. }) if method == "tools/call" || method == "prompts/get")
    {
        ctx.audited.arguments = crate::audit::capture::arguments(body, server.audit_arguments);
    }
    rate_limit(gw, table, principal, &server, rpc).await?;
    let stream = (session.req_header().method == http::Method::GET)
        .then(|| gw.streams.acquire_stream(principal.binding()))
        .transpose()?;
    let filter = match rpc {
        Some(Rpc::Message { method, .. }) => crate::policy::ListFilter::of(method, table, principal, &server),
        _ => None,
    };
    let restricted = !table.access().unrestricted(principal, &server.tenant);
    Ok(Admitted { server, filter, restricted, stream })
}

/// Decides the message itself: a named tool, prompt or resource the caller may not use is answered as
/// missing; a batch (2025-03-26) is refused from a caller whose access is restricted, since its messages
/// are not inspected one by one.
fn authorize(
    table: &RoutingTable,
    principal: &crate::identity::Principal,
    server: &Server,
    rpc: Option<&Rpc>,
    unreadable: bool,
) -> Result<(), ProxyError> {
    let access = table.access();
    if unreadable && !access.unrestricted(principal, &server.tenant) {
        return Err(ProxyError::InvalidRequest(
            "the body is not one JSON-RPC message the gateway can read (malformed, or a key repeated)".into(),
        ));
    }
    match rpc {
        Some(Rpc::Batch) if !access.unrestricted(principal, &server.tenant) => Err(ProxyError::InvalidRequest(
            "JSON-RPC batches are not accepted from callers whose access is restricted; send one message per request"
                .into(),
        )),
        Some(Rpc::Message { method, name: Some(name), reference, .. }) => match crate::policy::ItemKind::of_message(method, *reference) {
            Some(kind) if !access.allows(principal, &server.tenant, &server.name, Some((kind, name))) => {
                Err(ProxyError::UnknownItem { kind, name: name.clone() })
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Takes one request from every rate limit that applies to it; the first one exhausted refuses it (429;
/// 503 for a global limit that fails closed and cannot lease its budget).
async fn rate_limit(
    gw: &Shared,
    table: &RoutingTable,
    principal: &crate::identity::Principal,
    server: &Server,
    rpc: Option<&Rpc>,
) -> Result<(), ProxyError> {
    let limits = table.rate_limits();
    if limits.is_empty() {
        return Ok(());
    }
    let tool = match rpc {
        Some(Rpc::Message { method, name: Some(name), .. }) if method == "tools/call" => Some(name.as_str()),
        _ => None,
    };
    for rule in limits {
        let Some(key) = rule.key(principal, &server.name, tool) else { continue };
        match gw.rate_limits.take(rule, key).await {
            Ok(()) => {}
            Err(Refusal::Over(wait)) => {
                crate::metrics::METRICS.rate_limited.with_label_values(&[&rule.id]).inc();
                return Err(ProxyError::RateLimited {
                    limit: rule.id.to_string(),
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                });
            }
            Err(Refusal::Unavailable) => {
                return Err(ProxyError::RateLimitUnavailable { limit: rule.id.to_string() });
            }
        }
    }
    Ok(())
}

pub(crate) fn mcp_plan(
    gw: &Shared,
    session: &Session,
    table: &RoutingTable,
    server: &Arc<Server>,
    rpc: Option<&Rpc>,
    principal: &str,
) -> Result<Plan, ProxyError> {
    let mcp = session.mcp_headers();
    if session.req_header().method == http::Method::POST && mcp.is_stateless() {
        headers::check(mcp, rpc)?;
    }
    let Some(token) = mcp.session_id() else {
        return Ok(Plan {
            target: balanced(session, server),
            rewrite: Rewrite::SessionToken,
            ..Plan::default()
        });
    };
    let token = token.to_str().map_err(|_| ProxyError::SessionNotFound(UNKNOWN_SESSION.into()))?;
    let claims = gw.sessions.open(Scope::Session(&server.id, principal), token).map_err(unknown_session)?;
    Ok(Plan {
        target: Target::Pinned(pinned(table, server, &claims.instance)?),
        upstream_session: Some(claims.upstream),
        client_token: Some(token.to_owned()),
        rewrite: Rewrite::SessionToken,
        ..Plan::default()
    })
}

pub(crate) fn message_plan(
    gw: &Shared,
    session: &Session,
    table: &RoutingTable,
    server: &Arc<Server>,
    principal: &str,
) -> Result<Plan, ProxyError> {
    let token = session_id_query(session)?;
    let claims =
        gw.sessions.open(Scope::SseMessage(&server.id, principal), &token).map_err(unknown_session)?;
    Ok(Plan {
        target: Target::Pinned(pinned(table, server, &claims.instance)?),
        upstream_path: Some(claims.upstream),
        ..Plan::default()
    })
}

/// The instance a session lives on, if it can still serve it; otherwise the session is gone (404), and
/// the client re-initializes onto a healthy instance.
fn pinned(table: &RoutingTable, server: &Server, instance_id: &str) -> Result<Arc<Instance>, ProxyError> {
    let (owner, idx) = table
        .instance(instance_id)
        .filter(|(s, _)| s.id == server.id)
        .ok_or_else(|| ProxyError::SessionNotFound("its instance is no longer registered".into()))?;
    let instance = owner.instances[idx].clone();
    if instance.health == HealthStatus::Unhealthy || instance.state.gate() == Gate::Open {
        return Err(ProxyError::SessionNotFound("its instance is unavailable".into()));
    }
    Ok(instance)
}

/// Balanced target, with the consistent-hash key of this request when the policy needs one.
pub(crate) fn balanced(session: &Session, server: &Server) -> Target {
    let hash = match &server.policy {
        Policy::ConsistentHash { key } => {
            let header = match key {
                HashKey::Header(name) => {
                    session.req_header().headers.get(name.as_str()).map(|v| v.as_bytes().to_vec())
                }
                HashKey::ClientIp => None,
            };
            header.unwrap_or_else(|| {
                session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip().to_string().into_bytes())
                    .unwrap_or_default()
            })
        }
        _ => Vec::new(),
    };
    Target::Balanced { hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/mcp/everything"), Some(Route::Mcp("everything")));
        assert_eq!(Route::parse("/mcp/old/sse"), Some(Route::Sse("old")));
        assert_eq!(Route::parse("/mcp/old/message"), Some(Route::Message("old")));
        assert_eq!(Route::parse("/mcp"), Some(Route::Aggregate));
        for none in ["/mcp/", "/mcp/a/", "/mcp/a/b", "/mcp/a/sse/x", "/other/a", "/mcp//sse"] {
            assert_eq!(Route::parse(none), None, "{none}");
        }
    }
}
