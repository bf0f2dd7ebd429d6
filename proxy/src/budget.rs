//! Global rate limits in a proxy: tokens of the limit's shared bucket are leased from the control plane
//! (which keeps the bucket in Redis) a chunk at a time and spent here, so a request waits for the network
//! only when its key has no tokens left. A chunk is about 50 ms of the limit's rate (at most 1/16 of its
//! burst, and at most `MAX_LEASE_TOKENS`); the next one is asked for when half of the current one is
//! spent, so a steady caller rarely waits. Tokens held by a proxy and not spent are the error of the
//! scheme: across N proxies a limit admits at most N chunks more, or fewer, than its quota. A lease
//! expires after two chunks' worth of time (at least 1 s, at most the limit's period), so held tokens do
//! not outlive their window.
//!
//! When no lease can be had (Redis or the control plane away) the caller learns `Unavailable` and the
//! limit's fail mode decides; leasing is retried at most once a second per key until it works again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpgw_proto::v1::LeaseRequest;
use tokio::sync::Notify;

use crate::rpc::ControlPlane;

/// Longest a request waits for tokens being leased.
const LEASE_WAIT: Duration = Duration::from_secs(1);
/// After a failed lease, how long a key answers `Unavailable` before leasing is tried again.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(1);
/// Most keys held; beyond it the keys with no tokens and no lease under way are forgotten.
const MAX_KEYS: usize = 100_000;

/// How a global limit leases: tokens per lease and how long they stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePlan {
    pub chunk: u32,
    pub ttl: Duration,
}

impl LeasePlan {
    /// The plan for `requests` per `per` with bursts of `burst`.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Self {
        let per_chunk_of_time = (f64::from(requests) * 0.05 / per.as_secs_f64()).ceil();
        // Never more than a lease may take: a limit of a million a second leases 10,000 at a time.
        let chunk = (per_chunk_of_time as u32).min(burst / 16).clamp(1, mcpgw_proto::MAX_LEASE_TOKENS);
        let interval = per / requests.max(1);
        let ttl = (interval * chunk * 2).max(Duration::from_secs(1)).min(per.max(Duration::from_secs(1)));
        Self { chunk, ttl }
    }
}

/// What taking a token of a global limit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Taken,
    /// The shared bucket is empty: one token is available again after this.
    Over(Duration),
    /// No lease could be had.
    Unavailable,
}

/// The leases of every global limit and key this proxy serves.
pub struct Budgets {
    control_plane: Arc<ControlPlane>,
    leases: Mutex<HashMap<LeaseKey, Arc<Lease>>>,
}

/// A limit's id and a bucket key within it.
type LeaseKey = (Arc<str>, String);

struct Lease {
    limit_id: Arc<str>,
    key: String,
    state: Mutex<State>,
    /// Woken when a lease answer arrives.
    answered: Notify,
}

#[derive(Default)]
struct State {
    tokens: u32,
    expires: Option<Instant>,
    leasing: bool,
    /// The bucket was empty: no lease is asked for before this.
    over_until: Option<Instant>,
    /// Leasing failed: `Unavailable` until this.
    unavailable_until: Option<Instant>,
}

impl State {
    fn idle(&self, now: Instant) -> bool {
        !self.leasing && (self.tokens == 0 || self.expires.is_none_or(|e| e <= now))
    }
}

impl Budgets {
    pub fn new(control_plane: Arc<ControlPlane>) -> Self {
        Self { control_plane, leases: Mutex::default() }
    }

