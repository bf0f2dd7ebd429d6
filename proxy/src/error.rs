//! The one error type of the data plane: each variant knows the HTTP status the client gets, its metrics
//! reason, and the JSON-RPC error it becomes when the request was JSON-RPC.

use bytes::Bytes;
use serde_json::{Value, json};

/// JSON-RPC error code for the errors the gateway itself raises (the implementation-defined server-error
/// range); `data.reason` tells them apart.
pub const GATEWAY_ERROR_CODE: i64 = -32000;
/// `Mcp-Session-Id` unknown or expired (the code SDK servers use for it).
pub const SESSION_NOT_FOUND_CODE: i64 = -32001;
/// 2026-07-28 HeaderMismatch: routing headers disagree with the body.
pub const HEADER_MISMATCH_CODE: i64 = -32020;
/// JSON-RPC Invalid Request: the body is not one request or notification.
pub const INVALID_REQUEST_CODE: i64 = -32600;
/// JSON-RPC Invalid params: a field the request must carry is absent (also an unknown tool or prompt).
pub const INVALID_PARAMS_CODE: i64 = -32602;
/// MCP "resource not found".
pub const RESOURCE_NOT_FOUND_CODE: i64 = -32002;
/// JSON-RPC Method not found.
pub const METHOD_NOT_FOUND_CODE: i64 = -32601;
/// 2026-07-28 UnsupportedProtocolVersionError.
pub const UNSUPPORTED_VERSION_CODE: i64 = -32022;

/// What went wrong while handling a request, from the client's point of view.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for path {path:?}; MCP servers are reached at /mcp/{{server}}")]
    RouteNotFound { path: String },
    #[error("no MCP server named {name:?} is registered")]
    UnknownServer { name: String },
    /// A tool, prompt or resource the caller may not use: answered exactly as a missing one would be.
    #[error("{}", unknown_item(*kind, name))]
    UnknownItem { kind: crate::policy::ItemKind, name: String },
    #[error("the proxy has not received a routing table yet")]
    NotReady,
    #[error("server {server:?} has no instance that can take traffic ({detail})")]
    NoInstance { server: String, detail: String },
    #[error("session not found: {0}; initialize a new session")]
    SessionNotFound(String),
    #[error("{detail}")]
    Unauthenticated {
        /// The `WWW-Authenticate` value of the answer.
        challenge: String,
        detail: &'static str,
    },
    #[error("request headers do not match the body: {0}")]
    HeaderMismatch(String),
    /// A protocol revision the gateway's own endpoint does not speak (`data` lists those it does).
    #[error("unsupported protocol version {requested:?}; supported: {}", supported.join(", "))]
    UnsupportedVersion { requested: String, supported: &'static [&'static str] },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// A method `/mcp` does not serve (`modern`: a 2026-07-28 request, answered 404 as the spec asks).
    #[error("Method not found: {method}")]
    MethodNotFound { method: String, modern: bool },
    /// A list cursor `/mcp` did not give for this list and caller (a JSON-RPC error, as servers answer).
    #[error("Invalid cursor: not one this gateway gave for this list")]
    InvalidCursor,
    #[error("this endpoint answers {allowed} only")]
    MethodNotAllowed { allowed: &'static str },
    #[error("server {server:?} does not serve the legacy HTTP+SSE transport")]
    NotSse { server: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "server {server:?} is reached through sessions only (a legacy HTTP+SSE, WebSocket or stdio server): initialize a session"
    )]
    LegacyOnly { server: String },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive within {limit:?}")]
    RequestTimeout { limit: std::time::Duration },
    #[error("{} streams are open already (the most allowed {})", limit, if *per_principal { "per caller" } else { "on this proxy" })]
    TooManyStreams { per_principal: bool, limit: usize },
    #[error("{} connections are open already (the most allowed {})", limit, if *per_client { "per client address" } else { "on this proxy" })]
    TooManyConnections { per_client: bool, limit: usize },
    #[error("rate limit {limit} exceeded; retry in {retry_after_secs} s")]
    RateLimited { limit: String, retry_after_secs: u64 },
    #[error(
        "rate limit {limit} is shared by every proxy and its budget cannot be leased now (the gateway's Redis or control plane is away); retry shortly"
    )]
    RateLimitUnavailable { limit: String },
    #[error(
        "the audit log cannot take this request's record now (the control plane and the audit spill are both full or away); retry shortly"
    )]
    AuditUnavailable,
    #[error("failed to read the request body: {0}")]
    BadRequestBody(String),
    #[error("upstream of server {server:?} is unreachable: {detail}")]
    UpstreamUnreachable { server: String, detail: String },
    #[error("upstream of server {server:?} did not answer in time: {detail}")]
    UpstreamTimeout { server: String, detail: String },
    #[error("upstream of server {server:?} failed: {detail}")]
    UpstreamFailed { server: String, detail: String },
    #[error(
        "the upstream of server {server:?} refused the gateway's credentials; an administrator must fix the \
         server's upstream credentials"
    )]
    UpstreamAuthRefused { server: String },
    #[error("no credential for server {server:?} could be obtained for this caller: {detail}")]
    UpstreamCredentialUnavailable { server: String, detail: String },
    #[error(
        "this proxy does not run program {program:?} of stdio server {server:?} (allowed: --stdio-programs)"
    )]
    StdioNotAllowed { server: String, program: String },
    #[error("requests for host {host:?} are not served here (allowed hosts: --allowed-hosts)")]
    MisdirectedHost { host: String },
    #[error("requests from origin {origin:?} are not allowed (allowed origins: --allowed-origins)")]
    ForbiddenOrigin { origin: String },
}

