//! Upstream connections: the pool of kept-alive streams, and the request written on one of them in a
//! single write.
//!
//! Pingora's HTTP/1 client flushed the request head before it wrote the body, so every request reached the
//! upstream in two TCP segments and woke it twice (BENCHMARKS.md, "Where the proxy's time goes", item 3).
//! The gateway always holds the whole body before it sends (bodies are inspected), so it writes head and body
//! as one buffer on the pooled stream itself, and reads the answer with its own reader
//! ([`super::response`]).
//!
//! Idle connections are kept here, not in Pingora's pool: Pingora's spawns a task per released connection
//! to watch it (a timer, a `Notify`, an LRU and a map entry, and a `getpeername` when it is taken again),
//! which cost more per request than the exchange's own logic (BENCHMARKS.md, "Performance work"). Here a
//! released connection is pushed on its peer's stack, and a taken one is checked then: one non-blocking
//! read, which finds a connection the upstream closed meanwhile (its FIN is readable) or one that sent
//! what nobody asked for; either is dropped (a released one is not read: its answer just ended where its
//! framing said, and the check when it is taken finds whatever arrives after). Connections idle past their
//! timeout are dropped when their peer's stack is next used and by [`Pool::sweep`], every few seconds.
//!
//! Plain TCP connections are opened here and read and written as they are (`crate::transport`); TLS ones
//! are Pingora's connector's.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::connectors::TransportConnector;
#[cfg(test)]
use pingora::http::RequestHeader;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::response::Response;
use crate::transport::Transport;

/// The proxy's upstream connections, kept alive between requests per peer.
pub struct Pool {
    /// Makes new connections (TCP, TLS with the pool's trust).
    transport: TransportConnector,
    /// Idle connections by peer (`Peer::reuse_hash`) and worker thread ([`worker`]), the most recently
    /// released last.
    idle: Mutex<IdleMap>,
    /// TLS client settings of `wss://` upstreams (which do not go through Pingora's connector).
    websocket_tls: tokio_rustls::TlsConnector,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(None)
    }
}

/// Idle connections by peer and worker.
type IdleMap = HashMap<(u64, u32), Vec<Idle>, BuildHasherDefault<KeyHasher>>;

/// Hashes the pool's keys, whose peer part is a hash already (`Peer::reuse_hash`): taken as it is, the
/// worker's number rotated in, where the default SipHash cost ~140 instructions a lookup, twice a request.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The worker's number after the peer's hash (a tuple's `u32` comes here), and any other input.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

/// Idle connections kept per peer and worker thread (Pingora's default for the whole pool).
const KEEPALIVE_POOL_SIZE: usize = 128;

/// The number of the worker thread running the caller, which keys its idle connections. Each worker of
/// the MCP listener is a runtime of its own (`server::build`), and a connection's socket is registered with
/// the runtime that opened it: reused from another worker, its readiness would reach the request through
/// the first worker's loop (a wake across threads, and a wait for that worker to poll its reactor). So a
/// worker reuses the connections it opened, as nginx's workers keep their own.
fn worker() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    thread_local! {
        static WORKER: u32 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    WORKER.with(|w| *w)
}

/// An idle connection and when it was released.
struct Idle {
    stream: Transport,
    since: Instant,
    timeout: Option<Duration>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.timeout.is_some_and(|t| now.duration_since(self.since) >= t)
    }
}

