//! The registry's domain types: validated registrations (`spec`), stored rows and their JSON (`rows`), and
//! the routing resources a server contributes (`routing`), and API keys (`api_key`).

mod api_key;
mod health;
mod routing;
mod rows;
mod spec;

pub use api_key::{
    ADMIN_ROLE, ApiKeyRow, ApiKeySpec, ApiKeyView, CreatedApiKey, DEFAULT_ROLE, DEFAULT_TENANT, NewKey,
    PermissionRule,
};
pub use health::{
    HealthCheck, HealthCheckSpec, HealthIndex, HealthRecord, HealthStatus, InstanceHealthRow, PassiveRow,
};
pub use routing::resources;
pub use rows::{InstanceRow, InstanceView, ServerRow, ServerView};
pub use spec::{
    CircuitBreaker, InstanceSpec, LoadBalancing, MAX_INSTANCES, MAX_WEIGHT, ServerSpec, TransportType,
};
