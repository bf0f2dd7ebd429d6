//! The registry of proxies connected to this replica, with what each acknowledged or refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A refused update, as reported by the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Nack {
    pub version: u64,
    pub reason: String,
}

/// One connected proxy stream, as listed by `GET /api/v1/proxies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProxyInfo {
    pub proxy_id: String,
    /// Remote address of the stream, when known.
    pub peer: Option<String>,
    pub connected_at: DateTime<Utc>,
    /// Last version the proxy applied, or null before its first Ack.
    pub acked_version: Option<u64>,
    /// Last update the proxy refused, or null.
    pub last_nack: Option<Nack>,
}

type Entries = BTreeMap<u64, ProxyInfo>;

/// Connected proxies by stream (one proxy id may briefly hold two streams while it reconnects).
#[derive(Debug, Default, Clone)]
pub struct ProxyRegistry {
    entries: Arc<Mutex<Entries>>,
    next_id: Arc<AtomicU64>,
}

impl ProxyRegistry {
    // Entries are plain data, so a panic elsewhere while locked leaves nothing half-updated worth refusing.
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new stream; the entry lives as long as the returned handle.
    pub fn register(&self, proxy_id: String, peer: Option<String>) -> ProxyHandle {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let info =
            ProxyInfo { proxy_id, peer, connected_at: Utc::now(), acked_version: None, last_nack: None };
        self.lock().insert(key, info);
        ProxyHandle { registry: self.clone(), key }
    }

    /// Every connected proxy, ordered by proxy id then connection time.
    pub fn list(&self) -> Vec<ProxyInfo> {
        let mut all: Vec<ProxyInfo> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id).then(a.connected_at.cmp(&b.connected_at)));
        all
    }

    /// Number of connected streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no proxy is connected.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// A stream's entry in the registry; dropping it (the stream ended, however) removes the entry.
#[derive(Debug)]
pub struct ProxyHandle {
    registry: ProxyRegistry,
    key: u64,
}

impl ProxyHandle {
    /// The proxy applied `version`.
    pub fn ack(&self, version: u64) {
        if let Some(info) = self.registry.lock().get_mut(&self.key) {
            info.acked_version = Some(version);
        }
    }

    /// The proxy refused `version`.
    pub fn nack(&self, version: u64, reason: String) {
        if let Some(info) = self.registry.lock().get_mut(&self.key) {
            info.last_nack = Some(Nack { version, reason });
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_handles() {
        let registry = ProxyRegistry::default();
        let a = registry.register("b-proxy".into(), None);
        let b = registry.register("a-proxy".into(), Some("127.0.0.1:1".into()));
        a.ack(3);
        b.nack(4, "bad".into());
        let list = registry.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].proxy_id, "a-proxy");
        assert_eq!(list[0].last_nack, Some(Nack { version: 4, reason: "bad".into() }));
        assert_eq!(list[1].acked_version, Some(3));
        drop(a);
        assert_eq!(registry.len(), 1);
        drop(b);
        assert!(registry.is_empty());
    }
}
