//! mcpgw control plane: the server registry on PostgreSQL, the admin REST API and the routing stream to proxies.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod grpc;
pub mod hub;
pub mod model;
pub mod proxies;
pub mod serve;
pub mod telemetry;

pub use config::{Cli, Command, Config, validate};
pub use hub::RoutingHub;
