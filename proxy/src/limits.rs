//! Rate limits. A local limit is one token bucket per limit and key in each proxy (GCRA: one "theoretical
//! arrival time" per key, no timer), kept across routing tables while the limit's quota is unchanged. A
//! global limit is one bucket per key shared by every proxy, spent from leases (`crate::budget`); while
//! no lease can be had, its fail mode decides: open falls back to the local bucket, closed refuses. A
//! request over a limit gets 429 with `Retry-After` before it reaches the upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpgw_proto::v1;

use crate::budget::{Budgets, LeasePlan, Outcome};
use crate::identity::{Principal, PrincipalKind};
use crate::policy::Glob;

/// Most keys one limit tracks; beyond it the keys whose buckets are full again are forgotten.
const MAX_KEYS: usize = 100_000;

/// What a limit counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    User,
    ApiKey,
    Server,
    Tool,
}

/// One limit of the routing table.
#[derive(Debug, Clone)]
pub struct LimitRule {
    pub id: Arc<str>,
    tenant: Arc<str>,
    scope: Scope,
    server: Option<Glob>,
    tool: Option<Glob>,
    quota: Quota,
    /// A global limit: how it leases, and whether it falls back to the local bucket (fail open).
    global: Option<(LeasePlan, FailMode)>,
}

/// What a global limit does while no lease can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Each proxy enforces the limit on its own.
    Open,
    /// The limit's requests are refused (503).
    Closed,
}

impl FailMode {
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// Why a request was refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the limit: one more request is allowed after this.
    Over(Duration),
    /// A global limit that fails closed could not lease its budget.
    Unavailable,
}

/// `requests` per `per`, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Time one request "costs".
    interval: Duration,
    burst: u32,
}

impl LimitRule {
    /// The rule of a `RateLimit` resource; `None` for a scope or quota this proxy cannot enforce.
    pub fn from_proto(l: &v1::RateLimit) -> Option<Self> {
        let scope = match l.scope.as_str() {
            "tenant" => Scope::Tenant,
            "user" => Scope::User,
            "api_key" => Scope::ApiKey,
            "server" => Scope::Server,
            "tool" => Scope::Tool,
            _ => return None,
        };
        if l.requests == 0 || l.per_ms == 0 {
            return None;
        }
        let glob = |g: &str| (!g.is_empty()).then(|| Glob::new(g));
        let tenant =
            if l.tenant_id.is_empty() { crate::identity::DEFAULT_TENANT } else { l.tenant_id.as_str() };
        Some(Self {
            id: Arc::from(l.id.as_str()),
            tenant: Arc::from(tenant),
            scope,
            server: glob(&l.server),
            tool: glob(&l.tool),
            quota: Quota { interval: Duration::from_millis(l.per_ms) / l.requests, burst: l.burst.max(1) },
            global: l.global.then(|| {
                let plan = LeasePlan::new(l.requests, Duration::from_millis(l.per_ms), l.burst.max(1));
                (plan, if l.fail_open { FailMode::Open } else { FailMode::Closed })
            }),
        })
    }

    /// The bucket key of a request, or `None` when the limit does not apply to it.
    pub fn key(&self, p: &Principal, server: &str, tool: Option<&str>) -> Option<String> {
        if *p.tenant != *self.tenant
            || self.server.as_ref().is_some_and(|g| !g.matches(server))
            || self.tool.as_ref().is_some_and(|g| !tool.is_some_and(|t| g.matches(t)))
        {
            return None;
        }
        match self.scope {
            Scope::Tenant => Some(String::new()),
            Scope::User => Some(p.binding().to_string()),
            Scope::ApiKey => matches!(p.kind, PrincipalKind::ApiKey { .. }).then(|| p.binding().to_string()),
            Scope::Server => Some(server.to_owned()),
            Scope::Tool => tool.map(|t| format!("{server}\u{0}{t}")),
        }
    }
}

/// The buckets of one limit.
#[derive(Debug)]
pub struct Limiter {
    quota: Quota,
    /// Per key: the time at which its bucket is full again (GCRA's theoretical arrival time).
    buckets: Mutex<HashMap<String, Instant>>,
}

impl Limiter {
    fn new(quota: Quota) -> Self {
        Self { quota, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request for `key` at `now`; `Err(wait)` when over the limit.
    pub fn check(&self, key: String, now: Instant) -> Result<(), Duration> {
        let tolerance = self.quota.interval * (self.quota.burst - 1);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, tat| *tat > now);
        }
        let tat = buckets.get(&key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(tolerance).unwrap_or(now);
        if now < allowed_from {
            return Err(allowed_from - now);
        }
        buckets.insert(key, tat + self.quota.interval);
        Ok(())
    }
}

/// Every limit's buckets, kept across routing tables (a limit whose quota changed starts over), and the
/// leases of the global ones.
pub struct RateLimits {
    limiters: Mutex<HashMap<Arc<str>, Arc<Limiter>>>,
    budgets: Budgets,
}

impl RateLimits {
    /// Limits whose global budgets are leased from `control_plane`.
    pub fn new(control_plane: Arc<crate::rpc::ControlPlane>) -> Self {
        Self { limiters: Mutex::default(), budgets: Budgets::new(control_plane) }
    }

    /// Takes one request of `rule` for `key`.
    pub async fn take(&self, rule: &LimitRule, key: String) -> Result<(), Refusal> {
        let Some((plan, fail_mode)) = rule.global else {
            return self.limiter(rule).check(key, Instant::now()).map_err(Refusal::Over);
        };
        // The fallback bucket is keyed like the shared one.
        let fallback = (fail_mode == FailMode::Open).then(|| key.clone());
        match self.budgets.take(&rule.id, key, plan).await {
            Outcome::Taken => Ok(()),
            Outcome::Over(wait) => Err(Refusal::Over(wait)),
            Outcome::Unavailable => {
                crate::metrics::METRICS
                    .rate_limit_unavailable
                    .with_label_values(&[&rule.id, fail_mode.label()])
                    .inc();
                match fallback {
                    Some(key) => self.limiter(rule).check(key, Instant::now()).map_err(Refusal::Over),
                    None => Err(Refusal::Unavailable),
                }
            }
        }
    }

    /// The buckets of `rule`.
    pub fn limiter(&self, rule: &LimitRule) -> Arc<Limiter> {
        let mut all = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(&rule.id) {
            Some(l) if l.quota == rule.quota => l.clone(),
            _ => {
                let l = Arc::new(Limiter::new(rule.quota));
                all.insert(rule.id.clone(), l.clone());
                l
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_the_burst_then_one_per_interval() {
        let limiter = Limiter::new(Quota { interval: Duration::from_secs(1), burst: 3 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a".into(), t0).is_ok());
        }
        let wait = limiter.check("a".into(), t0).expect_err("over the burst");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(limiter.check("b".into(), t0).is_ok(), "another key has its own bucket");
        assert!(limiter.check("a".into(), t0 + Duration::from_secs(1)).is_ok(), "one more after an interval");
        assert!(limiter.check("a".into(), t0 + Duration::from_secs(1)).is_err());
    }
}
