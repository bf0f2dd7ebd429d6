//! Client connections: at most `--max-connections` open at once and `--max-connections-per-client` from
//! one client address (beyond them a connection is answered 503 / 429 `too_many_connections` and closed),
//! and every request head bounded by `--request-head-timeout` from its first byte, so a client dripping its
//! headers holds a connection for seconds, not for as long as each read keeps arriving within a per-read
//! timeout. An idle keep-alive connection closes after 60 s without a request (`downstream::Session`).
//!
//! [`Listener`] is the MCP listener's application: it takes the connection's place, wraps the stream in
//! a [`HeadDeadline`] and serves every request of the connection in turn (`Gateway::exchange`) in one
//! HTTP/1 session of the gateway's own (`crate::downstream`). A plain listener's accept loop is ours too
//! ([`PlainListener`]): each connection's task is its own future, nothing of Pingora's around it. Pingora
//! provides the TLS listener; the request loop and its codec are ours, so a request costs no per-request
//! boxed future, session or header copy of Pingora's (BENCHMARKS.md, "Performance work").

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::caps::{Caps, Exceeded};
use crate::downstream::{HeadDeadline, Session};
use crate::error::ProxyError;
use crate::gateway::{Next, Relayed};
use crate::transport::Transport;

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

fn client_key(peer: Option<&SocketAddr>) -> Arc<str> {
    match peer {
        Some(SocketAddr::Inet(addr)) => Arc::from(addr.ip().to_canonical().to_string()),
        _ => Arc::from("-"),
    }
}

impl Listener {
    /// Serves one client connection: takes its place under the caps, then its requests.
    async fn serve(self: Arc<Self>, stream: Transport, peer: Option<SocketAddr>, shutdown: ShutdownWatch) {
        let client = client_key(peer.as_ref());
        let open = match self.caps.try_acquire(&client) {
            Ok(permit) => Open::new(permit),
            Err(over) => {
                refuse(stream, over, &client).await;
                return;
            }
        };
        let stream = Box::new(HeadDeadline::new(stream, self.head_timeout));
        let session = Session::new(stream, peer, Duration::from_secs(KEEPALIVE_SECS));
        self.requests(session, open, shutdown).await;
    }

    /// Serves a connection's HTTP/1 requests one after another until it closes, or until an answer is a
    /// GET stream: that one goes on in a task of its own ([`Listener::relay`]) and this future ends, so an
    /// idle stream holds the stream's state, not the request path's futures.
    async fn requests(self: Arc<Self>, mut session: Session, open: Open, shutdown: ShutdownWatch) {
        loop {
            match self.gateway.exchange(&mut session, &self.closing, &shutdown).await {
                Next::Close => return,
                Next::Reuse => {}
                Next::Relay(relayed) => {
                    session.release_timers();
                    tokio::spawn(self.relay(session, relayed, open, shutdown));
                    return;
                }
            }
            if !session.finish().await {
                return;
            }
        }
    }

    /// Relays a GET stream to its end (`Gateway::relay`); the connection's next requests are then served in
    /// a task of their own. (Boxed: the two tasks' futures name each other.)
    fn relay(
        self: Arc<Self>,
        mut session: Session,
        relayed: Box<Relayed>,
        open: Open,
        shutdown: ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            if self.gateway.relay(&mut session, relayed).await && session.finish().await {
                session.release_timers();
                tokio::spawn(self.requests(session, open, shutdown));
            }
        })
    }
}

/// TLS listeners are Pingora's (its acceptor makes the handshake); each connection is then served as on a
/// plain listener.
#[async_trait]
impl ServerApp for Listener {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().cloned());
        self.clone().serve(Transport::from(stream), peer, shutdown.clone()).await;
        None
    }

    async fn cleanup(&self) {
        self.closing.close();
    }
}

/// Backlog of the plain listener's socket (Pingora's).
const BACKLOG: i32 = 65_535;

/// How long accepting pauses when the process is out of descriptors (accept would fail again at once).
const OUT_OF_DESCRIPTORS_PAUSE: Duration = Duration::from_millis(200);

/// The MCP listener on a plain TCP socket: an accept loop of the gateway's own, so that each connection's
/// task is the connection's future itself. Pingora's listening service spawns a future that holds its TLS
/// handshake's inline (8.7 KiB, even on plain TCP) around a boxed `ServerApp` future, and every idle
/// stream kept both (BENCHMARKS.md, scenario f). Shutdown is Pingora's: accepting stops when its shutdown
/// watch fires, connections waiting for their next request close (`Closing`), requests in flight run on
/// until the grace period ends.
pub struct PlainListener {
    socket: Option<std::net::TcpListener>,
    app: Arc<Listener>,
}

impl PlainListener {
    /// Binds `addr` now, so that a port in use is reported at start, not from a service's thread.
    pub fn bind(addr: std::net::SocketAddr, app: Listener) -> io::Result<Self> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket: Some(socket.into()), app: Arc::new(app) })
    }
}

#[async_trait]
impl pingora::services::Service for PlainListener {
    async fn start_service(
        &mut self,
        _fds: Option<pingora::server::ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let socket = self.socket.take().expect("the MCP listener starts once");
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen on the MCP socket.");
                std::process::exit(1);
            }
        };
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            };
            match accepted {
                Ok((tcp, peer)) => {
                    // Requests and answers go out as written (Pingora's listeners do the same).
                    let _ = tcp.set_nodelay(true);
                    let peer = Some(SocketAddr::Inet(peer));
                    // On a worker picked at random (each is a runtime of its own: `server::build`); read
                    // and written as it is (`transport`).
                    pingora_runtime::current_handle().spawn(self.app.clone().serve(
                        Transport::Tcp(tcp),
                        peer,
                        shutdown.clone(),
                    ));
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tracing::error!(error = %e, "Cannot accept a connection: out of descriptors.");
                    tokio::time::sleep(OUT_OF_DESCRIPTORS_PAUSE).await;
                }
                // The client went away before it was accepted, and the like: the next one is accepted.
                Err(e) => tracing::debug!(error = %e, "accept() failed."),
            }
        }
        drop(listener);
        self.app.closing.close();
    }

    fn name(&self) -> &str {
        "mcp"
    }
}

/// How long a kept-alive connection may wait for its next request.
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
async fn refuse(mut stream: Transport, over: Exceeded, client: &str) {
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
    stream.close().await;
}

fn error_cap(over: Exceeded) -> &'static str {
    match over {
        Exceeded::PerKey(_) => "per_client",
        Exceeded::Total(_) => "total",
    }
}
