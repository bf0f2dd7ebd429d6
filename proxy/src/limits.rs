//! Rate limits, local to each proxy: one token bucket per limit and key (GCRA: one "theoretical arrival
//! time" per key, no timer), kept across routing tables while the limit's quota is unchanged. A request
//! over a limit gets 429 with `Retry-After` before it reaches the upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpgw_proto::v1;

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

/// Every limit's buckets, kept across routing tables (a limit whose quota changed starts over).
#[derive(Debug, Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Arc<str>, Arc<Limiter>>>,
}

impl RateLimits {
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
