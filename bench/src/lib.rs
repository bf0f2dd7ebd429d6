//! mcpgw benchmark harness: the fixture MCP upstream, the load generator (HTTP/1.1 client, closed and open
//! loops, SSE event timing, idle streams), `/proc` readings, and the orchestrator that runs the scenarios
//! of BENCHMARKS.md against the fixture directly, through mcpgw-proxy and through nginx.
#![forbid(unsafe_code)]

pub mod fixture;
pub mod http;
pub mod load;
pub mod orchestrate;
pub mod procfs;
pub mod report;
pub mod requests;
pub mod scenarios;
pub mod sse;
pub mod stats;

#[cfg(test)]
mod selftest;
