//! What every request handler works with: the gateway's long-lived parts — the routing table, the upstream
//! connection pool and limits, session keys, breakers and budgets, stream caps, authentication and the audit
//! queue. The registries of one transport or of `/mcp` stay with their modules (`crate::gateway::Gateway`
//! holds them beside this).

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::Breakers;
use crate::front::FrontDoor;
use crate::identity::AuthSettings;
use crate::retry::RetryBudget;
use crate::routing::Routes;
use crate::session::SessionKeys;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_body: usize,
    /// Total time a client has to send a request body.
    pub request_body_timeout: std::time::Duration,
    pub upstream_timeout: Duration,
    /// Longest time connecting to an upstream may take (transports that connect outside the pool).
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// A bridged session (`upstream::bridge`) without a message either way and no GET stream open ends.
    pub bridge_idle_timeout: Duration,
    /// A bridged session ends at the latest then: its session token's lifetime.
    pub bridge_lifetime: Duration,
}

pub struct Shared {
    pub routes: Arc<Routes>,
    pub pool: Arc<crate::upstream::pool::Pool>,
    pub limits: Limits,
    pub sessions: SessionKeys,
    pub breakers: Breakers,
    pub retry: RetryBudget,
    /// List requests of restricted callers awaiting their answer on a legacy SSE stream.
    pub pending_lists: Arc<crate::policy::PendingLists>,
    /// DNS-rebinding protection: the `Host` and `Origin` values served.
    pub front: FrontDoor,
    /// Who may call, and how refusals point clients at the protected resource metadata.
    pub auth: AuthSettings,
    /// Upstream tokens on behalf of callers (servers whose credential is `token_exchange`).
    pub exchanger: Arc<crate::exchange::Exchanger>,
    /// Rate-limit buckets, kept across routing tables.
    pub rate_limits: crate::limits::RateLimits,
    /// Caps on long-lived streams.
    pub streams: Arc<crate::caps::Caps>,
    /// Programs stdio servers may run (`--stdio-programs`; empty: none).
    pub stdio_programs: Arc<[String]>,
    /// The audit queue.
    pub auditor: crate::audit::Auditor,
    /// Resolves when the proxy drains (SIGTERM, after the grace period): long-lived streams end then.
    pub draining: crate::drain::Draining,
    /// Span export (`--otlp-endpoint`); `None`: traces are continued and propagated, not recorded.
    pub tracer: Option<Arc<crate::trace::Tracer>>,
}
