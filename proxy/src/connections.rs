//! Client connections: at most `--max-connections` open at once and `--max-connections-per-client` from
//! one client address (beyond them a connection is answered 503 / 429 `too_many_connections` and closed),
//! and every request head bounded by `--request-head-timeout` from its first byte, so a client dripping its
//! headers holds a connection for seconds, not for as long as each read keeps arriving within Pingora's
//! per-read timeout. Idle keep-alive connections are left to Pingora's keep-alive timeout.
//!
//! [`Listener`] is the MCP listener's application: it takes the connection's place, wraps the stream in
//! a [`HeadDeadline`] and serves every request of the connection in turn (`Gateway::exchange`), re-arming
//! the deadline between requests. Pingora provides the listener, TLS and the HTTP/1 codec; the request
//! loop is ours, so a request costs no per-request boxed future, cache or module state of Pingora's proxy
//! layer (BENCHMARKS.md, "Performance work").

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::caps::{Caps, Exceeded};
use crate::error::ProxyError;

/// How long a refused connection's request is read (and discarded) so the refusal is not lost to a reset.
const REFUSAL_DRAIN: Duration = Duration::from_millis(200);

/// The MCP listener's application: caps its connections, bounds their request heads and serves each
/// connection's HTTP/1 requests one after another, in the connection's own task.
pub struct Listener {
    pub gateway: crate::gateway::Gateway,
    pub caps: Arc<Caps>,
    pub head_timeout: Duration,
    /// Set when the listener stops: connections waiting for their next request close.
    pub closing: crate::drain::Closing,
}

fn client_key(stream: &Stream) -> Arc<str> {
    match stream.get_socket_digest().and_then(|d| d.peer_addr().cloned()) {
        Some(SocketAddr::Inet(addr)) => Arc::from(addr.ip().to_canonical().to_string()),
        _ => Arc::from("-"),
    }
}

#[async_trait]
impl ServerApp for Listener {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let client = client_key(&stream);
        let _open = match self.caps.try_acquire(&client) {
            Ok(permit) => Open::new(permit),
            Err(over) => {
                refuse(stream, over, &client).await;
                return None;
            }
        };
        let mut stream = Box::new(HeadDeadline::new(stream, self.head_timeout));
        let mut kept: Option<HttpPersistentSettings> = None;
        loop {
            let mut session = ServerSession::new_http1(stream);
            match kept.take() {
                // Keep-alive timeout and pipelined bytes already read carry over to the next request.
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(KEEPALIVE_SECS)),
            }
            if !self.gateway.exchange(&mut session, &self.closing, shutdown).await {
                return None;
            }
            let settings = HttpPersistentSettings::for_session(&session);
            let reusable = session.finish().await.ok().flatten()?;
            let (next, settings) = ReusedHttpStream::from_reusable_stream(reusable, settings).consume();
            let mut guarded = next.into_any().downcast::<HeadDeadline>().ok()?;
            guarded.rearm();
            stream = guarded;
            kept = settings;
        }
    }

    async fn cleanup(&self) {
        self.closing.close();
    }
}

/// How long a kept-alive connection may wait for its next request (Pingora's default).
const KEEPALIVE_SECS: u64 = 60;

/// A connection's place, counted in `mcpgw_proxy_connections_open` while held.
struct Open {
    _permit: crate::caps::Permit,
}

impl Open {
    fn new(permit: crate::caps::Permit) -> Self {
        crate::metrics::METRICS.connections_open.inc();
        Self { _permit: permit }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::metrics::METRICS.connections_open.dec();
    }
}

/// Answers a connection over a cap and closes it.
async fn refuse(mut stream: Stream, over: Exceeded, client: &str) {
    let error = match over {
        Exceeded::PerKey(limit) => ProxyError::TooManyConnections { per_client: true, limit },
        Exceeded::Total(limit) => ProxyError::TooManyConnections { per_client: false, limit },
    };
    crate::metrics::METRICS.connections_refused.with_label_values(&[error_cap(over)]).inc();
    tracing::warn!(client, %error, "Refused a connection.");
    let body = error.body(None);
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\n\
         connection: close\r\n\r\n",
        error.status(),
        if error.status() == 429 { "Too Many Requests" } else { "Service Unavailable" },
        body.len()
    );
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_DRAIN, async {
        let _ = stream.read(&mut sink).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        // Reading what the client still sends lets it see the answer rather than a reset.
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
    Shutdown::shutdown(&mut *stream).await;
}

fn error_cap(over: Exceeded) -> &'static str {
    match over {
        Exceeded::PerKey(_) => "per_client",
        Exceeded::Total(_) => "total",
    }
}

/// Where a request head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// No byte of the next head yet (the connection may be idle between requests).
    Awaited,
    /// Reading it; `after_lf`: the last byte that was not CR was LF (one more LF ends the head).
    Reading { after_lf: bool },
    /// Read: nothing is scanned until the next request.
    Read,
}

/// A client stream whose request heads must arrive within a deadline from their first byte.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    head: Head,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl HeadDeadline {
    fn new(inner: Stream, timeout: Duration) -> Self {
        Self { inner, timeout, head: Head::Awaited, deadline: None }
    }

    /// The next bytes start a new request head.
    fn rearm(&mut self) {
        self.head = Head::Awaited;
    }

    /// Follows the head through `bytes` just read.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.head == Head::Read {
            return;
        }
        let after_lf = match self.head {
            Head::Reading { after_lf } => after_lf,
            _ => {
                let at = Instant::now() + self.timeout;
                match &mut self.deadline {
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                false
            }
        };
        self.head = match scan_head(after_lf, bytes) {
            Some(after_lf) => Head::Reading { after_lf },
            None => Head::Read,
        };
    }
}

/// Scans the next `bytes` of a request head, `after_lf` saying whether the last byte before them that was
/// not CR was LF: `None` when they end the head (an empty line, CRLF or bare LF), else the same for them.
fn scan_head(mut after_lf: bool, bytes: &[u8]) -> Option<bool> {
    // Line by line (`memchr` finds each LF): a line ends the head when only CRs stand between it and the
    // LF before it.
    let mut rest = bytes;
    loop {
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            return Some(after_lf && rest.iter().all(|&b| b == b'\r'));
        };
        if after_lf && rest[..lf].iter().all(|&b| b == b'\r') {
            return None;
        }
        after_lf = true;
        rest = &rest[lf + 1..];
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.head, Head::Reading { .. })
            && let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            crate::metrics::METRICS.request_head_timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the request head did not arrive within {:?}", this.timeout),
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let filled = buf.filled().len();
            if filled > before {
                this.scan(&buf.filled()[before..filled]);
                if matches!(this.head, Head::Reading { .. })
                    && let Some(deadline) = &mut this.deadline
                {
                    // Registers the timer with this task, so a silent client is woken at the deadline.
                    let _ = deadline.as_mut().poll(cx);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_ends_at_an_empty_line_with_or_without_carriage_returns() {
        let ends = |chunks: &[&[u8]]| {
            let mut after_lf = false;
            chunks.iter().any(|chunk| match scan_head(after_lf, chunk) {
                None => true,
                Some(next) => {
                    after_lf = next;
                    false
                }
            })
        };
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]));
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]), "split anywhere");
        assert!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]), "bare LF");
        assert!(!ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-Slow: 1\r\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\nX: a\r\r\n"]), "a lone CR is not a line");
    }
}
