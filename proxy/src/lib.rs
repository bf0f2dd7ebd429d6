//! mcpgw data plane: a Pingora proxy that forwards MCP traffic to the upstream servers of a routing table
//! streamed from the control plane.
// No unsafe code but the one call into the C allocator (`memory::trim`, allowed there alone).
#![deny(unsafe_code)]

pub mod admin;
pub mod aggregate;
pub mod audit;
pub mod balance;
pub mod breaker;
pub mod budget;
pub mod caps;
pub mod config;
pub mod connections;
pub mod deadline;
pub mod downstream;
pub mod drain;
pub mod error;
pub mod exchange;
pub mod framing;
pub mod front;
pub mod gateway;
pub mod headers;
pub mod identity;
pub mod jsonrpc;
pub mod limits;
pub mod memory;
pub mod metrics;
#[cfg(test)]
mod module_graph;
pub mod policy;
pub mod request;
pub mod retry;
pub mod route;
pub mod routing;
pub mod rpc;
pub mod server;
pub mod session;
pub mod shared;
pub mod sse;
pub mod trace;
pub mod transport;
pub mod upstream;
