//! WebSocket servers as a bridge link: one connection per bridged session, subprotocol `mcp`, one
//! JSON-RPC message per text frame (the Python SDK's WebSocket transport). `wss://` is TLS with the
//! system's web PKI roots.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use pingora::http::RequestHeader;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

use super::bridge::{Inbound, Link, Opened};
use super::{Attempt, credential};
use crate::error::ProxyError;
use crate::routing::{Instance, Server};
use crate::shared::Shared;

/// Largest message either way (as the gateway's other bounded reads of one message).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The subprotocol MCP over WebSocket is spoken in.
const SUBPROTOCOL: &str = "mcp";

/// A byte stream to the upstream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// Connects and completes the WebSocket handshake. Not reaching the instance (or timing out doing so) is
/// `NotSent`; a handshake the server refuses is a failure of the instance.
pub(crate) async fn open(
    gw: &Shared,
    server: &Server,
    instance: &Arc<Instance>,
    down: &RequestHeader,
) -> Result<Opened, Attempt> {
    let name = || server.name.to_string();
    let not_sent =
        |detail: String| Attempt::NotSent(ProxyError::UpstreamUnreachable { server: name(), detail });
    let peer = instance
        .peer
        .as_ref()
        .map_err(|e| not_sent(format!("cannot resolve {}: {e}", instance.authority)))?;
    let addr = *peer._address.as_inet().ok_or_else(|| not_sent("not an IP address".into()))?;
    let credential =
        credential(gw, down, server, instance).await.map_err(|e| Attempt::Failed(e.into(), None))?;
    let connect_timeout = gw.limits.connect_timeout;
    let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(not_sent(format!("connecting to {addr}: {e}"))),
        Err(_) => {
            return Err(Attempt::NotSent(ProxyError::UpstreamTimeout {
                server: name(),
                detail: format!("connecting to {addr} took over {connect_timeout:?}"),
            }));
        }
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if instance.endpoint.scheme() == "wss" {
        let host = rustls_pki_types::ServerName::try_from(peer.sni.clone())
            .map_err(|e| not_sent(format!("bad TLS name {:?}: {e}", peer.sni)))?;
        let tls = gw.pool.websocket_tls().connect(host, tcp);
        match tokio::time::timeout(connect_timeout, tls).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => return Err(not_sent(format!("TLS with {addr}: {e}"))),
            Err(_) => {
                return Err(Attempt::NotSent(ProxyError::UpstreamTimeout {
                    server: name(),
                    detail: "the TLS handshake timed out".into(),
                }));
            }
        }
    } else {
        Box::new(tcp)
    };
    let failed = |detail: String| {
        Attempt::Failed(ProxyError::UpstreamFailed { server: name(), detail }.into(), Some(false))
    };
    let mut request = instance.endpoint.as_str().into_client_request().map_err(|e| failed(e.to_string()))?;
    let headers = request.headers_mut();
    headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, http::HeaderValue::from_static(SUBPROTOCOL));
    if let Some(c) = &credential {
        headers.insert(c.name.clone(), c.value.clone());
    }
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let handshake = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    let (ws, response) = match tokio::time::timeout(gw.limits.upstream_timeout, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) if response.status() == 401 => {
            return Err(Attempt::Failed(
                ProxyError::UpstreamAuthRefused { server: name() }.into(),
                Some(true),
            ));
        }
        Ok(Err(e)) => return Err(failed(format!("WebSocket handshake: {e}"))),
        Err(_) => {
            return Err(Attempt::Failed(
                ProxyError::UpstreamTimeout { server: name(), detail: "no WebSocket handshake".into() }
                    .into(),
                Some(false),
            ));
        }
    };
    let protocol = response.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL);
    if protocol.is_some_and(|p| p.as_bytes() != SUBPROTOCOL.as_bytes()) {
        return Err(failed(format!("the server chose subprotocol {protocol:?}, not {SUBPROTOCOL}")));
    }
    let (sink, stream) = ws.split();
    Ok(Opened {
        link: Box::new(WsLink(tokio::sync::Mutex::new(sink))),
        inbound: Box::new(Frames(stream)),
        early: Vec::new(),
    })
}

/// Client messages as text frames.
struct WsLink(tokio::sync::Mutex<SplitSink<Ws, Message>>);

#[async_trait]
impl Link for WsLink {
    async fn send(
        &self,
        _: &Shared,
        server: &Server,
        _: &RequestHeader,
        message: Bytes,
    ) -> Result<(), ProxyError> {
        let text = String::from_utf8(message.to_vec()).map_err(|_| {
            ProxyError::BadRequest("a message sent to a WebSocket server must be UTF-8 JSON".into())
        })?;
        self.0.lock().await.send(Message::text(text)).await.map_err(|e| ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: format!("WebSocket send: {e}"),
        })
    }
}

/// Text (or binary) frames from the server; pings are answered by the library.
struct Frames(SplitStream<Ws>);

#[async_trait]
impl Inbound for Frames {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.0.next().await? {
                Ok(Message::Text(text)) => return Some(Bytes::from(text.as_bytes().to_vec())),
                Ok(Message::Binary(data)) => return Some(data),
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket link ended.");
                    return None;
                }
            }
        }
    }
}
