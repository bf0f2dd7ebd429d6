//! Instance selection for one server: the five balancing policies, each skipping instances that are
//! unhealthy (active checks) or ejected (circuit breaker), with one admission per pick so a half-open
//! breaker lets exactly one probe through.
//!
//! Why not pingora-load-balancing: its backends are keyed by socket address (two instances on one host
//! with different paths would merge), it has no least-connections policy, and its health is its own
//! checker's; here health comes from the control plane and the breakers, read with one atomic load per
//! candidate.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use mcpgw_proto::v1::{HealthStatus, LoadBalancing};
use mcpgw_proto::validate::HashKey;

use crate::routing::Instance;

/// Longest precomputed weighted schedule; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u32 = 4096;

/// How a server spreads new work (sessions, stateless requests) over its instances.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    RoundRobin,
    /// Smooth weighted round robin over a precomputed schedule of instance indices.
    Weighted {
        schedule: Vec<u16>,
    },
    LeastConnections,
    /// Power of two random choices, weighted.
    Random,
    /// Weighted rendezvous hashing of the key: an instance's share moves only when it comes or goes.
    ConsistentHash {
        key: HashKey,
    },
}

impl Policy {
    pub fn new(kind: LoadBalancing, key: HashKey, weights: &[u32]) -> Self {
        match kind {
            LoadBalancing::Unspecified | LoadBalancing::RoundRobin => Self::RoundRobin,
            LoadBalancing::Weighted => Self::Weighted { schedule: smooth_schedule(weights) },
            LoadBalancing::LeastConnections => Self::LeastConnections,
            LoadBalancing::Random => Self::Random,
            LoadBalancing::ConsistentHash => Self::ConsistentHash { key },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted { .. } => "weighted",
            Self::LeastConnections => "least_connections",
            Self::Random => "random",
            Self::ConsistentHash { .. } => "consistent_hash",
        }
    }
}

/// nginx's smooth weighted round robin, unrolled once over the weight sum.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let sum: u64 = weights.iter().map(|w| u64::from((*w).max(1))).sum();
    let scale = if sum > u64::from(MAX_SCHEDULE) { sum as f64 / f64::from(MAX_SCHEDULE) } else { 1.0 };
    let weights: Vec<i64> =
        weights.iter().map(|w| ((f64::from((*w).max(1)) / scale).round() as i64).max(1)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            best as u16
        })
        .collect()
}

const GATE_CLOSED: u8 = 0;
const GATE_OPEN: u8 = 1;
const GATE_HALF_OPEN: u8 = 2;
const GATE_PROBING: u8 = 3;

/// Live state of one instance shared by every table that contains it: the request path reads it, the
/// breaker service writes the gate.
#[derive(Debug, Default)]
pub struct InstanceState {
    /// Requests in flight to this instance from this proxy.
    pub active: AtomicU32,
    gate: AtomicU8,
    /// Successful requests so far. Successes are counted here rather than sent to the breaker service,
    /// so the common path never wakes it; the service reads the count when a failure arrives.
    pub successes: AtomicU64,
    /// Consecutive failures as the breaker service last saw them (0: a success needs no report).
    pub streak: AtomicU32,
}

/// Breaker position as the request path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    Open,
    /// Waiting for its probe (or probing).
    HalfOpen,
}

impl InstanceState {
    pub fn gate(&self) -> Gate {
        match self.gate.load(Ordering::Acquire) {
            GATE_CLOSED => Gate::Closed,
            GATE_OPEN => Gate::Open,
            _ => Gate::HalfOpen,
        }
    }

    /// Set by the breaker service only.
    pub fn set_gate(&self, gate: Gate) {
        let v = match gate {
            Gate::Closed => GATE_CLOSED,
            Gate::Open => GATE_OPEN,
            Gate::HalfOpen => GATE_HALF_OPEN,
        };
        self.gate.store(v, Ordering::Release);
    }

    /// Whether a request may go to this instance now; a half-open instance admits one probe.
    fn admit(&self) -> bool {
        match self.gate.load(Ordering::Acquire) {
            GATE_CLOSED => true,
            GATE_HALF_OPEN => self
                .gate
                .compare_exchange(GATE_HALF_OPEN, GATE_PROBING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            _ => false,
        }
    }

    /// Would take traffic (ignoring the one-probe rule); for reporting and session checks.
    pub fn usable(&self) -> bool {
        self.gate.load(Ordering::Acquire) != GATE_OPEN
    }
}

/// Counts a request in flight on an instance until dropped.
pub struct InFlight(Arc<Instance>);

impl InFlight {
    pub fn new(instance: Arc<Instance>) -> Self {
        instance.state.active.fetch_add(1, Ordering::Relaxed);
        Self(instance)
    }

