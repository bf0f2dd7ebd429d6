//! A TCP relay in front of a server, which a test can cut (every open connection reset, new ones refused)
//! and restore: the server, as its clients see it, goes away and comes back, without stopping a server
//! that other tests share (the local PostgreSQL). It can also delay every byte it relays, each way, and
//! stall (hold everything, as a link losing every packet does, until it recovers): a degraded network
//! link in user space, where the kernel has no `netem` queueing discipline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

struct State {
    open: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
    /// Added to every chunk each way, in microseconds.
    delay_us: AtomicU64,
    /// Nothing is forwarded while set (bytes wait, in order).
    stalled: AtomicBool,
}

pub struct Relay {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

impl Relay {
    /// Relays connections to `target` from a new port on 127.0.0.1.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(crate::localhost(0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            open: AtomicBool::new(true),
            connections: Mutex::default(),
            delay_us: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !shared.open.load(Ordering::SeqCst) {
                    // Refused: closed at once, as by a server that is not there.
                    drop(client);
                    continue;
                }
                let link = shared.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_rx, client_tx) = client.into_split();
                        let (server_rx, server_tx) = server.into_split();
                        // Either way ending ends both (the aborted task drops its halves).
                        tokio::select! {
                            () = pump(client_rx, server_tx, link.clone()) => {}
                            () = pump(server_rx, client_tx, link) => {}
                        }
                    }
                });
                let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
                connections.retain(|c| !c.is_finished());
                connections.push(task.abort_handle());
            }
        });
        Ok(Self { addr, state, accept })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        for c in self.state.connections.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }

    /// Delays every chunk relayed from now on by `delay`, each way (so a round trip by twice that).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_us.store(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Holds every byte (in order) while `stalled`; open connections stay open.
    pub fn set_stalled(&self, stalled: bool) {
        self.state.stalled.store(stalled, Ordering::SeqCst);
    }
}

/// Copies one direction, each chunk forwarded `delay` after it was read (chunks keep their order and
/// their spacing: the delay is latency, not a rate limit) and none while the link is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let link = state.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = Duration::from_micros(state.delay_us.load(Ordering::SeqCst));
                    if tx.send((tokio::time::Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            while link.stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