    fn lease(&self, limit_id: &Arc<str>, key: String) -> Arc<Lease> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let map_key = (limit_id.clone(), key);
        if let Some(lease) = leases.get(&map_key) {
            return lease.clone();
        }
        if leases.len() >= MAX_KEYS {
            let now = Instant::now();
            leases.retain(|_, l| !l.state.lock().unwrap_or_else(|e| e.into_inner()).idle(now));
        }
        let lease = Arc::new(Lease {
            limit_id: limit_id.clone(),
            key: map_key.1.clone(),
            state: Mutex::default(),
            answered: Notify::new(),
        });
        leases.insert(map_key, lease.clone());
        lease
    }

    /// Takes one token of `limit_id`'s bucket for `key`.
    pub async fn take(&self, limit_id: &Arc<str>, key: String, plan: LeasePlan) -> Outcome {
        let lease = self.lease(limit_id, key);
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            let answered = lease.answered.notified();
            tokio::pin!(answered);
            {
                let mut state = lease.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if state.expires.is_some_and(|e| e <= now) {
                    state.tokens = 0;
                }
                if state.tokens > 0 {
                    state.tokens -= 1;
                    if state.tokens <= plan.chunk / 2 && !state.leasing {
                        self.ask(&lease, &mut state, plan);
                    }
                    return Outcome::Taken;
                }
                if let Some(until) = state.over_until.filter(|u| *u > now) {
                    return Outcome::Over(until - now);
                }
                if state.unavailable_until.is_some_and(|u| u > now) {
                    return Outcome::Unavailable;
                }
                if !state.leasing {
                    self.ask(&lease, &mut state, plan);
                }
                answered.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, answered).await.is_err() {
                let mut state = lease.state.lock().unwrap_or_else(|e| e.into_inner());
                state.unavailable_until = Some(Instant::now() + RETRY_UNAVAILABLE);
                return Outcome::Unavailable;
            }
        }
    }

    /// Asks for a chunk in the background; the answer lands in `state` and wakes the waiters.
    fn ask(&self, lease: &Arc<Lease>, state: &mut State, plan: LeasePlan) {
        state.leasing = true;
        let control_plane = self.control_plane.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            let request = control_plane.request(LeaseRequest {
                limit_id: lease.limit_id.to_string(),
                key: lease.key.clone(),
                tokens: plan.chunk,
            });
            let answer = control_plane.client().await.lease_budget(request).await;
            let mut state = lease.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match answer.map(tonic::Response::into_inner) {
                Ok(grant) if grant.granted > 0 => {
                    if state.expires.is_none_or(|e| e <= now) {
                        state.tokens = 0;
                    }
                    state.tokens = state.tokens.saturating_add(grant.granted);
                    state.expires = Some(now + plan.ttl);
                    state.over_until = None;
                    state.unavailable_until = None;
                }
                Ok(grant) => {
                    state.over_until = Some(now + Duration::from_millis(grant.retry_after_ms.max(1)));
                    state.unavailable_until = None;
                }
                Err(status) => {
                    tracing::warn!(limit = %lease.limit_id, code = ?status.code(), reason = status.message(),
                        "Cannot lease a global rate limit's budget; its fail mode applies.");
                    state.unavailable_until = Some(now + RETRY_UNAVAILABLE);
                }
            }
            state.leasing = false;
            drop(state);
            lease.answered.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_about_50_ms_of_the_rate_within_a_sixteenth_of_the_burst() {
        let plan = LeasePlan::new(2000, Duration::from_secs(10), 200);
        assert_eq!(plan, LeasePlan { chunk: 10, ttl: Duration::from_secs(1) });
        assert_eq!(LeasePlan::new(100_000, Duration::from_secs(1), 100_000).chunk, 5000);
        assert_eq!(
            LeasePlan::new(100_000, Duration::from_secs(1), 160).chunk,
            10,
            "a sixteenth of the burst"
        );
        let slow = LeasePlan::new(10, Duration::from_secs(3600), 10);
        assert_eq!(slow.chunk, 1);
        assert_eq!(slow.ttl, Duration::from_secs(720), "two tokens' worth of time");
        let huge = LeasePlan::new(1_000_000, Duration::from_secs(1), 1_000_000);
        assert_eq!(huge.chunk, mcpgw_proto::MAX_LEASE_TOKENS, "what the control plane grants at most");
        let tiny = LeasePlan::new(1, Duration::from_millis(10), 1);
        assert_eq!((tiny.chunk, tiny.ttl), (1, Duration::from_secs(1)), "at least a second");
    }
}