impl From<crate::headers::Refusal> for ProxyError {
    fn from(refusal: crate::headers::Refusal) -> Self {
        use crate::headers::Refusal;
        match refusal {
            Refusal::InvalidRequest(detail) => Self::InvalidRequest(detail),
            Refusal::InvalidParams(detail) => Self::InvalidParams(detail),
            Refusal::HeaderMismatch(detail) => Self::HeaderMismatch(detail),
        }
    }
}

/// What a client is told when its session token does not open, whatever the reason (malformed, another
/// deployment's key, forged, expired, another principal's): the same words, so a token reveals nothing.
pub const UNKNOWN_SESSION: &str = "unknown or expired session";

impl ProxyError {
    /// The `WWW-Authenticate` challenge of the answer, when there is one.
    pub fn challenge(&self) -> Option<&str> {
        match self {
            Self::Unauthenticated { challenge, .. } => Some(challenge),
            _ => None,
        }
    }

    /// HTTP status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            Self::RouteNotFound { .. } | Self::UnknownServer { .. } => 404,
            // A JSON-RPC error in a 200 answer, as servers report unknown tools.
            Self::UnknownItem { .. } | Self::MethodNotFound { modern: false, .. } | Self::InvalidCursor => {
                200
            }
            Self::MethodNotFound { modern: true, .. } => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::NotReady | Self::NoInstance { .. } | Self::StdioNotAllowed { .. } => 503,
            Self::BodyTooLarge { .. } => 413,
            Self::RequestTimeout { .. } => 408,
            Self::RateLimited { .. }
            | Self::TooManyStreams { per_principal: true, .. }
            | Self::TooManyConnections { per_client: true, .. } => 429,
            Self::TooManyStreams { per_principal: false, .. }
            | Self::TooManyConnections { per_client: false, .. }
            | Self::RateLimitUnavailable { .. }
            | Self::AuditUnavailable => 503,
            Self::BadRequestBody(_)
            | Self::HeaderMismatch(_)
            | Self::UnsupportedVersion { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidParams(_)
            | Self::BadRequest(_)
            | Self::LegacyOnly { .. } => 400,
            Self::Conflict(_) => 409,
            Self::SessionNotFound(_) | Self::NotSse { .. } => 404,
            Self::Unauthenticated { .. } => 401,
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamFailed { .. }
            | Self::UpstreamAuthRefused { .. }
            | Self::UpstreamCredentialUnavailable { .. } => 502,
            Self::MisdirectedHost { .. } => 421,
            Self::ForbiddenOrigin { .. } => 403,
            Self::UpstreamTimeout { .. } => 504,
        }
    }

    /// Stable machine reason: the `data.reason` of the JSON-RPC error and a metrics label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::RouteNotFound { .. } => "route_not_found",
            Self::UnknownServer { .. } => "unknown_server",
            Self::UnknownItem { .. } => "unknown_item",
            Self::NotReady => "not_ready",
            Self::NoInstance { .. } => "no_instance",
            Self::StdioNotAllowed { .. } => "stdio_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::RateLimitUnavailable { .. } => "rate_limit_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::TooManyStreams { .. } => "too_many_streams",
            Self::TooManyConnections { .. } => "too_many_connections",
            Self::BadRequestBody(_) => "bad_request_body",
            Self::SessionNotFound(_) => "session_not_found",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::HeaderMismatch(_) => "header_mismatch",
            Self::UnsupportedVersion { .. } => "unsupported_protocol_version",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidParams(_) => "invalid_params",
            Self::MethodNotFound { .. } => "method_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::InvalidCursor => "invalid_cursor",
            Self::NotSse { .. } => "not_sse",
            Self::BadRequest(_) => "bad_request",
            Self::Conflict(_) => "conflict",
            Self::LegacyOnly { .. } => "legacy_only",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::UpstreamAuthRefused { .. } => "upstream_auth_refused",
            Self::UpstreamCredentialUnavailable { .. } => "upstream_credential_unavailable",
            Self::MisdirectedHost { .. } => "misdirected_host",
            Self::ForbiddenOrigin { .. } => "forbidden_origin",
        }
    }

    /// JSON-RPC error code of the answer.
    pub fn code(&self) -> i64 {
        match self {
            Self::SessionNotFound(_) => SESSION_NOT_FOUND_CODE,
            Self::HeaderMismatch(_) => HEADER_MISMATCH_CODE,
            Self::UnsupportedVersion { .. } => UNSUPPORTED_VERSION_CODE,
            Self::InvalidRequest(_) => INVALID_REQUEST_CODE,
            Self::InvalidParams(_) | Self::InvalidCursor => INVALID_PARAMS_CODE,
            Self::MethodNotFound { .. } => METHOD_NOT_FOUND_CODE,
            Self::UnknownItem { kind: crate::policy::ItemKind::Resource, .. } => RESOURCE_NOT_FOUND_CODE,
            Self::UnknownItem { .. } => INVALID_PARAMS_CODE,
            _ => GATEWAY_ERROR_CODE,
        }
    }

    /// Response body: a JSON-RPC error carrying the request's id when the request was JSON-RPC, else a plain
    /// JSON error object with the same reason and message.
    /// What the client is told: the error's text without what only an operator should see — upstream
    /// addresses and OS error texts stay in the log line of the failure.
    pub fn client_message(&self) -> String {
        match self {
            Self::UpstreamUnreachable { server, .. } => {
                format!("upstream of server {server:?} is unreachable")
            }
            Self::UpstreamTimeout { server, .. } => {
                format!("upstream of server {server:?} did not answer in time")
            }
            Self::UpstreamFailed { server, .. } => format!("upstream of server {server:?} failed"),
            other => other.to_string(),
        }
    }

    pub fn body(&self, jsonrpc_id: Option<&Value>) -> Bytes {
        let message = self.client_message();
        let value = match jsonrpc_id {
            // Nothing says the gateway answered: it looks like the upstream's own "not found".
            Some(id) if matches!(self, Self::UnknownItem { .. } | Self::MethodNotFound { .. }) => json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": self.code(), "message": message},
            }),
            Some(id) => {
                let mut data = json!({"reason": self.reason()});
                if let Self::UnsupportedVersion { requested, supported } = self {
                    data["supported"] = json!(supported);
                    data["requested"] = json!(requested);
                }
                json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": self.code(), "message": message, "data": data},
                })
            }
            None => json!({"error": {"reason": self.reason(), "message": message}}),
        };
        Bytes::from(value.to_string())
    }
}

