//! Integration tests of the control plane against a real PostgreSQL: one binary, one module per feature.
//! Each test gets its own database, created and migrated by the crate's own bootstrap code, dropped at the end.

#[path = "integration/support.rs"]
mod support;

#[path = "integration/admin_audit.rs"]
mod admin_audit;
#[path = "integration/aggregation.rs"]
mod aggregation;
#[path = "integration/api_keys.rs"]
mod api_keys;
#[path = "integration/audit.rs"]
mod audit;
#[path = "integration/bootstrap.rs"]
mod bootstrap;
#[path = "integration/console.rs"]
mod console;
#[path = "integration/discovery.rs"]
mod discovery;
#[path = "integration/fake_idp.rs"]
mod fake_idp;
#[path = "integration/fake_mcp.rs"]
mod fake_mcp;
#[path = "integration/grpc.rs"]
mod grpc;
#[path = "integration/health.rs"]
mod health;
#[path = "integration/health_checks.rs"]
mod health_checks;
#[path = "integration/instances.rs"]
mod instances;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/owners.rs"]
mod owners;
#[path = "integration/registry.rs"]
mod registry;
#[path = "integration/rest_auth.rs"]
mod rest_auth;
#[path = "integration/servers.rs"]
mod servers;
#[path = "integration/signing_keys.rs"]
mod signing_keys;
#[path = "integration/tenants.rs"]
mod tenants;
#[path = "integration/transports.rs"]
mod transports;
#[path = "integration/trusted_issuers.rs"]
mod trusted_issuers;
#[path = "integration/upstream_auth.rs"]
mod upstream_auth;
#[path = "integration/validation.rs"]
mod validation;
