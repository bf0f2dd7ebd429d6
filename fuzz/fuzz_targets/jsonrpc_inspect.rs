//! `Rpc::inspect`, the proxy's one look at a client's JSON-RPC body (method, id, target name, protocol
//! version, batch). Besides "no panic", what it reports must agree with a full parse of the same body by
//! `serde_json::Value`: the gateway decides on these fields and the upstream acts on the body, so any
//! disagreement is a way to route or authorize one thing and run another.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::jsonrpc::{Reference, Rpc};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some(rpc) = Rpc::inspect(data) else { return };
    // Never panics on anything it accepted, and labels stay bounded.
    let _ = rpc.error_id();
    let _ = rpc.method_label();
    // Skipped values are not parsed as numbers, so `1e400` or deep nesting somewhere the gateway does not
    // look passes it but not a full parse: nothing to compare then.
    let Ok(full) = serde_json::from_slice::<Value>(data) else { return };
    match rpc {
        Rpc::Batch => assert!(full.is_array(), "a batch is a JSON array"),
        Rpc::Response { id } => {
            assert_eq!(full.get("jsonrpc"), Some(&Value::from("2.0")));
            assert!(full.get("method").is_none_or(Value::is_null), "a response has no method");
            assert_eq!(full.get("id"), Some(&id), "response id");
        }
        Rpc::Message { id, method, name, protocol_version, reference, client_capabilities } => {
            assert_eq!(full.get("jsonrpc"), Some(&Value::from("2.0")));
            assert_eq!(full.get("method").and_then(Value::as_str), Some(method.as_str()), "method");
            // `"id": null` and no id both read as a notification.
            assert_eq!(id.as_ref(), full.get("id").filter(|v| !v.is_null()), "id");
            let params = full.get("params").and_then(Value::as_object);
            let text = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_str);
            let expected_name = if method == "completion/complete" {
                let r = params.and_then(|p| p.get("ref")).and_then(Value::as_object);
                let field = |key: &str| r.and_then(|r| r.get(key)).and_then(Value::as_str);
                match field("type") {
                    Some("ref/prompt") => {
                        assert_eq!(reference, Some(Reference::Prompt));
                        field("name")
                    }
                    Some("ref/resource") => {
                        assert_eq!(reference, Some(Reference::Resource));
                        field("uri")
                    }
                    _ => {
                        assert_eq!(reference, None);
                        None
                    }
                }
            } else if method.starts_with("resources/") {
                text("uri")
            } else {
                text("name").or(text("uri"))
            };
            assert_eq!(name.as_deref(), expected_name, "target name of {method}");
            let meta = |key: &str| params.and_then(|p| p.get("_meta")).and_then(|m| m.get(key));
            let version = meta("io.modelcontextprotocol/protocolVersion").and_then(Value::as_str);
            assert_eq!(protocol_version.as_deref(), version, "protocol version");
            let capabilities = meta("io.modelcontextprotocol/clientCapabilities").is_some_and(Value::is_object);
            assert_eq!(client_capabilities, capabilities, "client capabilities declared");
        }
    }
});
