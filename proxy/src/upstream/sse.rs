//! Legacy HTTP+SSE (2024-11-05) servers as a bridge link: a GET opens the upstream's event stream, whose
//! first `endpoint` event names where messages go; each client message is one POST there, and what the
//! server sends arrives as `message` events on the stream.

use std::collections::VecDeque;
use std::sync::Arc;

use super::response::Response;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::RequestHeader;

use super::bridge::{Inbound, Link, Opened};
use super::pool::Head;
use super::{Attempt, classify, connect_and_send, credential, status_ok};
use crate::error::ProxyError;
use crate::routing::{Instance, Server, UpstreamHeader};
use crate::shared::Shared;
use crate::sse::Parser;

/// Opens the upstream's event stream and waits for its `endpoint` event. Failing to reach the instance is
/// `NotSent` (another may be tried); a stream that does not behave is a failure of the instance.
pub(crate) async fn open(
    gw: &Shared,
    server: &Server,
    instance: &Arc<Instance>,
    down: &RequestHeader,
) -> Result<Opened, Attempt> {
    let peer = instance.peer.as_ref().map_err(|e| {
        Attempt::NotSent(ProxyError::UpstreamUnreachable {
            server: server.name.to_string(),
            detail: format!("cannot resolve {}: {e}", instance.authority),
        })
    })?;
    let credential =
        credential(gw, down, server, instance).await.map_err(|e| Attempt::Failed(e.into(), None))?;
    let failed = |detail: String| {
        Attempt::Failed(
            ProxyError::UpstreamFailed { server: server.name.to_string(), detail }.into(),
            Some(false),
        )
    };
    let mut req =
        Head::new(&http::Method::GET, &instance.path_and_query).map_err(|e| failed(e.to_string()))?;
    req.header("host", instance.authority.as_bytes()).map_err(|e| failed(e.to_string()))?;
    req.header("accept", b"text/event-stream").map_err(|e| failed(e.to_string()))?;
    if let Some(c) = &credential {
        req.header(c.name.as_str(), c.value.as_bytes()).map_err(|e| failed(e.to_string()))?;
    }
    let mut up = connect_and_send(gw, server, peer, &req, b"").await.map_err(Attempt::NotSent)?;
    let limit = gw.limits.upstream_timeout;
    let timeout = || {
        Attempt::Failed(
            ProxyError::UpstreamTimeout {
                server: server.name.to_string(),
                detail: "no endpoint event".into(),
            }
            .into(),
            Some(false),
        )
    };
    tokio::time::timeout(limit, up.read_response_header())
        .await
        .map_err(|_| timeout())?
        .map_err(|e| Attempt::Failed(classify(server, &e).into(), Some(false)))?;
    let status = up.response_header().map_or(0, |r| r.status.as_u16());
    if status == 401 {
        return Err(Attempt::Failed(
            ProxyError::UpstreamAuthRefused { server: server.name.to_string() }.into(),
            Some(true),
        ));
    }
    if status != 200 {
        return Err(Attempt::Failed(
            ProxyError::UpstreamFailed {
                server: server.name.to_string(),
                detail: format!("the SSE endpoint answered {status}"),
            }
            .into(),
            Some(status_ok(status)),
        ));
    }
    up.set_read_timeout(None);
    let mut parser = Parser::default();
    let mut early = Vec::new();
    let endpoint = tokio::time::timeout(limit, async {
        loop {
            let Some(chunk) = up.read_response_body().await.map_err(|e| failed(e.to_string()))? else {
                return Err(failed("the SSE stream ended before its endpoint event".into()));
            };
            for event in parser.feed(&chunk).map_err(|e| failed(e.into()))? {
                if event.kind == "endpoint" {
                    return Ok(event.data);
                }
                early.push(Bytes::from(event.data));
            }
        }
    })
    .await
    .map_err(|_| timeout())??;
    let target =
        instance.endpoint.join(&endpoint).map_err(|e| failed(format!("bad endpoint {endpoint:?}: {e}")))?;
    let mut message_path = target.path().to_owned();
    if let Some(q) = target.query() {
        message_path.push('?');
        message_path.push_str(q);
    }
    Ok(Opened {
        link: Box::new(SseLink { instance: instance.clone(), message_path }),
        inbound: Box::new(Events { up, parser, queue: VecDeque::new() }),
        early,
    })
}

/// POSTs to the upstream's message endpoint.
struct SseLink {
    instance: Arc<Instance>,
    /// Path and query of the message endpoint (from the `endpoint` event).
    message_path: String,
}

#[async_trait]
impl Link for SseLink {
    async fn send(
        &self,
        gw: &Shared,
        server: &Server,
        down: &RequestHeader,
        message: Bytes,
    ) -> Result<(), ProxyError> {
        let instance = &self.instance;
        let failed = |detail: String| ProxyError::UpstreamFailed { server: server.name.to_string(), detail };
        let peer = instance.peer.as_ref().map_err(|e| failed(e.clone()))?;
        let credential: Option<UpstreamHeader> = credential(gw, down, server, instance).await?;
        let written = |e: Box<pingora::Error>| failed(e.to_string());
        let mut req = Head::new(&http::Method::POST, &self.message_path).map_err(written)?;
        req.header("host", instance.authority.as_bytes()).map_err(written)?;
        req.header("content-type", b"application/json").map_err(written)?;
        req.content_length(message.len());
        // The gateway's credential for this upstream, never the client's own (no token passthrough).
        if let Some(c) = &credential {
            req.header(c.name.as_str(), c.value.as_bytes()).map_err(written)?;
        }
        let mut up = connect_and_send(gw, server, peer, &req, &message).await?;
        up.set_read_timeout(Some(gw.limits.idle_timeout));
        tokio::time::timeout(gw.limits.upstream_timeout, up.read_response_header())
            .await
            .map_err(|_| ProxyError::UpstreamTimeout {
                server: server.name.to_string(),
                detail: "the message endpoint did not answer".into(),
            })?
            .map_err(|e| classify(server, &e))?;
        let status = up.response_header().map_or(0, |r| r.status.as_u16());
        while up.read_response_body().await.map_err(|e| classify(server, &e))?.is_some() {}
        gw.pool.release(up, Some(gw.limits.pool_idle_timeout));
        match status {
            200..300 => Ok(()),
            401 => Err(ProxyError::UpstreamAuthRefused { server: server.name.to_string() }),
            _ => Err(failed(format!("the message endpoint answered {status}"))),
        }
    }
}

/// `message` events of the upstream's stream.
struct Events {
    up: Response,
    parser: Parser,
    queue: VecDeque<Bytes>,
}

#[async_trait]
impl Inbound for Events {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(message);
            }
            let chunk = self.up.read_response_body().await.ok()??;
            let events = self.parser.feed(&chunk).ok()?;
            self.queue
                .extend(events.into_iter().filter(|e| e.kind == "message").map(|e| Bytes::from(e.data)));
        }
    }
}
