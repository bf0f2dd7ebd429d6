//! Upstream connections: Pingora's pool of kept-alive streams, and the request written on one of them in a
//! single write.
//!
//! Pingora's HTTP/1 client flushes the request head before it writes the body, so every request reached the
//! upstream in two TCP segments and woke it twice (BENCHMARKS.md, "Where the proxy's time goes", item 3).
//! The gateway always holds the whole body before it sends (bodies are inspected), so it writes head and body
//! as one buffer on the pooled stream itself and hands the stream to Pingora's HTTP/1 session only to read
//! the response. The session then never saw the request; what it would have learnt from it does not apply
//! to the gateway's requests: they are never `HEAD`, never an upgrade, and never ask for `Connection: close`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::{HttpSession as Http1Session, http_req_header_to_wire};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType, OkOrErr};
use tokio::io::AsyncWriteExt;

/// The proxy's upstream connections, kept alive between requests per peer.
pub struct Pool {
    transport: TransportConnector,
    /// TLS client settings of `wss://` upstreams (which do not go through Pingora's connector).
    websocket_tls: tokio_rustls::TlsConnector,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Idle connections kept per proxy (Pingora's default).
const KEEPALIVE_POOL_SIZE: usize = 128;

impl Pool {
    /// A pool trusting the CAs of `ca_file` (PEM) for TLS upstreams instead of the system's (`None`).
    pub fn new(ca_file: Option<&std::path::Path>) -> Self {
        let options = ca_file.map(|path| pingora::connectors::ConnectorOptions {
            ca_file: Some(path.to_string_lossy().into_owned()),
            ..pingora::connectors::ConnectorOptions::new(KEEPALIVE_POOL_SIZE)
        });
        Self { transport: TransportConnector::new(options), websocket_tls: websocket_tls(ca_file) }
    }

    /// TLS client settings for `wss://` upstreams: the same trust as the pool's.
    pub fn websocket_tls(&self) -> &tokio_rustls::TlsConnector {
        &self.websocket_tls
    }
}

/// Trusts the CAs of `ca_file`, else the web PKI roots. The file was checked with the flags; should it fail
/// now, nothing is trusted (every `wss://` handshake fails, naming the certificate).
fn websocket_tls(ca_file: Option<&std::path::Path>) -> tokio_rustls::TlsConnector {
    let roots = match ca_file {
        Some(path) => mcpgw_proto::tls::root_store(path).unwrap_or_else(|error| {
            tracing::error!(%error, "Cannot read --upstream-ca: no wss:// upstream will be trusted.");
            rustls::RootCertStore::empty()
        }),
        None => mcpgw_proto::tls::web_roots(),
    };
    mcpgw_proto::tls::client_connector(roots)
}

impl Pool {
    /// Sends `req` and `body` on a pooled connection to `peer` (a new one when none is idle) in one write,
    /// and returns the session to read the answer on. A reused connection that fails while the request is
    /// written is retried once on a new one: the upstream cannot have acted on a request it did not fully
    /// receive. `req` must frame `body`: a `Content-Length` of its length (as `upstream_request` sets it).
    pub async fn send(
        &self,
        peer: &HttpPeer,
        req: &RequestHeader,
        body: &Bytes,
    ) -> pingora::Result<HttpSession> {
        debug_assert!(
            body.is_empty()
                || req
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() == body.len().to_string().as_bytes()),
            "a request body goes upstream framed by its Content-Length"
        );
        let wire = wire(req, body)?;
        let mut retried = false;
        loop {
            let (mut stream, reused) = self.transport.get_stream(peer).await?;
            let written = async {
                stream.write_all(&wire).await?;
                stream.flush().await
            };
            let written = match peer.options.write_timeout {
                Some(t) => tokio::time::timeout(t, written).await.unwrap_or_else(|_| Err(timed_out())),
                None => written.await,
            };
            match written {
                Ok(()) => return Ok(HttpSession::H1(Http1Session::new_with_options(stream, peer))),
                Err(e) if reused && !retried => {
                    tracing::debug!(error = %e, "Pooled upstream connection failed; retrying on a new one.");
                    retried = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::because(ErrorType::WriteTimedout, "while writing the request", e));
                }
                Err(e) => return Err(Error::because(ErrorType::WriteError, "while writing the request", e)),
            }
        }
    }

    /// Returns the connection of a finished exchange to the pool, if the exchange left it reusable.
    pub async fn release(&self, session: HttpSession, peer: &HttpPeer, idle_timeout: Option<Duration>) {
        let HttpSession::H1(mut h1) = session else { return };
        h1.respect_keepalive();
        if let Some(stream) = h1.reuse().await {
            self.transport.release_stream(stream, peer.reuse_hash(), idle_timeout);
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::TimedOut)
}

/// The request as it goes on the wire: head, then body.
fn wire(req: &RequestHeader, body: &Bytes) -> pingora::Result<BytesMut> {
    let mut wire = http_req_header_to_wire(req)
        .or_err(ErrorType::InvalidHTTPHeader, "the request line or a header cannot be written")?;
    wire.extend_from_slice(body);
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body_are_one_buffer() {
        let mut req = RequestHeader::build("POST", b"/mcp", None).unwrap();
        req.insert_header("host", "up:8080").unwrap();
        req.insert_header("content-length", "2").unwrap();
        let wire = wire(&req, &Bytes::from_static(b"{}")).unwrap();
        let text = std::str::from_utf8(&wire).unwrap();
        assert!(text.starts_with("POST /mcp HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{}"), "{text}");
        assert!(text.contains("content-length: 2\r\n"), "{text}");
    }
}
