//! The registry's domain types: validated registrations (`spec`), stored rows and their JSON (`rows`), and
//! the routing resources a server contributes (`routing`) and its discovered catalog (`catalog`), API keys
//! (`api_key`), trusted issuers (`trusted_issuer`), upstream credentials (`upstream_auth`) and stdio
//! servers' commands (`stdio`).

mod api_key;
mod catalog;
mod health;
mod routing;
mod rows;
mod spec;
mod stdio;
mod trusted_issuer;
mod upstream_auth;

pub use api_key::{
    ADMIN_ROLE, ApiKeyRow, ApiKeySpec, ApiKeyView, CreatedApiKey, DEFAULT_ROLE, DEFAULT_TENANT, NewKey,
    PermissionRule,
};
pub use catalog::{CatalogCache, CatalogContent, MAX_CATALOG_BYTES, StoredCatalog, catalog_resource};
pub use health::{
    HealthCheck, HealthCheckSpec, HealthIndex, HealthRecord, HealthStatus, InstanceHealthRow, PassiveRow,
};
pub use routing::resources;
pub use rows::{InstanceRow, InstanceView, ServerRow, ServerView};
pub use spec::{
    AuditArguments, CircuitBreaker, InstanceSpec, LoadBalancing, MAX_INSTANCES, MAX_WEIGHT, NamePrefix,
    PRIORITY_RANGE, ServerSpec, TransportType,
};
pub use stdio::{CommandSpec, CommandView, MAX_ARGS, MAX_ENV, MAX_ITEM_BYTES, STDIO_ENV, StoredCommand};
pub use trusted_issuer::{
    ClaimsView, DEFAULT_ALGORITHMS, DEFAULT_GROUPS_CLAIM, DEFAULT_ROLES_CLAIM, DEFAULT_SUBJECT_CLAIM,
    KeyView, TrustedIssuerRow, TrustedIssuerSpec, TrustedIssuerView, own_issuer_resource,
};
pub use upstream_auth::{
    CLIENT_CREDENTIALS, CredentialError, CredentialIndex, CredentialRow, Owner, RESERVED_HEADERS,
    STATIC_HEADER, SecretInput, TOKEN_EXCHANGE, UpstreamAuthSpec, UpstreamAuthView, UpstreamTokenRow,
    token_context,
};
