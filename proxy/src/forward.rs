//! One upstream exchange: send the request to the chosen instance through the pooled connector, stream the
//! response back chunk by chunk (SSE events are never buffered), and apply the era's cancellation rule when
//! the client goes away: a 2026-07-28 client closing its stream cancels the upstream request; a legacy
//! client's disconnect does not (it cancels with `notifications/cancelled`), so the upstream response is
//! drained in the background instead.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession as UpstreamSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use crate::error::ProxyError;
use crate::gateway::{Gateway, RequestCtx};
use crate::metrics::METRICS;
use crate::routing::{Instance, Server};

/// Longest time a legacy response is drained after its client left.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// First revision whose clients cancel by closing the stream.
const STATELESS_REVISION: &str = "2026-07-28";

/// How a request ends early.
pub enum Failure {
    /// Answer the client with this error (if no response has started yet).
    Reply(ProxyError),
    /// Drop the client connection.
    Abort(Box<pingora::Error>),
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Self::Reply(e)
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

fn skip_request_header(name: &HeaderName) -> bool {
    is_hop_header(name)
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
    let modern = req
        .headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() >= STATELESS_REVISION);
    // A legacy GET stream carries no request to finish; only legacy POSTs are drained.
    if !modern && req.method == http::Method::POST { OnClientGone::Drain } else { OnClientGone::Cancel }
}

/// The request as the upstream must see it: its endpoint path, its own authority as `Host`, no `Origin`
/// (SDK servers reject foreign ones) and no hop-by-hop headers; every MCP header passes unchanged.
pub(crate) fn upstream_request(
    down: &RequestHeader,
    instance: &Instance,
    body_len: usize,
) -> pingora::Result<RequestHeader> {
    let mut path = instance.path_and_query.clone();
    if let Some(query) = down.uri.query() {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(query);
    }
    let mut req = RequestHeader::build(down.method.clone(), path.as_bytes(), Some(down.headers.len() + 1))?;
    for (name, value) in &down.headers {
        if !skip_request_header(name) {
            req.append_header(name.clone(), value.clone())?;
        }
    }
    req.insert_header(header::HOST, &instance.authority)?;
    if body_len > 0 || down.method == http::Method::POST {
        req.insert_header(header::CONTENT_LENGTH, body_len.to_string())?;
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
    let server = server.name.clone();
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

/// Opens (or reuses) a connection and sends the request. A reused pooled connection that fails while the
/// request is being written is retried once on a fresh one: the upstream cannot have acted on a request it
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

pub async fn exchange(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    server: &Server,
    instance: &Instance,
    body: Bytes,
) -> Result<(), Failure> {
    let peer = instance.peer.as_ref().map_err(|detail| ProxyError::UpstreamUnreachable {
        server: server.name.clone(),
        detail: format!("cannot resolve {}: {detail}", instance.authority),
    })?;
    let req = upstream_request(session.req_header(), instance, body.len()).map_err(Failure::Abort)?;
    let gone = on_client_gone(&req);
    let mut up = connect_and_send(gw, server, peer, &req, &body).await?;

    // Wait for the response header, watching for the client leaving meanwhile.
    let header = tokio::select! {
        r = tokio::time::timeout(gw.limits.upstream_timeout, up.read_response_header()) => r,
        _ = session.read_body_or_idle(true) => {
            abandon(gw, up, peer, gone);
            return Ok(());
        }
    };
    match header {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(upstream_error(server, &e).into()),
        Err(_) => {
            return Err(ProxyError::UpstreamTimeout {
                server: server.name.clone(),
                detail: format!("no response within {:?}", gw.limits.upstream_timeout),
            }
            .into());
        }
    }
    let Some(up_resp) = up.response_header() else {
        return Err(ProxyError::UpstreamFailed {
            server: server.name.clone(),
            detail: "no response header".into(),
        }
        .into());
    };
    let sse = is_event_stream(up_resp);
    let resp = downstream_response(up_resp).map_err(Failure::Abort)?;
    up.set_read_timeout(if sse { None } else { Some(gw.limits.idle_timeout) });

    if session.write_response_header(Box::new(resp), false).await.is_err() {
        abandon(gw, up, peer, gone);
        return Ok(());
    }
    ctx.response_started = Some(Instant::now());
    let _stream_guard = sse.then(StreamGauge::open);
    loop {
        tokio::select! {
            chunk = up.read_response_body() => match chunk {
                Ok(Some(data)) => {
                    if session.write_response_body(Some(data), false).await.is_err() {
                        abandon(gw, up, peer, gone);
                        return Ok(());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(server = %server.name, error = %e, "Upstream failed mid-response; closing the client connection.");
                    return Err(Failure::Abort(e));
                }
            },
            _ = session.read_body_or_idle(true) => {
                abandon(gw, up, peer, gone);
                return Ok(());
            }
        }
    }
    session.write_response_body(None, true).await.map_err(Failure::Abort)?;
    gw.connector.release_http_session(up, peer, Some(gw.limits.pool_idle_timeout)).await;
    Ok(())
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

    use crate::routing::table::{PeerSettings, RoutingTable};
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
        let table = RoutingTable::build(&set, &RoutingTable::default(), settings).await.unwrap();
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
        ] {
            down.append_header(k, v).unwrap();
        }
        let up = upstream_request(&down, &inst, 12).unwrap();
        assert_eq!(up.uri.to_string(), "/v1/mcp?sessionId=1");
        let get = |n: &str| up.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("host").as_deref(), Some("127.0.0.1:3001"));
        assert_eq!(get("content-length").as_deref(), Some("12"));
        for gone in ["origin", "connection", "transfer-encoding", "expect"] {
            assert_eq!(get(gone), None, "{gone} must not be forwarded");
        }
        for kept in [
            "accept",
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "mcp-param-region",
            "last-event-id",
            "authorization",
        ] {
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
