//! The control plane's MCP client, used by discovery and the active health checks. It speaks every era a
//! registered server may: 2026-07-28 stateless requests (`server/discover` first), the legacy
//! `initialize` handshake with a session, and the deprecated HTTP+SSE transport. Era detection follows
//! PROTOCOL.md §3.5: a non-modern 4xx to `server/discover` means a legacy server; a 400/404/405 to
//! `initialize` means an HTTP+SSE server. WebSocket and stdio servers are message transports
//! (`messages`): the `initialize` handshake, then requests, one JSON-RPC message per frame or line.

use std::sync::Arc;
use std::time::Duration;

use mcpgw_proto::v1;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::model::TransportType;
use crate::ssrf::{Refusal, SsrfPolicy};

mod http;
mod legacy_sse;
pub mod lists;
mod messages;
pub mod sse;
mod stdio;
mod websocket;

pub use http::Streamable;
pub use legacy_sse::SseSession;
pub use messages::MessageSession;
pub use stdio::{StdioCommand, StdioPrograms};

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The last handshake revision, offered in `initialize`.
pub const LEGACY_VERSION: &str = "2025-11-25";
/// Largest response body the client reads.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Why talking to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP {status}{}: {message}", code.map(|c| format!(" (JSON-RPC {c})")).unwrap_or_default())]
    Status { status: u16, code: Option<i64>, message: String },
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc { code: i64, message: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("refused by the SSRF guard: {0}")]
    Refused(#[from] Refusal),
    /// A WebSocket or a stdio process could not be reached, or failed.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("the program {0:?} is not in this control plane's --stdio-programs")]
    NotAllowed(String),
}

impl McpError {
    fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(message.into())
    }
}

/// A header the client authenticates to an upstream with: the upstream credential registered for the
/// server or instance, as the proxies send it. `Debug` never shows the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    name: HeaderName,
    value: HeaderValue,
}

impl Credential {
    /// The header of a credential from the routing table; `None` for a kind this client cannot present
    /// or a header the HTTP stack refuses (registration validates both, so neither happens).
    pub fn from_proto(credential: &v1::UpstreamCredential) -> Option<Self> {
        let v1::upstream_credential::Kind::StaticHeader(h) = credential.kind.as_ref()? else { return None };
        let name = HeaderName::from_bytes(h.name.trim().as_bytes()).ok()?;
        let mut value = HeaderValue::from_str(&h.value).ok()?;
        value.set_sensitive(true);
        Some(Self { name, value })
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(token: &str) -> Option<Self> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self { name: reqwest::header::AUTHORIZATION, value })
    }
}

/// The shared HTTP client: no redirects (a redirect could lead anywhere), DNS answers filtered by the SSRF
/// policy, bounded connect time. A copy made by `authenticated` also sends an upstream credential.
#[derive(Clone)]
pub struct McpClient {
    http: reqwest::Client,
    ssrf: Arc<SsrfPolicy>,
    credential: Option<Credential>,
    /// The programs stdio servers may run here (`--stdio-programs`).
    stdio_programs: StdioPrograms,
    /// The command of the stdio instance this copy talks to (`for_instance`).
    command: Option<Arc<StdioCommand>>,
    /// TLS of `wss://` upstreams: the web PKI roots and `--upstream-ca`, as the HTTP client's.
    ws_tls: tokio_rustls::TlsConnector,
}

impl McpClient {
    pub fn new(ssrf: Arc<SsrfPolicy>) -> Result<Self, reqwest::Error> {
        Self::with_extra_roots(ssrf, None)
    }

