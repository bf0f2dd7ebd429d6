//! Wire contracts shared by the mcpgw control plane and proxy: the routing stream and the rules both sides
//! check (server names, endpoint URLs, how a table is built from snapshots and deltas).
#![forbid(unsafe_code)]

pub mod config_file;
pub mod logs;
pub mod otlp;
pub mod probe;
pub mod resources;
pub mod ssrf;
pub mod stdio;
pub mod tls;
pub mod validate;

/// Generated protobuf and gRPC code for `mcpgw.routing.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("mcpgw.routing.v1");
}

pub use resources::{ApplyError, ResourceKey, ResourceSet};

/// Most tokens of a global rate limit one `Lease` may ask for (the control plane refuses more).
pub const MAX_LEASE_TOKENS: u32 = 10_000;
