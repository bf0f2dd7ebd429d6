//! Routing state shared by the request path and the background service that keeps it current.

pub mod cache;
pub mod catalog;
pub mod sync;
pub mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

pub use table::{Instance, InstanceStates, PeerSettings, RoutingTable, Server, UpstreamAuth, UpstreamHeader};

/// The current routing table. The request path does one [`Routes::load`]; only the sync service stores.
#[derive(Debug)]
pub struct Routes {
    table: ArcSwap<RoutingTable>,
    ready: AtomicBool,
    /// Live per-instance state, carried from one table to the next.
    pub states: InstanceStates,
    /// The version of every table stored, for those who wait for changes (`/mcp` notification streams).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            table: ArcSwap::default(),
            ready: AtomicBool::new(false),
            states: InstanceStates::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Routes {
    /// The table to serve this request with, or `None` before the first table arrived.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.ready.load(Ordering::Acquire).then(|| self.table.load_full())
    }

    /// The table the sync service builds the next one from (empty before the first).
    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    pub fn store(&self, table: RoutingTable) {
        let version = table.version;
        self.table.store(Arc::new(table));
        self.ready.store(true, Ordering::Release);
        self.changed.send_replace(version);
    }

    /// A receiver that wakes after every stored table.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Ready once a first table has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