    /// [`McpClient::new`] also trusting the certificate authorities of `ca_pem` (a PEM bundle).
    pub fn with_extra_roots(ssrf: Arc<SsrfPolicy>, ca_pem: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder();
        let mut roots = mcpgw_proto::tls::web_roots();
        if let Some(pem) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
            // Checked with the flags (`--upstream-ca` parses as PEM certificates).
            if let Err(error) = mcpgw_proto::tls::add_pem(&mut roots, pem) {
                tracing::error!(%error, "--upstream-ca is not trusted for wss:// upstreams.");
            }
        }
        // No proxy from HTTP(S)_PROXY: a proxy would resolve the endpoint's name itself, out of the SSRF
        // guard's reach (`dns_resolver` below).
        let http = builder
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(crate::ssrf::resolver(&ssrf))
            .user_agent(concat!("mcpgw-control-plane/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            ssrf,
            credential: None,
            stdio_programs: StdioPrograms::default(),
            command: None,
            ws_tls: mcpgw_proto::tls::client_connector(roots),
        })
    }

    /// This client allowed to start the stdio servers of `programs` (none by default).
    pub fn with_stdio_programs(self, programs: StdioPrograms) -> Self {
        Self { stdio_programs: programs, ..self }
    }

    /// TLS client settings of `wss://` upstreams.
    pub(crate) fn ws_tls(&self) -> &tokio_rustls::TlsConnector {
        &self.ws_tls
    }

    /// The programs stdio servers may run here.
    pub fn stdio_programs(&self) -> &StdioPrograms {
        &self.stdio_programs
    }

    /// This client presenting `credential` on every request (discovery and health checks authenticate
    /// to an upstream the way the proxies do); `None`: no credential.
    pub fn authenticated(&self, credential: Option<Credential>) -> Self {
        Self { credential, ..self.clone() }
    }

    /// This client as it talks to one instance: with its upstream credential, and for a stdio instance
    /// the command the proxies start (both from the published routing table).
    pub fn for_instance(&self, credential: Option<Credential>, command: Option<StdioCommand>) -> Self {
        Self { credential, command: command.map(Arc::new), ..self.clone() }
    }

    /// The upstream credential this copy presents.
    pub(crate) fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// The plain HTTP client (no upstream credential), for fetches that are not MCP conversations.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to an upstream, carrying the credential when there is one.
    pub(crate) fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.credential {
            Some(c) => request.header(c.name.clone(), c.value.clone()),
            None => request,
        }
    }

    /// The policy connections are checked against.
    pub fn ssrf(&self) -> &SsrfPolicy {
        &self.ssrf
    }

    /// Opens a conversation with the server at `url`, choosing the era it speaks.
    pub async fn connect(&self, url: &str, transport: TransportType) -> Result<Connection, McpError> {
        self.connect_hinted(url, transport, None).await
    }

    /// `connect`, going straight to the era that worked last time when `hint` says so. A stdio server is
    /// started from this copy's command (`for_instance`; `url` is only its display form).
    pub async fn connect_hinted(
        &self,
        url: &str,
        transport: TransportType,
        hint: Option<Era>,
    ) -> Result<Connection, McpError> {
        if transport == TransportType::Stdio {
            let command = self.command.as_deref().ok_or_else(|| {
                McpError::protocol(format!("{url}: the instance's command is not in the routing table yet"))
            })?;
            let wire = stdio::StdioWire::spawn(command, &self.stdio_programs)?;
            return MessageSession::initialize(messages::Wire::Stdio(wire)).await.map(Connection::Stdio);
        }
        let parsed = url::Url::parse(url).map_err(|e| McpError::protocol(format!("bad URL: {e}")))?;
        if let Some(host) = parsed.host() {
            self.ssrf.check_host(&host)?;
        }
        if transport == TransportType::WebSocket {
            let wire = websocket::WsWire::connect(self, &parsed).await?;
            return MessageSession::initialize(messages::Wire::WebSocket(wire))
                .await
                .map(Connection::WebSocket);
        }
        match (transport, hint) {
            (TransportType::Sse, _) | (_, Some(Era::Sse)) => {
                return SseSession::open(self, parsed).await.map(Connection::Sse);
            }
            (_, Some(Era::Legacy)) => {
                return Streamable::initialize(self, parsed).await.map(Connection::Http);
            }
            (_, Some(Era::Modern)) => return Streamable::discover(self, parsed).await.map(Connection::Http),
            (_, None) => {}
        }
        match Streamable::discover(self, parsed.clone()).await {
            Ok(session) => return Ok(Connection::Http(session)),
            // Transport failures are final; any HTTP or JSON-RPC refusal means "not a modern server".
            Err(
                e
                @ (McpError::Http(_) | McpError::Timeout(_) | McpError::Refused(_) | McpError::Transport(_)),
            ) => {
                return Err(e);
            }
            Err(_) => {}
        }
        match Streamable::initialize(self, parsed.clone()).await {
            Ok(session) => Ok(Connection::Http(session)),
            Err(McpError::Status { status: status @ (400 | 404 | 405), code, message }) => {
                // The deprecated transport's GET /sse is the last resort; report the handshake's error if
                // that fails too.
                match SseSession::open(self, parsed).await {
                    Ok(session) => Ok(Connection::Sse(session)),
                    Err(_) => Err(McpError::Status { status, code, message }),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// What the server said about itself when the conversation opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHello {
    pub protocol_version: String,
    pub server_info: Option<Value>,
    /// `None` when the server did not say (a modern server without `server/discover`).
    pub capabilities: Option<Value>,
    pub instructions: Option<String>,
}

/// Which way a server was spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2026-07-28 stateless requests.
    Modern,
    /// The `initialize` handshake: Streamable HTTP with a session, or a WebSocket or stdio server.
    Legacy,
    /// The deprecated HTTP+SSE transport.
    Sse,
}

/// An open conversation in one era.
pub enum Connection {
    Http(Streamable),
    Sse(SseSession),
    /// A WebSocket server.
    WebSocket(MessageSession),
    /// A stdio server's process, killed when the conversation closes (or is dropped).
    Stdio(MessageSession),
}

impl Connection {
    pub fn hello(&self) -> &ServerHello {
        match self {
            Self::Http(s) => s.hello(),
            Self::Sse(s) => s.hello(),
            Self::WebSocket(s) | Self::Stdio(s) => s.hello(),
        }
    }

    pub fn era(&self) -> Era {
        match self {
            Self::Http(s) if s.is_modern() => Era::Modern,
            Self::Http(_) | Self::WebSocket(_) | Self::Stdio(_) => Era::Legacy,
            Self::Sse(_) => Era::Sse,
        }
    }

    /// Sends a request and returns its `result`.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        match self {
            Self::Http(s) => s.request(method, params).await,
            Self::Sse(s) => s.request(method, params).await,
            Self::WebSocket(s) | Self::Stdio(s) => s.request(method, params).await,
        }
    }

    /// Ends the conversation (DELETE of a legacy session; the SSE stream is dropped; a WebSocket is
    /// closed; a stdio process is killed).
    pub async fn close(self) {
        match self {
            Self::Http(s) => s.close().await,
            Self::Sse(s) => s.close(),
            Self::WebSocket(s) | Self::Stdio(s) => s.close().await,
        }
    }
}

/// The `initialize` params the client sends.
pub(crate) fn initialize_params() -> Value {
    json!({
        "protocolVersion": LEGACY_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcpgw-control-plane", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// Reads `hello` fields from an `initialize` or `server/discover` result.
pub(crate) fn hello_from(result: &Value, version: &str) -> ServerHello {
    ServerHello {
        protocol_version: result.get("protocolVersion").and_then(Value::as_str).unwrap_or(version).to_owned(),
        server_info: result.get("serverInfo").cloned(),
        capabilities: result.get("capabilities").cloned(),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
    }
}

/// The JSON-RPC response with `id` in `message`, as a result or an error; `None` if it is something else.
pub(crate) fn response_for(message: &Value, id: u64) -> Option<Result<Value, McpError>> {
    if message.get("id").and_then(Value::as_u64) != Some(id) {
        return None;
    }
    if let Some(result) = message.get("result") {
        return Some(Ok(result.clone()));
    }
    let error = message.get("error")?;
    Some(Err(McpError::JsonRpc {
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: error.get("message").and_then(Value::as_str).unwrap_or("").chars().take(500).collect(),
    }))
}
