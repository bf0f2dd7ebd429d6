//! End-to-end tests: the control plane and the proxy as real processes, between real MCP clients and
//! servers (tests/peers) and small fakes. One binary, one module per feature.
//!
//! Needs `cargo build --workspace --bins` and `tests/peers/install.sh` first; `scripts/test.sh` does both.
//! Logs of every process land in `target/e2e-logs/<test>/`, and a failing test prints their tails.

mod aggregation;
mod audit;
mod authz;
mod balancing;
mod bodies;
mod cancellation;
mod conformance;
mod console;
mod deploy;
mod discovery;
mod eras;
mod errors;
mod failover;
mod faults;
mod headers;
mod health;
mod identity;
mod kubernetes;
mod modern;
mod oauth;
mod passthrough;
mod peers;
mod progress;
mod registry;
mod replicas;
mod routing;
mod streams;
mod tls;
mod tokens;
mod tracing;
mod transparency;
mod transports;

use serde_json::Value;

/// Tool names of a `py_client list-tools` document or a `tools/list` result.
pub fn tool_names(doc: &Value) -> Vec<String> {
    doc.get("tools")
        .and_then(Value::as_array)
        .map(|tools| tools.iter().filter_map(|t| t.get("name")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Text of the first content block of a tool result (`{"content":[{"type":"text","text":..}]}`).
pub fn first_text(result: &Value) -> Option<&str> {
    result.get("content")?.get(0)?.get("text")?.as_str()
}
