//! The registry's domain types: validated registrations (`spec`), stored rows and their JSON (`rows`), and
//! the routing resources a server contributes (`routing`).

mod health;
mod routing;
mod rows;
mod spec;

pub use health::{
    HealthCheck, HealthCheckSpec, HealthIndex, HealthRecord, HealthStatus, InstanceHealthRow, PassiveRow,
};
pub use routing::resources;
pub use rows::{InstanceRow, InstanceView, ServerRow, ServerView};
pub use spec::{
    CircuitBreaker, InstanceSpec, LoadBalancing, MAX_INSTANCES, MAX_WEIGHT, ServerSpec, TransportType,
};
