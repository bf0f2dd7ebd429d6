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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProxyInfo {
    pub proxy_id: String,
    /// Remote address of the stream, when known.
    pub peer: Option<String>,
    pub connected_at: DateTime<Utc>,
    /// Last version the proxy applied, or null before its first Ack.
    pub acked_version: Option<u64>,
    /// Last update the proxy refused, or null.
    pub last_nack: Option<Nack>,
    /// The proxy's last traffic report (every 5 s), or null before its first.
    pub traffic: Option<Traffic>,
}

/// A proxy's traffic as it last reported it, with rates between its last two reports.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Traffic {
    pub reported_at: DateTime<Utc>,
    /// MCP requests answered since the proxy started, and of them those answered 4xx and 5xx.
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// SSE responses being streamed and client connections open, at the report.
    pub open_streams: u64,
    pub open_connections: u64,
    /// Per second between the last two reports; null after the first.
    pub requests_per_second: Option<f64>,
    /// 4xx and 5xx answers per second between the last two reports; null after the first.
    pub errors_per_second: Option<f64>,
}

impl Traffic {
    /// The report `stats` received at `now`, following `previous` of the same stream.
    pub fn next(previous: Option<&Traffic>, stats: &mcpgw_proto::v1::ProxyStats, now: DateTime<Utc>) -> Self {
        let errors = |t: &Traffic| t.client_errors + t.server_errors;
        let mut traffic = Traffic {
            reported_at: now,
            requests: stats.requests,
            client_errors: stats.client_errors,
            server_errors: stats.server_errors,
            open_streams: stats.open_streams,
            open_connections: stats.open_connections,
            requests_per_second: None,
            errors_per_second: None,
        };
        if let Some(before) = previous {
            let seconds = (now - before.reported_at).num_milliseconds() as f64 / 1000.0;
            // Counters only grow on one proxy process; a smaller one is a restarted proxy: no rate yet.
            if seconds > 0.0 && traffic.requests >= before.requests && errors(&traffic) >= errors(before) {
                traffic.requests_per_second = Some((traffic.requests - before.requests) as f64 / seconds);
                traffic.errors_per_second = Some((errors(&traffic) - errors(before)) as f64 / seconds);
            }
        }
        traffic
    }
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
        let info = ProxyInfo {
            proxy_id,
            peer,
            connected_at: Utc::now(),
            acked_version: None,
            last_nack: None,
            traffic: None,
        };
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

    /// The proxy reported its traffic.
    pub fn stats(&self, stats: &mcpgw_proto::v1::ProxyStats) {
        if let Some(info) = self.registry.lock().get_mut(&self.key) {
            info.traffic = Some(Traffic::next(info.traffic.as_ref(), stats, Utc::now()));
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

    #[test]
    fn traffic_rates_come_from_two_reports_in_a_row() {
        use mcpgw_proto::v1::ProxyStats;
        let t0 = Utc::now();
        let first =
            Traffic::next(None, &ProxyStats { requests: 100, client_errors: 4, ..Default::default() }, t0);
        assert_eq!((first.requests_per_second, first.errors_per_second), (None, None));
        let later = ProxyStats {
            requests: 600,
            client_errors: 9,
            server_errors: 5,
            open_streams: 3,
            open_connections: 7,
        };
        let second = Traffic::next(Some(&first), &later, t0 + chrono::Duration::seconds(5));
        assert_eq!(second.requests_per_second, Some(100.0));
        assert_eq!(second.errors_per_second, Some(2.0));
        assert_eq!((second.open_streams, second.open_connections), (3, 7));
        // A restarted proxy counts from zero again: no rate for that report.
        let restarted = Traffic::next(
            Some(&second),
            &ProxyStats { requests: 2, ..Default::default() },
            t0 + chrono::Duration::seconds(10),
        );
        assert_eq!(restarted.requests_per_second, None);
    }
}
