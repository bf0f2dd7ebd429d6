//! Proxy integration tests: the real `mcpgw-proxy` binary between a fake control plane (pushes routes,
//! records acknowledgements) and fake upstreams (record what arrives, answer as told).

#[path = "integration/support.rs"]
mod support;

#[path = "integration/aggregation.rs"]
mod aggregation;
#[path = "integration/audit.rs"]
mod audit;
#[path = "integration/balancing.rs"]
mod balancing;
#[path = "integration/draining.rs"]
mod draining;
#[path = "integration/forwarding.rs"]
mod forwarding;
#[path = "integration/identity.rs"]
mod identity;
#[path = "integration/policy.rs"]
mod policy;
#[path = "integration/routing.rs"]
mod routing;
#[path = "integration/sessions.rs"]
mod sessions;
#[path = "integration/transports.rs"]
mod transports;