    pub fn instance(&self) -> &Arc<Instance> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish() | 1);
}

/// xorshift64*: cheap per-thread randomness for P2C.
fn random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// FNV-1a, then a finaliser: stable across processes and builds, so every replica hashes alike.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// A server's instances with its policy; `pick` returns an admitted instance not in `tried`.
pub struct Selector<'a> {
    pub policy: &'a Policy,
    pub instances: &'a [Arc<Instance>],
    pub cursor: &'a AtomicUsize,
}

impl Selector<'_> {
    fn candidate(&self, i: usize, tried: &[usize]) -> bool {
        let inst = &self.instances[i];
        !tried.contains(&i) && inst.health != HealthStatus::Unhealthy && inst.state.admit()
    }

    fn eligible(&self, i: usize, tried: &[usize]) -> bool {
        let inst = &self.instances[i];
        !tried.contains(&i) && inst.health != HealthStatus::Unhealthy && inst.state.gate() != Gate::Open
    }

    fn load(&self, i: usize) -> f64 {
        let inst = &self.instances[i];
        f64::from(inst.state.active.load(Ordering::Relaxed) + 1) / f64::from(inst.weight.max(1))
    }

    /// Picks an instance index; `hash_input` is the consistent-hash key of this request.
    pub fn pick(&self, hash_input: &[u8], tried: &[usize]) -> Option<usize> {
        let n = self.instances.len();
        if n == 0 {
            return None;
        }
        match self.policy {
            Policy::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| self.candidate(i, tried))
            }
            Policy::Weighted { schedule } => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                let len = schedule.len().max(1);
                (0..len)
                    .map(|k| usize::from(schedule[(start + k) % len]))
                    .find(|&i| i < n && self.candidate(i, tried))
                    .or_else(|| self.fallback(tried))
            }
            Policy::LeastConnections => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                self.best_first(tried, |i| (self.load(i), (i + n - start % n) % n))
            }
            Policy::Random => {
                // Two weighted draws among eligible instances, without allocating.
                let weight = |i: usize| u64::from(self.instances[i].weight.max(1));
                let total: u64 = (0..n).filter(|&i| self.eligible(i, tried)).map(weight).sum();
                if total == 0 {
                    return self.fallback(tried);
                }
                let draw = || {
                    let mut r = random() % total;
                    for i in (0..n).filter(|&i| self.eligible(i, tried)) {
                        if r < weight(i) {
                            return i;
                        }
                        r -= weight(i);
                    }
                    0
                };
                let (a, b) = (draw(), draw());
                // Weights already shaped the draws; compare plain in-flight counts.
                let active = |i: usize| self.instances[i].state.active.load(Ordering::Relaxed);
                let first = if active(b) < active(a) { b } else { a };
                if self.candidate(first, tried) {
                    return Some(first);
                }
                self.best_first(tried, |i| (self.load(i), 0))
            }
            Policy::ConsistentHash { .. } => self.best_first(tried, |i| {
                let inst = &self.instances[i];
                let h = stable_hash(&[hash_input, inst.id.as_bytes()]);
                let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
                // Weighted rendezvous: the highest weight / -ln(u) wins; negate to sort ascending.
                (-(f64::from(inst.weight.max(1)) / -(unit.max(f64::MIN_POSITIVE)).ln()), 0)
            }),
        }
    }

    /// Tries eligible instances from the lowest `rank` up: one pass for the usual case where the best
    /// admits the request, a sort only when it does not.
    fn best_first(&self, tried: &[usize], rank: impl Fn(usize) -> (f64, usize)) -> Option<usize> {
        let key = |i: usize| {
            let (a, b) = rank(i);
            (a, b, i)
        };
        let cmp = |x: &(f64, usize, usize), y: &(f64, usize, usize)| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
        let best = (0..self.instances.len()).filter(|&i| self.eligible(i, tried)).map(key).min_by(cmp)?;
        if self.candidate(best.2, tried) {
            return Some(best.2);
        }
        let mut order: Vec<_> =
            (0..self.instances.len()).filter(|&i| self.eligible(i, tried)).map(key).collect();
        order.sort_by(cmp);
        order.into_iter().map(|(_, _, i)| i).find(|&i| self.candidate(i, tried))
    }

    fn fallback(&self, tried: &[usize]) -> Option<usize> {
        (0..self.instances.len()).find(|&i| self.candidate(i, tried))
    }
}
