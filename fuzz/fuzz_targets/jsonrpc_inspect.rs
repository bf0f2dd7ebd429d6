//! `Rpc::inspect`, the proxy's one look at a client's JSON-RPC body (method, id, target name, protocol
//! version, batch). Besides "no panic", what it reports must agree with a full parse of the same body by
//! `serde_json::Value`: the gateway decides on these fields and the upstream acts on the body, so any
//! disagreement is a way to route or authorize one thing and run another. And it must not refuse what a
//! full parse reads as a message: the body written back by serde_json (no repeated keys, no odd spacing or
//! escapes) is read, and read alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::jsonrpc::{Reference, Rpc};
use serde_json::Value;

/// Whether a full parse reads `full` as a batch or a message the gateway can decide on.
fn a_message(full: &Value) -> bool {
    let Some(object) = full.as_object() else { return full.is_array() };
    let method = object.get("method").filter(|m| !m.is_null());
    object.get("jsonrpc") == Some(&Value::from("2.0"))
        && method.is_none_or(Value::is_string)
        && object.get("params").is_none_or(|p| p.is_null() || p.is_object() || p.is_array())
        && (method.is_some() || object.get("id").is_some_and(|id| !id.is_null()))
}

fn id_of(rpc: &Rpc) -> Option<&Value> {
    match rpc {
        Rpc::Message { id, .. } => id.as_ref(),
        Rpc::Response { id } => Some(id),
        Rpc::Batch => None,
    }
}

/// `rpc` with its id (if any) made `null`.
fn without_id(mut rpc: Rpc) -> Rpc {
    match &mut rpc {
        Rpc::Message { id: Some(id), .. } | Rpc::Response { id } => *id = Value::Null,
        _ => {}
    }
    rpc
}

fuzz_target!(|data: &[u8]| {
    let rpc = Rpc::inspect(data);
    if let Some(rpc) = &rpc {
        // Never panics on anything it accepted, and labels stay bounded.
        let _ = rpc.error_id();
        let _ = rpc.method_label();
    }
    // Skipped values are not parsed as numbers, so `1e400` somewhere the gateway does not look passes it
    // but not a full parse: nothing to compare then.
    let Ok(full) = serde_json::from_slice::<Value>(data) else { return };
    let written = serde_json::to_vec(&full).expect("a Value is written");
    let again = Rpc::inspect(&written);
    if a_message(&full) {
        assert!(
            again.is_some(),
            "a message a full parse reads is read: {}",
            String::from_utf8_lossy(&written)
        );
    }
    let Some(rpc) = rpc else { return };
    // Ids aside: serde_json does not round its long decimals exactly, so a float in an id may come back
    // one unit in the last place away once written and read again; the id read back must be what a full
    // parse of the written body reads.
    let reread: Value = serde_json::from_slice(&written).expect("serde_json reads what it wrote");
    let again = again.expect("read once, read again");
    assert_eq!(id_of(&again), reread.get("id").filter(|id| !id.is_null()), "the id written back");
    assert_eq!(without_id(again), without_id(rpc.clone()), "the body written back reads alike");
    match rpc {
        Rpc::Batch => assert!(full.is_array(), "a batch is a JSON array"),
        Rpc::Response { id } => {
            assert_eq!(full.get("jsonrpc"), Some(&Value::from("2.0")));
            assert!(full.get("method").is_none_or(Value::is_null), "a response has no method");
            assert_eq!(full.get("id"), Some(&id), "response id");
        }
        Rpc::Message { id, method, name, protocol_version, reference, client_capabilities } => {
            assert_eq!(full.get("jsonrpc"), Some(&Value::from("2.0")));
            assert_eq!(full.get("method").and_then(Value::as_str), Some(&*method), "method");
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
            let capabilities =
                meta("io.modelcontextprotocol/clientCapabilities").is_some_and(Value::is_object);
            assert_eq!(client_capabilities, capabilities, "client capabilities declared");
        }
    }
});