#[cfg(test)]
mod client_message_tests {
    use super::ProxyError;

    #[test]
    fn upstream_failures_do_not_show_the_upstream_to_the_client() {
        let detail = "connecting to 10.1.2.3:8443: Connection refused (os error 111)".to_owned();
        for error in [
            ProxyError::UpstreamUnreachable { server: "docs".into(), detail: detail.clone() },
            ProxyError::UpstreamTimeout { server: "docs".into(), detail: detail.clone() },
            ProxyError::UpstreamFailed { server: "docs".into(), detail: detail.clone() },
        ] {
            let body = String::from_utf8(error.body(Some(&serde_json::json!(1))).to_vec()).unwrap();
            assert!(!body.contains("10.1.2.3") && !body.contains("os error"), "{body}");
            assert!(body.contains("docs"), "{body}");
            assert!(error.to_string().contains("10.1.2.3"), "the log line keeps the detail");
        }
    }
}

fn unknown_item(kind: crate::policy::ItemKind, name: &str) -> String {
    match kind {
        crate::policy::ItemKind::Tool => format!("Unknown tool: {name}"),
        crate::policy::ItemKind::Prompt => format!("Unknown prompt: {name}"),
        crate::policy::ItemKind::Resource => format!("Resource not found: {name}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons() {
        let server = || "s".to_owned();
        let detail = || "d".to_owned();
        let cases = [
            (ProxyError::RouteNotFound { path: "/x".into() }, 404, "route_not_found"),
            (ProxyError::UnknownServer { name: "x".into() }, 404, "unknown_server"),
            (ProxyError::NotReady, 503, "not_ready"),
            (ProxyError::NoInstance { server: server(), detail: detail() }, 503, "no_instance"),
            (ProxyError::StdioNotAllowed { server: server(), program: detail() }, 503, "stdio_not_allowed"),
            (ProxyError::SessionNotFound(detail()), 404, "session_not_found"),
            (ProxyError::Unauthenticated { challenge: detail(), detail: "d" }, 401, "unauthenticated"),
            (ProxyError::HeaderMismatch(detail()), 400, "header_mismatch"),
            (
                ProxyError::UnsupportedVersion { requested: detail(), supported: &["2026-07-28"] },
                400,
                "unsupported_protocol_version",
            ),
            (ProxyError::InvalidRequest(detail()), 400, "invalid_request"),
            (ProxyError::InvalidParams(detail()), 400, "invalid_params"),
            (ProxyError::MethodNotFound { method: detail(), modern: false }, 200, "method_not_found"),
            (ProxyError::MethodNotFound { method: detail(), modern: true }, 404, "method_not_found"),
            (ProxyError::MethodNotAllowed { allowed: "POST" }, 405, "method_not_allowed"),
            (ProxyError::InvalidCursor, 200, "invalid_cursor"),
            (ProxyError::NotSse { server: server() }, 404, "not_sse"),
            (ProxyError::BadRequest(detail()), 400, "bad_request"),
            (ProxyError::Conflict(detail()), 409, "conflict"),
            (ProxyError::LegacyOnly { server: server() }, 400, "legacy_only"),
            (ProxyError::BodyTooLarge { limit: 10 }, 413, "body_too_large"),
            (ProxyError::RequestTimeout { limit: std::time::Duration::from_secs(1) }, 408, "request_timeout"),
            (ProxyError::RateLimited { limit: detail(), retry_after_secs: 1 }, 429, "rate_limited"),
            (ProxyError::RateLimitUnavailable { limit: detail() }, 503, "rate_limit_unavailable"),
            (ProxyError::AuditUnavailable, 503, "audit_unavailable"),
            (ProxyError::TooManyStreams { per_principal: true, limit: 1 }, 429, "too_many_streams"),
            (ProxyError::TooManyStreams { per_principal: false, limit: 1 }, 503, "too_many_streams"),
            (ProxyError::TooManyConnections { per_client: true, limit: 1 }, 429, "too_many_connections"),
            (ProxyError::TooManyConnections { per_client: false, limit: 1 }, 503, "too_many_connections"),
            (ProxyError::BadRequestBody(detail()), 400, "bad_request_body"),
            (
                ProxyError::UpstreamUnreachable { server: server(), detail: detail() },
                502,
                "upstream_unreachable",
            ),
            (ProxyError::UpstreamTimeout { server: server(), detail: detail() }, 504, "upstream_timeout"),
            (ProxyError::UpstreamFailed { server: server(), detail: detail() }, 502, "upstream_failed"),
            (ProxyError::UpstreamAuthRefused { server: server() }, 502, "upstream_auth_refused"),
            (
                ProxyError::UpstreamCredentialUnavailable { server: server(), detail: detail() },
                502,
                "upstream_credential_unavailable",
            ),
            (ProxyError::MisdirectedHost { host: detail() }, 421, "misdirected_host"),
            (ProxyError::ForbiddenOrigin { origin: detail() }, 403, "forbidden_origin"),
        ];
        for (e, status, reason) in cases {
            assert_eq!((e.status(), e.reason()), (status, reason), "{e}");
        }
        let unsupported =
            ProxyError::UnsupportedVersion { requested: "v9".into(), supported: &["2026-07-28"] };
        let body: serde_json::Value = serde_json::from_slice(&unsupported.body(Some(&json!(7)))).unwrap();
        assert_eq!(body["error"]["code"], -32022);
        assert_eq!(body["error"]["data"]["supported"], json!(["2026-07-28"]));
        assert_eq!(body["error"]["data"]["requested"], "v9");
    }

    #[test]
    fn jsonrpc_envelope_keeps_the_id() {
        let e = ProxyError::UnknownServer { name: "nope".into() };
        let body: Value = serde_json::from_slice(&e.body(Some(&json!(7)))).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 7, "error": {
                "code": -32000,
                "message": "no MCP server named \"nope\" is registered",
                "data": {"reason": "unknown_server"}}})
        );
        let body: Value = serde_json::from_slice(&e.body(Some(&Value::Null))).unwrap();
        assert_eq!(body["id"], Value::Null);
        let plain: Value = serde_json::from_slice(&e.body(None)).unwrap();
        assert_eq!(plain["error"]["reason"], "unknown_server");
        assert!(plain.get("jsonrpc").is_none());
    }
}