impl Pool {
    /// A pool trusting the CAs of `ca_file` (PEM) for TLS upstreams instead of the system's (`None`).
    pub fn new(ca_file: Option<&std::path::Path>) -> Self {
        let options = ca_file.map(|path| pingora::connectors::ConnectorOptions {
            ca_file: Some(path.to_string_lossy().into_owned()),
            ..pingora::connectors::ConnectorOptions::new(KEEPALIVE_POOL_SIZE)
        });
        Self {
            transport: TransportConnector::new(options),
            idle: Mutex::default(),
            websocket_tls: websocket_tls(ca_file),
        }
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
    /// Sends `head` and `body` on a pooled connection to `peer` (a new one when none is idle) in one write,
    /// and returns the answer to read. A reused connection that fails while the request is
    /// written is retried once on a new one: the upstream cannot have acted on a request it did not fully
    /// receive. `head` must frame `body`: a `Content-Length` of its length (as `upstream_request` sets it).
    pub async fn send(&self, peer: &HttpPeer, head: &Head, body: &[u8]) -> pingora::Result<Response> {
        debug_assert!(
            body.is_empty() || head.content_length == Some(body.len()),
            "a request body goes upstream framed by its Content-Length"
        );
        let wire = head.wire(body);
        let key = peer.reuse_hash();
        let mut retried = false;
        loop {
            let (mut stream, reused) = match self.take(key) {
                Some(stream) => (stream, true),
                // Boxed: connecting (TLS included) is a future of ~8 KiB that every request's future would
                // otherwise carry, and an idle stream's with it (BENCHMARKS.md, scenario f).
                None => (Box::pin(self.connect(peer)).await?, false),
            };
            let written = async {
                stream.write_all(&wire).await?;
                stream.flush().await
            };
            let written = match peer.options.write_timeout {
                Some(t) => tokio::time::timeout(t, written).await.unwrap_or_else(|_| Err(timed_out())),
                None => written.await,
            };
            match written {
                Ok(()) => return Ok(Response::new(stream, key)),
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

    /// A new connection to `peer`: plain TCP opened here and read and written as it is (`transport`),
    /// anything else (TLS) by Pingora's connector. Failures are classified as Pingora's connector does.
    /// Of the peer's options only the connect timeout applies to plain TCP: the routing table sets no
    /// other (keep-alive probes, buffer sizes, a local address), and one it sets must be applied here.
    async fn connect(&self, peer: &HttpPeer) -> pingora::Result<Transport> {
        let addr = match peer.address() {
            SocketAddr::Inet(addr) if !peer.is_tls() && peer.get_proxy().is_none() => *addr,
            _ => return Ok(Transport::Pingora(self.transport.new_stream(peer).await?)),
        };
        let connecting = tokio::net::TcpStream::connect(addr);
        let connected = match peer.connection_timeout() {
            Some(t) => tokio::time::timeout(t, connecting).await.map_err(|_| {
                Error::explain(
                    ErrorType::ConnectTimedout,
                    format!("timeout {t:?} connecting to server {peer}"),
                )
            })?,
            None => connecting.await,
        };
        let tcp = connected.map_err(|e| {
            let etype = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                std::io::ErrorKind::TimedOut => ErrorType::ConnectTimedout,
                _ if matches!(e.raw_os_error(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => {
                    ErrorType::ConnectNoRoute
                }
                _ => ErrorType::ConnectError,
            };
            Error::because(etype, format!("Fail to connect to {peer}"), e)
        })?;
        // Requests go out as written (one write each: `send`).
        let _ = tcp.set_nodelay(true);
        Ok(Transport::Tcp(tcp))
    }

    /// Returns the connection of a finished exchange to the pool, if the answer left it reusable; it is
    /// kept for `idle_timeout`, or less when the upstream said it keeps it idle for less.
    pub fn release(&self, answer: Response, idle_timeout: Option<Duration>) {
        if let Some((stream, key, theirs)) = answer.into_reusable() {
            let timeout = match (idle_timeout, theirs) {
                (Some(ours), Some(theirs)) => Some(ours.min(theirs)),
                (ours, theirs) => ours.or(theirs),
            };
            self.put(stream, key, timeout);
        }
    }

    /// An idle connection of this worker to the peer of `key` that is still usable, the most recently
    /// released first.
    fn take(&self, key: u64) -> Option<Transport> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                idle.get_mut(&(key, worker()))?.pop()?
            };
            let expired = idle.expired(now);
            let mut stream = idle.stream;
            if !expired && still_open(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps `stream` for this worker's next request to the peer of `key`; when it has as many idle
    /// connections to the peer as are kept, the oldest closes.
    fn put(&self, stream: Transport, key: u64, timeout: Option<Duration>) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stack = idle.entry((key, worker())).or_default();
        stack.retain(|i| !i.expired(now));
        if stack.len() >= KEEPALIVE_POOL_SIZE {
            stack.remove(0);
        }
        stack.push(Idle { stream, since: now, timeout });
    }

    /// Closes the idle connections that timed out or that their upstream closed; forgets peers without
    /// any. The proxy runs it every few seconds (`server::Housekeeping`).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|_, stack| {
            stack.retain_mut(|i| !i.expired(now) && still_open(&mut i.stream));
            !stack.is_empty()
        });
    }

    /// Idle connections held, over every peer.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().map(Vec::len).sum()
    }
}

/// Whether an idle connection can carry another request: nothing is readable on it, neither the end of
/// the stream (the upstream closed it) nor bytes nobody asked for. A read that would wait answers that
/// without waiting (and without a system call when the reactor saw nothing arrive).
fn still_open(stream: &mut Transport) -> bool {
    use futures_util::FutureExt;
    let mut byte = [0u8; 1];
    match tokio::task::unconstrained(stream.read(&mut byte)).now_or_never() {
        None => true,
        Some(Ok(0)) => {
            tracing::debug!("An idle upstream connection was closed by its upstream.");
            false
        }
        Some(Ok(_)) => {
            tracing::warn!("An idle upstream connection received data nobody asked for; closing it.");
            false
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "An idle upstream connection failed.");
            false
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::TimedOut)
}

