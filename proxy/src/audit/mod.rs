//! Audit records of MCP requests. One record per request through the MCP listener, made once when the
//! request ends (`Gateway::record`: answered, refused or forwarded, on any route), put on a bounded queue
//! without waiting, and shipped to the control plane in acknowledged batches by [`Shipper`], which spills
//! to disk while the control plane is away or slow (see ARCHITECTURE.md, "Audit").
//!
//! When the queue is full (the control plane and the spill both cannot take more), `--audit-overflow`
//! decides: `drop` counts and logs the lost record; `refuse` makes every audited request reserve its
//! place in the queue before it is served, and answers 503 `audit_unavailable` when there is none — so no
//! request is served whose record could not be kept.

pub mod capture;
mod shipper;
mod spill;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use shipper::Shipper;
pub use spill::Spill;

use crate::error::ProxyError;
use crate::metrics::METRICS;

/// What happens to a record when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overflow {
    /// The record is dropped, counted (`mcpgw_proxy_audit_records_total{result="dropped"}`) and logged.
    Drop,
    /// New MCP requests are refused with 503 `audit_unavailable` until the queue has room.
    Refuse,
}

/// Audit settings (flags `--audit`, `--audit-queue`, `--audit-spill-dir`, `--audit-spill-max`,
/// `--audit-overflow`).
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub enabled: bool,
    /// Records the queue holds.
    pub queue: usize,
    pub spill_dir: Option<PathBuf>,
    /// Bytes the spill may take on disk.
    pub spill_max: u64,
    pub overflow: Overflow,
}

/// The sending side of the audit queue, held by the gateway.
pub struct Auditor {
    tx: Option<mpsc::Sender<wire::Encoded>>,
    overflow: Overflow,
    /// Written into every record.
    proxy_id: String,
}

/// A request's place in the audit queue.
pub enum Slot {
    /// Not audited (audit off, or not an MCP request).
    None,
    /// Sent when the request ends, if the queue has room then (`--audit-overflow drop`).
    Later,
    /// A place reserved when the request began (`--audit-overflow refuse`).
    Reserved(mpsc::OwnedPermit<wire::Encoded>),
}

impl Auditor {
    /// The auditor and its shipper (none when audit is off); fails when the spill directory cannot be
    /// opened.
    pub fn new(
        settings: &AuditSettings,
        control_plane: Arc<crate::rpc::ControlPlane>,
        proxy_id: String,
    ) -> std::io::Result<(Self, Option<Shipper>)> {
        if !settings.enabled {
            return Ok((Self { tx: None, overflow: settings.overflow, proxy_id }, None));
        }
        let spill = match &settings.spill_dir {
            Some(dir) => Some(Spill::open(dir, settings.spill_max)?),
            None => {
                tracing::warn!(
                    "No --audit-spill-dir: while the control plane is away, audit records wait in memory only \
                     (lost if the proxy stops meanwhile). Set --audit-spill-dir in production."
                );
                None
            }
        };
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let shipper = Shipper::new(rx, spill, control_plane);
        Ok((Self { tx: Some(tx), overflow: settings.overflow, proxy_id }, Some(shipper)))
    }

    /// An auditor that records nothing.
    pub fn off() -> Self {
        Self { tx: None, overflow: Overflow::Drop, proxy_id: String::new() }
    }

    /// The proxy's id, as records carry it.
    pub fn proxy_id(&self) -> &str {
        &self.proxy_id
    }

    /// A place for the record of a request that is beginning; refused (503) when the queue is full and
    /// the overflow policy is `refuse`.
    pub fn admit(&self) -> Result<Slot, ProxyError> {
        let Some(tx) = &self.tx else { return Ok(Slot::None) };
        match self.overflow {
            Overflow::Drop => Ok(Slot::Later),
            Overflow::Refuse => match tx.clone().try_reserve_owned() {
                Ok(permit) => Ok(Slot::Reserved(permit)),
                Err(_) => {
                    METRICS.audit_records.with_label_values(&["refused"]).inc();
                    warn_overflow("refusing new MCP requests (503 audit_unavailable)");
                    Err(ProxyError::AuditUnavailable)
                }
            },
        }
    }

    /// Queues the record of a request that ended.
    pub fn submit(&self, slot: Slot, record: wire::Encoded) {
        match slot {
            Slot::None => {}
            Slot::Reserved(permit) => {
                permit.send(record);
                QUEUED.inc();
            }
            Slot::Later => {
                let Some(tx) = &self.tx else { return };
                match tx.try_send(record) {
                    Ok(()) => QUEUED.inc(),
                    Err(_) => {
                        METRICS.audit_records.with_label_values(&["dropped"]).inc();
                        warn_overflow("dropping records (--audit-overflow drop)");
                    }
                }
            }
        }
    }
}

/// `mcpgw_proxy_audit_records_total{result="queued"}`, counted per request: resolved once.
static QUEUED: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| METRICS.audit_records.with_label_values(&["queued"]));

/// Logs an overflow at most once every 10 seconds (it happens per request).
fn warn_overflow(action: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::error!(
            "The audit queue is full (the control plane and the spill cannot take more): {action}. See \
             mcpgw_proxy_audit_records_total."
        );
    }
}

/// A new record id: UUIDv7 (48-bit Unix milliseconds, version, 74 random bits), time-ordered like the
/// records. The random bits come from a per-thread generator seeded by the OS (one system call per thread,
/// not per record): ids only need to be unique, not unpredictable.
pub fn record_id(unix_ms: u64) -> [u8; 16] {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
                .expect("the OS random source works");
            u64::from_le_bytes(seed)
        });
    }
    // splitmix64: every call a new 64-bit value, a full period over the seed space.
    let next = || {
        STATE.with(|s| {
            let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    let (a, b) = (next(), next());
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    id[6..8].copy_from_slice(&a.to_le_bytes()[..2]);
    id[8..].copy_from_slice(&b.to_le_bytes());
    id[6] = 0x70 | (id[6] & 0x0f);
    id[8] = 0x80 | (id[8] & 0x3f);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_uuid_v7_and_ordered_by_time() {
        let a = record_id(1_700_000_000_000);
        let b = record_id(1_700_000_000_001);
        assert_eq!(a[6] >> 4, 7, "version 7");
        assert_eq!(a[8] >> 6, 0b10, "RFC 9562 variant");
        assert!(a < b);
        assert_ne!(record_id(5), record_id(5), "random bits differ");
    }

    #[tokio::test]
    async fn refuse_reserves_a_place_and_refuses_without_one() {
        let (tx, mut rx) = mpsc::channel(1);
        let auditor = Auditor { tx: Some(tx), overflow: Overflow::Refuse, proxy_id: String::new() };
        let slot = auditor.admit().expect("room for one");
        assert!(matches!(auditor.admit(), Err(ProxyError::AuditUnavailable)), "the one place is taken");
        auditor.submit(slot, wire::Encoded::from_static(b"tools/call"));
        assert_eq!(rx.recv().await.unwrap(), &b"tools/call"[..]);
        assert!(auditor.admit().is_ok(), "room again");
    }

    #[tokio::test]
    async fn drop_keeps_what_fits() {
        let (tx, mut rx) = mpsc::channel(1);
        let auditor = Auditor { tx: Some(tx), overflow: Overflow::Drop, proxy_id: String::new() };
        for record in [b"a", b"b"] {
            let slot = auditor.admit().unwrap();
            auditor.submit(slot, wire::Encoded::from_static(record));
        }
        assert_eq!(rx.recv().await.unwrap(), &b"a"[..]);
        assert!(rx.try_recv().is_err(), "the second record did not fit");
    }
}
