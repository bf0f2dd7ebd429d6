//! mcpgw control plane: the server registry on PostgreSQL, the admin REST API and the routing stream to proxies.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod budgets;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod discovery;
pub mod expiry;
pub mod grpc;
pub mod health;
pub mod hub;
pub mod jwks;
pub mod kube;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod oauth;
pub mod passive;
pub mod proxies;
pub mod secrets;
pub mod serve;
pub mod ssrf;
pub mod telemetry;
pub mod upstream_tokens;

pub use config::{Cli, Command, Config, validate};
pub use hub::RoutingHub;