/// An upstream request head, written in its wire form as it is built: no header map is made and none of
/// the client's header names or values is copied into one (building one and serializing it again cost
/// ~20 allocations a request). Header names are written as given (lower case for those from a map).
#[derive(Debug)]
pub struct Head {
    buf: BytesMut,
    content_length: Option<usize>,
}

impl Head {
    /// `METHOD path HTTP/1.1`; a path with a space, a control character or nothing is refused.
    pub fn new(method: &http::Method, path: &str) -> pingora::Result<Self> {
        if path.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "the request path cannot be written");
        }
        let mut buf = BytesMut::with_capacity(HEAD_CAPACITY);
        buf.extend_from_slice(method.as_str().as_bytes());
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(path.as_bytes());
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        Ok(Self { buf, content_length: None })
    }

    /// Appends `name: value`. `name` must be a header name (a token); a value that would end the line or
    /// the head (CR, LF, NUL) is refused.
    pub fn header(&mut self, name: &str, value: &[u8]) -> pingora::Result<()> {
        debug_assert!(http::HeaderName::from_bytes(name.as_bytes()).is_ok(), "{name} is a header name");
        if memchr::memchr3(b'\r', b'\n', 0, value).is_some() {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("the {name} header cannot be written"),
            );
        }
        self.line(name.as_bytes(), value);
        Ok(())
    }

    /// Appends a header field of a header map as it is: a `HeaderValue` holds no CR, LF or NUL.
    pub fn field(&mut self, name: &http::HeaderName, value: &http::HeaderValue) {
        self.line(name.as_str().as_bytes(), value.as_bytes());
    }

    fn line(&mut self, name: &[u8], value: &[u8]) {
        self.buf.reserve(name.len() + value.len() + 4);
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Appends `Content-Length: len`.
    pub fn content_length(&mut self, len: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = len;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.line(b"content-length", &digits[at..]);
        self.content_length = Some(len);
    }

    /// The request on the wire: this head, the empty line, then `body`.
    fn wire(&self, body: &[u8]) -> BytesMut {
        let mut wire = BytesMut::with_capacity(self.buf.len() + 2 + body.len());
        wire.extend_from_slice(&self.buf);
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(body);
        wire
    }

    /// The head parsed back into a header (tests read what would be sent).
    #[cfg(test)]
    pub(crate) fn parsed(&self) -> RequestHeader {
        let text = std::str::from_utf8(&self.buf).unwrap();
        let mut lines = text.split("\r\n");
        let mut line = lines.next().unwrap().split(' ');
        let (method, path) = (line.next().unwrap(), line.next().unwrap());
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        for l in lines.filter(|l| !l.is_empty()) {
            let (name, value) = l.split_once(": ").unwrap();
            req.append_header(name.to_owned(), value).unwrap();
        }
        req
    }
}

