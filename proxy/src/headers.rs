//! 2026-07-28 request metadata headers: a stateless request is routed on `Mcp-Method` / `Mcp-Name`, so the
//! proxy first checks them (and `MCP-Protocol-Version`) against the body it already inspected; a mismatch
//! is 400 with JSON-RPC `-32020` (HeaderMismatch), as the spec asks of anything that processes the body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pingora::http::RequestHeader;

use crate::jsonrpc::Rpc;

/// First revision with stateless requests and routing headers.
pub const STATELESS_REVISION: &str = "2026-07-28";

/// Methods whose target name must be in `Mcp-Name`.
const NAMED_METHODS: &[&str] = &["tools/call", "resources/read", "prompts/get"];

/// The `MCP-Protocol-Version` of a request, if any.
pub fn protocol_version(req: &RequestHeader) -> Option<&str> {
    req.headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Whether a request belongs to the stateless era (its client cancels by closing the stream).
pub fn is_stateless(req: &RequestHeader) -> bool {
    protocol_version(req).is_some_and(|v| v >= STATELESS_REVISION)
}

/// Decodes a header value, honouring the `=?base64?…?=` form used for values that are not plain ASCII.
pub fn decode_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    match text.strip_prefix("=?base64?").and_then(|t| t.strip_suffix("?=")) {
        Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
        None => Some(text.to_owned()),
    }
}

/// Checks a 2026-07-28 request's headers against its body; `Err` carries the reason for the -32020 error.
pub fn check(req: &RequestHeader, rpc: Option<&Rpc>) -> Result<(), String> {
    let header = |name: &str| req.headers.get(name).map(|v| decode_value(v.as_bytes()));
    let Some(Rpc::Message { method, name, protocol_version: meta_version, .. }) = rpc else {
        return Err("the body must be one JSON-RPC request or notification".into());
    };
    let version = protocol_version(req).unwrap_or_default();
    if meta_version.as_deref() != Some(version) {
        return Err(format!(
            "MCP-Protocol-Version {version:?} does not match params._meta protocolVersion {meta_version:?}"
        ));
    }
    match header("mcp-method") {
        None => return Err("Mcp-Method header is required".into()),
        Some(v) if v.as_deref() != Some(method.as_str()) => {
            return Err(format!(
                "Mcp-Method {:?} does not match the body's method {method:?}",
                v.unwrap_or_default()
            ));
        }
        Some(_) => {}
    }
    if NAMED_METHODS.contains(&method.as_str()) {
        match (header("mcp-name"), name) {
            (None, _) => return Err(format!("Mcp-Name header is required for {method}")),
            (Some(h), Some(n)) if h.as_deref() == Some(n.as_str()) => {}
            (Some(h), n) => {
                return Err(format!(
                    "Mcp-Name {:?} does not match the body's name {n:?}",
                    h.unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        r.insert_header("MCP-Protocol-Version", "2026-07-28").unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn call(name: &str) -> Option<Rpc> {
        Rpc::inspect(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,
                "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})
            .to_string()
            .as_bytes(),
        )
    }

    #[test]
    fn matching_headers_pass() {
        assert_eq!(
            check(&req(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]), call("echo").as_ref()),
            Ok(())
        );
        let encoded = format!("=?base64?{}?=", STANDARD.encode("héllo"));
        assert_eq!(
            check(&req(&[("Mcp-Method", "tools/call"), ("Mcp-Name", &encoded)]), call("héllo").as_ref()),
            Ok(())
        );
    }

    #[test]
    fn mismatches_are_refused() {
        let cases: &[&[(&str, &str)]] = &[
            &[("Mcp-Name", "echo")],
            &[("Mcp-Method", "TOOLS/CALL"), ("Mcp-Name", "echo")],
            &[("Mcp-Method", "tools/call")],
            &[("Mcp-Method", "tools/call"), ("Mcp-Name", "other")],
            &[("Mcp-Method", "tools/call"), ("Mcp-Name", "=?base64?!!!?=")],
        ];
        for headers in cases {
            assert!(check(&req(headers), call("echo").as_ref()).is_err(), "{headers:?}");
        }
        let mut old = req(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]);
        old.insert_header("MCP-Protocol-Version", "2026-07-29").unwrap();
        assert!(check(&old, call("echo").as_ref()).unwrap_err().contains("protocolVersion"));
        assert!(check(&req(&[("Mcp-Method", "x")]), None).is_err(), "a batch or garbage body");
    }

    #[test]
    fn era() {
        assert!(is_stateless(&req(&[])));
        let legacy = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!is_stateless(&legacy));
    }
}
