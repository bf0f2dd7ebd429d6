//! The 2026-07-28 request checks (`proxy/src/headers.rs`): `headers::check` of `MCP-Protocol-Version`,
//! `Mcp-Method` and `Mcp-Name` against the body as `Rpc::inspect` read it, `decode_value` of the
//! `=?base64?…?=` form, and `header_value`, which writes such headers for upstreams.
//!
//! Input: header lines (`Name: value`) up to the first empty line, then the JSON-RPC body. Invariants:
//! `decode_value(header_value(s)) == s` for any text; a request the check lets through carries headers
//! that decode to the body's method and (for named methods) target name; and a client that writes its
//! headers from its own body with `header_value` is always let through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::headers::{McpHeaders, Refusal, check, decode_value, header_value};
use mcpgw_proxy::jsonrpc::Rpc;
use pingora::http::RequestHeader;

const NAMED: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

fn round_trip(text: &str) {
    let value = header_value(text);
    assert_eq!(
        decode_value(value.as_bytes()).as_deref(),
        Some(text),
        "header_value of {text:?} does not decode"
    );
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match memchr_blank(data) {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut req = RequestHeader::build("POST", b"/mcp/s", None).expect("request");
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let Ok(name) = http::HeaderName::from_bytes(name) else { continue };
        let Ok(value) = http::HeaderValue::from_bytes(value) else { continue };
        req.append_header(name, value).expect("a valid header");
        if let Ok(text) = std::str::from_utf8(line) {
            round_trip(text);
        }
    }
    let mcp = McpHeaders::of(&req);
    let rpc = Rpc::inspect(body);
    let verdict = check(&mcp, rpc.as_ref());
    if let Ok(text) = std::str::from_utf8(body) {
        round_trip(text);
    }
    let Some(Rpc::Message { method, name, protocol_version, .. }) = &rpc else {
        assert!(matches!(verdict, Err(Refusal::InvalidRequest(_))), "{verdict:?}");
        return;
    };
    round_trip(method);
    // The proxy checks only requests of the stateless era (`is_stateless`).
    if verdict.is_ok() && mcp.is_stateless() {
        let decoded = |h: &str| req.headers.get(h).and_then(|v| decode_value(v.as_bytes()));
        assert_eq!(decoded("mcp-method").as_deref(), Some(&**method), "Mcp-Method");
        if NAMED.contains(&&**method) {
            assert!(name.is_some(), "a named method without a name passed");
            assert_eq!(decoded("mcp-name").map(|v| v.into_owned()), name.clone(), "Mcp-Name");
        }
        assert_eq!(mcp.protocol_version(), protocol_version.as_deref(), "MCP-Protocol-Version");
    }
    // A client that writes its headers from its own body, as the proxy does towards upstreams.
    let Some(version) = protocol_version else { return };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return; // Not expressible as a plain header value; such a body is refused anyway.
    }
    let mut own = RequestHeader::build("POST", b"/mcp/s", None).expect("request");
    own.insert_header("mcp-protocol-version", &**version).expect("visible ASCII");
    own.insert_header("mcp-method", header_value(method)).expect("header");
    if let Some(name) = name {
        round_trip(name);
        own.insert_header("mcp-name", header_value(name)).expect("header");
    }
    let own_verdict = check(&McpHeaders::of(&own), rpc.as_ref());
    if NAMED.contains(&&**method) && name.is_none() {
        assert!(matches!(own_verdict, Err(Refusal::InvalidParams(_))), "{own_verdict:?}");
    } else {
        assert_eq!(own_verdict, Ok(()), "headers written from the body are refused");
    }
});

/// Where the first empty line starts (`\n\n`).
fn memchr_blank(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\n\n")
}
