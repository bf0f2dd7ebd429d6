//! A TCP relay in front of a server, which a test can cut (every open connection reset, new ones refused)
//! and restore: the server, as its clients see it, goes away and comes back, without stopping a server
//! that other tests share (the local PostgreSQL).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

struct State {
    open: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
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
        let state = Arc::new(State { open: AtomicBool::new(true), connections: Mutex::default() });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !shared.open.load(Ordering::SeqCst) {
                    // Refused: closed at once, as by a server that is not there.
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
}
