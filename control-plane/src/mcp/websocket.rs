//! MCP over WebSocket: subprotocol `mcp`, one JSON-RPC message per text frame. The TCP connection is made
//! here, to the addresses the SSRF policy allows (the host name resolved and filtered as the HTTP client's
//! resolver does); `wss://` is TLS (rustls on ring, web PKI roots). The upstream credential goes on the
//! handshake request. Frames and messages are bounded to `MAX_BODY`; pings are answered by tungstenite
//! while frames are read.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use url::Url;

use super::{MAX_BODY, McpClient, McpError};
use crate::ssrf::{RESOLVE_TIMEOUT, ResolveError};

/// The subprotocol MCP over WebSocket is spoken in.
const SUBPROTOCOL: &str = "mcp";
/// How long the TCP connect, the TLS handshake and the WebSocket handshake may each take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a close handshake may take before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A byte stream to the server, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket to an MCP server.
pub(crate) struct WsWire(WebSocketStream<Box<dyn Io>>);

impl WsWire {
    /// Connects to `url` (ws:// or wss://) and completes the WebSocket handshake.
    pub(crate) async fn connect(client: &McpClient, url: &Url) -> Result<Self, McpError> {
        let host = url.host().ok_or_else(|| McpError::protocol("the URL has no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| McpError::protocol("the URL has no port"))?;
        let addrs = resolve(client, &host, port).await?;
        let tcp = connect_any(&addrs).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match url.scheme() {
            "wss" => {
                let name = match &host {
                    url::Host::Domain(name) => rustls::pki_types::ServerName::try_from(name.to_string()),
                    url::Host::Ipv4(ip) => Ok(rustls::pki_types::ServerName::from(IpAddr::V4(*ip))),
                    url::Host::Ipv6(ip) => Ok(rustls::pki_types::ServerName::from(IpAddr::V6(*ip))),
                }
                .map_err(|e| McpError::Transport(format!("bad TLS server name {host}: {e}")))?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, client.ws_tls().connect(name, tcp))
                    .await
                    .map_err(|_| McpError::Timeout(CONNECT_TIMEOUT))?
                    .map_err(|e| McpError::Transport(format!("TLS with {host}: {e}")))?;
                Box::new(tls)
            }
            "ws" => Box::new(tcp),
            other => return Err(McpError::protocol(format!("{other}:// is not a WebSocket URL"))),
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| McpError::protocol(format!("bad WebSocket URL: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("mcpgw-control-plane/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(credential) = client.credential() {
            headers.insert(credential.name.clone(), credential.value.clone());
        }
        let config =
            WebSocketConfig::default().max_message_size(Some(MAX_BODY)).max_frame_size(Some(MAX_BODY));
        let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
            .await
            .map_err(|_| McpError::Timeout(CONNECT_TIMEOUT))?
            .map_err(handshake_error)?;
        Ok(Self(ws))
    }

    /// Sends one message as a text frame.
    pub(crate) async fn send(&mut self, text: String) -> Result<(), McpError> {
        self.0
            .send(Message::text(text))
            .await
            .map_err(|e| McpError::Transport(format!("WebSocket send: {e}")))
    }

    /// The next JSON message (text frames, or binary frames holding UTF-8 JSON); `None` when the server
    /// closed.
    pub(crate) async fn recv(&mut self) -> Result<Option<Value>, McpError> {
        loop {
            let data = match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                Some(Ok(Message::Binary(data))) => data.to_vec(),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(McpError::Transport(format!("WebSocket: {e}"))),
            };
            return serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| McpError::protocol(format!("a WebSocket message is not JSON: {e}")));
        }
    }

    /// Closes with a close handshake (bounded).
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_WAIT, self.0.close(None)).await;
    }
}

/// The addresses of `host` the SSRF policy allows (a name resolving only to refused ones is refused).
async fn resolve(client: &McpClient, host: &url::Host<&str>, port: u16) -> Result<Vec<SocketAddr>, McpError> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, client.ssrf().resolve(host, port)).await {
        Err(_) => Err(McpError::Transport(format!("resolving {host} took over {RESOLVE_TIMEOUT:?}"))),
        Ok(Err(ResolveError::Refused(refusal))) => Err(McpError::Refused(refusal)),
        Ok(Err(ResolveError::Lookup(detail))) => Err(McpError::Transport(detail)),
        Ok(Ok(allowed)) => Ok(allowed),
    }
}

/// Connects to the first address that answers.
async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, McpError> {
    let mut last = McpError::Transport("no address to connect to".into());
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = McpError::Transport(format!("connecting to {addr}: {e}")),
            Err(_) => last = McpError::Timeout(CONNECT_TIMEOUT),
        }
    }
    Err(last)
}

/// A refused handshake: an HTTP answer keeps its status (401: the credential was refused).
fn handshake_error(error: tokio_tungstenite::tungstenite::Error) -> McpError {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => {
            let message = response
                .body()
                .as_ref()
                .map(|body| String::from_utf8_lossy(body).trim().chars().take(300).collect())
                .unwrap_or_default();
            McpError::Status { status: response.status().as_u16(), code: None, message }
        }
        other => McpError::Transport(format!("WebSocket handshake: {other}")),
    }
}