/// Room for a typical request head (the client's MCP headers and the gateway's own).
const HEAD_CAPACITY: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body_are_one_buffer() {
        let mut head = Head::new(&http::Method::POST, "/mcp").unwrap();
        head.header("host", b"up:8080").unwrap();
        head.content_length(2);
        let wire = head.wire(b"{}");
        let text = std::str::from_utf8(&wire).unwrap();
        assert_eq!(text, "POST /mcp HTTP/1.1\r\nhost: up:8080\r\ncontent-length: 2\r\n\r\n{}");
        for len in [0, 9, 10, 1_123, usize::MAX] {
            let mut head = Head::new(&http::Method::POST, "/mcp").unwrap();
            head.content_length(len);
            assert_eq!(
                head.wire(b""),
                format!("POST /mcp HTTP/1.1\r\ncontent-length: {len}\r\n\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn nothing_can_end_a_line_or_the_head_early() {
        let mut head = Head::new(&http::Method::GET, "/mcp").unwrap();
        for value in [&b"a\r\nx-injected: 1"[..], b"a\nb", b"a\rb", b"a\0b"] {
            assert!(head.header("mcp-session-id", value).is_err(), "{value:?}");
        }
        for path in ["", "/a b", "/a\r\nx: 1", "/a\tb"] {
            assert!(Head::new(&http::Method::GET, path).is_err(), "{path:?}");
        }
        assert_eq!(&head.wire(b"")[..], b"GET /mcp HTTP/1.1\r\n\r\n", "a refused header writes nothing");
    }

    /// An upstream on 127.0.0.1 that answers every request on a connection with `200` and an empty body,
    /// counting the connections it accepted; it closes a connection after `close_after` answers.
    async fn upstream(close_after: usize) -> (HttpPeer, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..close_after {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            let n = conn.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            head.extend_from_slice(&buf[..n]);
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                    }
                });
            }
        });
        (HttpPeer::new(addr, false, String::new()), accepted)
    }

    async fn call(pool: &Pool, peer: &HttpPeer, timeout: Option<Duration>) {
        let mut head = Head::new(&http::Method::GET, "/").unwrap();
        head.header("host", b"up").unwrap();
        let mut up = pool.send(peer, &head, b"").await.unwrap();
        up.read_response_header().await.unwrap();
        assert_eq!(up.response_header().unwrap().status, 200);
        while up.read_response_body().await.unwrap().is_some() {}
        pool.release(up, timeout);
    }

    /// Waits (bounded) until `done` holds, yielding to the runtime between looks.
    async fn eventually(mut done: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the condition did not come true within 2 s");
    }

    /// Plain TCP is connected here, not by Pingora's connector: its failures must still be classified as
    /// the connector's (the error classifier maps them to `upstream_unreachable`).
    #[tokio::test]
    async fn a_plain_connection_that_fails_is_classified_as_pingoras_connector_would() {
        let pool = Pool::default();
        let closed = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let refused = pool.connect(&HttpPeer::new(closed, false, String::new())).await.unwrap_err();
        assert_eq!(refused.etype(), &ErrorType::ConnectRefused, "{refused}");

        // A listener whose accept queue is full drops further SYNs: the connect times out.
        let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        full.listen(0).unwrap();
        let addr = full.local_addr().unwrap().as_socket().unwrap();
        // Linux queues one connection past a backlog of 0.
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        let mut silent = HttpPeer::new(addr, false, String::new());
        silent.options.connection_timeout = Some(Duration::from_millis(50));
        let timed_out = pool.connect(&silent).await.unwrap_err();
        assert_eq!(timed_out.etype(), &ErrorType::ConnectTimedout, "{timed_out}");

        let (peer, _) = upstream(1).await;
        assert!(matches!(pool.connect(&peer).await.unwrap(), Transport::Tcp(_)), "plain TCP, read as it is");
    }

    #[tokio::test]
    async fn a_released_connection_carries_the_next_request() {
        use std::sync::atomic::Ordering;
        let pool = Pool::default();
        let (peer, accepted) = upstream(usize::MAX).await;
        for _ in 0..5 {
            call(&pool, &peer, Some(Duration::from_secs(60))).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for five sequential requests");
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_worker_reuses_the_connections_it_opened() {
        use std::sync::atomic::Ordering;
        let pool = std::sync::Arc::new(Pool::default());
        let (peer, accepted) = upstream(usize::MAX).await;
        call(&pool, &peer, Some(Duration::from_secs(60))).await;
        // Another worker: a thread running a runtime of its own, as the MCP listener's workers do.
        let other = std::thread::spawn({
            let (pool, peer) = (pool.clone(), peer.clone());
            move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    call(&pool, &peer, Some(Duration::from_secs(60))).await;
                    call(&pool, &peer, Some(Duration::from_secs(60))).await;
                });
            }
        });
        // Waited for off this runtime's thread, which serves the upstream meanwhile.
        tokio::task::spawn_blocking(move || other.join().unwrap()).await.unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the other worker opened one of its own, and reused it"
        );
        assert_eq!(pool.idle_count(), 2);
        call(&pool, &peer, Some(Duration::from_secs(60))).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the first worker took its own connection again");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        use std::sync::atomic::Ordering;
        let pool = Pool::default();
        // The upstream closes each connection after one answer, while it idles in the pool.
        let (peer, accepted) = upstream(1).await;
        call(&pool, &peer, Some(Duration::from_secs(60))).await;
        // The FIN reaches the pooled socket; until the reactor has seen it the stream reads as open.
        eventually(|| {
            pool.sweep();
            pool.idle_count() == 0
        })
        .await;
        call(&pool, &peer, Some(Duration::from_secs(60))).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the closed connection was replaced, not written to");
    }

    #[tokio::test]
    async fn idle_connections_past_their_timeout_are_closed() {
        use std::sync::atomic::Ordering;
        let pool = Pool::default();
        let (peer, accepted) = upstream(usize::MAX).await;
        call(&pool, &peer, Some(Duration::ZERO)).await;
        assert_eq!(pool.idle_count(), 1);
        pool.sweep();
        assert_eq!(pool.idle_count(), 0, "a connection idle past its timeout is closed by the sweep");
        call(&pool, &peer, Some(Duration::ZERO)).await;
        call(&pool, &peer, Some(Duration::ZERO)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "an expired connection is never taken");
    }
}
