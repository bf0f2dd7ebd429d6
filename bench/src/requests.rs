//! The MCP requests the load generator sends, serialized once into HTTP/1.1 bytes: 2026-07-28 stateless
//! calls (with their routing headers), and the legacy session's initialize, initialized, calls, GET
//! stream and DELETE.

use std::net::SocketAddr;

/// The newest revision: stateless requests with routing headers.
pub const MODERN: &str = "2026-07-28";
/// The legacy revision the session scenarios speak.
pub const LEGACY: &str = "2025-11-25";

/// Where requests go: an address and the MCP endpoint path there, and the caller's credential, if any.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
    /// Sent as `Authorization: Bearer <it>` on every request built here (an API key or a JWT).
    pub bearer: Option<String>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, path: impl Into<String>) -> Self {
        Self { addr, path: path.into(), bearer: None }
    }

    /// The same endpoint, every request carrying `credential` as a bearer token.
    pub fn with_bearer(mut self, credential: impl Into<String>) -> Self {
        self.bearer = Some(credential.into());
        self
    }

    fn request(&self, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = format!("{method} {} HTTP/1.1\r\nHost: {}\r\n", self.path, self.addr);
        if let Some(credential) = &self.bearer {
            out.push_str(&format!("Authorization: Bearer {credential}\r\n"));
        }
        for (k, v) in headers {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        if method == "POST" {
            out.push_str("Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n");
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// A 2026-07-28 `tools/call` of `tool` with `arguments` (JSON).
    pub fn stateless_call(&self, tool: &str, arguments: &str) -> Vec<u8> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"progressToken":1,"io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"mcpgw-bench","version":"0"}}}}}}}}"#
        );
        self.request(
            "POST",
            &[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", tool)],
            body.as_bytes(),
        )
    }

    /// A 2026-07-28 `tools/list` (first page).
    pub fn stateless_list(&self) -> Vec<u8> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{MODERN}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        );
        self.request(
            "POST",
            &[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/list")],
            body.as_bytes(),
        )
    }

    /// The `echo` tool, answered with a ~1 KiB payload.
    pub fn stateless_echo(&self) -> Vec<u8> {
        self.stateless_call("echo", r#"{"message":"hello"}"#)
    }

    /// Legacy `initialize` (opens a session).
    pub fn initialize(&self) -> Vec<u8> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{LEGACY}","capabilities":{{}},"clientInfo":{{"name":"mcpgw-bench","version":"0"}}}}}}"#
        );
        self.request("POST", &[], body.as_bytes())
    }

    /// Legacy `notifications/initialized` on `session`.
    pub fn initialized(&self, session: &str) -> Vec<u8> {
        let body = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        self.request("POST", &[("Mcp-Session-Id", session), ("MCP-Protocol-Version", LEGACY)], body)
    }

    /// Legacy `tools/call` of `echo` on `session`.
    pub fn session_echo(&self, session: &str) -> Vec<u8> {
        let body =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}"#;
        self.request("POST", &[("Mcp-Session-Id", session), ("MCP-Protocol-Version", LEGACY)], body)
    }

    /// Legacy GET stream of `session` (server-initiated messages; idle in the benchmark).
    pub fn get_stream(&self, session: &str) -> Vec<u8> {
        self.request(
            "GET",
            &[("Mcp-Session-Id", session), ("MCP-Protocol-Version", LEGACY), ("Accept", "text/event-stream")],
            b"",
        )
    }

    /// Legacy session end.
    pub fn delete(&self, session: &str) -> Vec<u8> {
        self.request("DELETE", &[("Mcp-Session-Id", session), ("MCP-Protocol-Version", LEGACY)], b"")
    }

    /// A plain GET of `path` on the same address (admin endpoints).
    pub fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
        Endpoint::new(addr, path).request("GET", &[], b"")
    }

    /// A JSON request with a bearer token (control plane REST API).
    pub fn json(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> Vec<u8> {
        let auth = format!("Bearer {token}");
        let len = body.len().to_string();
        let mut headers = vec![("Authorization", auth.as_str())];
        if method != "POST" {
            // `request` frames POST bodies itself.
            headers.push(("Content-Type", "application/json"));
            headers.push(("Content-Length", &len));
        }
        Endpoint::new(addr, path).request(method, &headers, body.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateless_call_is_valid_json_with_headers() {
        let ep = Endpoint::new("127.0.0.1:1".parse().unwrap(), "/mcp/bench");
        let raw = ep.stateless_echo();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /mcp/bench HTTP/1.1\r\n"));
        assert!(head.contains("Mcp-Name: echo"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], MODERN);
        assert!(!head.contains("Authorization"));
        for req in [ep.initialize(), ep.initialized("s"), ep.session_echo("s")] {
            let text = String::from_utf8(req).unwrap();
            let (_, body) = text.split_once("\r\n\r\n").unwrap();
            serde_json::from_str::<serde_json::Value>(body).unwrap();
        }
    }

    #[test]
    fn bearer_goes_on_every_request() {
        let ep = Endpoint::new("127.0.0.1:1".parse().unwrap(), "/mcp/bench").with_bearer("mcpgw_k");
        for req in [ep.stateless_echo(), ep.initialize(), ep.get_stream("s")] {
            let text = String::from_utf8(req).unwrap();
            let (head, _) = text.split_once("\r\n\r\n").unwrap();
            assert_eq!(head.matches("\r\nAuthorization: Bearer mcpgw_k\r\n").count(), 1, "{head}");
        }
    }
}
