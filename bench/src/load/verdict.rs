//! The one verdict on every answer the load generator gets: a non-2xx status is an error, and so is a
//! JSON-RPC error in the body — a JSON body whose top-level object has an `error` member, or an SSE body
//! with a `data:` event carrying one. Every load loop asks it, so a run cannot count an answer as done
//! that a client would take for a failure.
//!
//! It must cost less than what it measures (~1–2 KiB answers at tens of thousands per second), so it
//! scans bytes instead of parsing JSON: answers without the bytes `"error"` (nearly all) are cleared by
//! one `memmem` pass (~0.15 µs for a 2 KiB answer, where parsing it into a `serde_json::Value` takes
//! ~2 µs); only the rest get a structural scan that follows strings and nesting to tell a top-level
//! `error` member from a nested one or a string value. Its limits, all harmless for JSON-RPC
//! answers: it trusts the body to be valid JSON (a malformed body is not diagnosed, and one that is not
//! JSON is only judged by its status); a key spelled with escapes (`"\u0065rror"`) is not recognised; an
//! `error` member counts whatever its value, `null` included; in a batch (a top-level array) every
//! element is a top-level object.

use std::sync::LazyLock;

use memchr::memmem;

use super::describe;
use crate::http::Head;

/// The bytes every JSON-RPC error member holds, and their searcher, built once (building it costs about
/// as much as searching a 2 KiB answer).
const ERROR_KEY: &[u8] = b"\"error\"";
static ERROR_KEY_FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(ERROR_KEY));

/// `Ok` for a 2xx answer without a JSON-RPC error; otherwise what went wrong (status and the start of
/// the body), for the run's first-error text. Allocates only for a failure.
pub fn check(head: &Head, body: &[u8]) -> Result<(), String> {
    if !(200..300).contains(&head.status) {
        return Err(describe(head.status, body));
    }
    let rpc_error = if head.event_stream { sse_has_rpc_error(body) } else { json_has_rpc_error(body) };
    if rpc_error { Err(format!("JSON-RPC error: {}", describe(head.status, body))) } else { Ok(()) }
}

/// Whether a JSON body's top-level object (or any object of a top-level batch array) has an `error`
/// member.
pub fn json_has_rpc_error(json: &[u8]) -> bool {
    ERROR_KEY_FINDER.find(json).is_some() && top_level_error(json)
}

/// Whether any `data:` event of an SSE body (whole events; a partial one at the end counts as ended)
/// carries a JSON-RPC error. Data lines of one event are joined with `\n`, as the SSE spec reads them.
pub fn sse_has_rpc_error(body: &[u8]) -> bool {
    if ERROR_KEY_FINDER.find(body).is_none() {
        return false;
    }
    let mut data: Vec<u8> = Vec::new();
    let mut lines = 0;
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if lines > 0 && top_level_error(&data) {
                return true;
            }
            data.clear();
            lines = 0;
        } else if let Some(value) = line.strip_prefix(b"data:") {
            if lines > 0 {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            lines += 1;
        }
    }
    lines > 0 && top_level_error(&data)
}

/// The structural scan: follows strings (with their escapes) and nesting, and looks at the key before
/// every `:` at the level of the top-level object's members.
fn top_level_error(json: &[u8]) -> bool {
    let Some(first) = json.iter().position(|b| !b.is_ascii_whitespace()) else { return false };
    // A `:` outside strings only follows a key, so the depth alone tells a member of the top-level
    // object (depth 1) or of a batch element (depth 2 under `[`).
    let members = match json[first] {
        b'{' => 1,
        b'[' => 2,
        _ => return false,
    };
    let mut depth = 0u32;
    let mut last_string: &[u8] = &[];
    let mut i = first;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let Some(end) = string_end(json, i + 1) else { return false };
                last_string = &json[i + 1..end];
                i = end;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return false;
                }
            }
            b':' if depth == members && last_string == b"error" => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// The index of the quote closing a string whose content starts at `from`.
fn string_end(json: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', json.get(from..)?)?;
        if json[at] == b'"' {
            return Some(at);
        }
        // An escape: the next byte is never the string's end.
        from = at + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_error_members_only() {
        for error in [
            &br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool"}}"#[..],
            br#" { "id" : 1 , "error" : null } "#,
            br#"{"id":1,"result":{"error":1},"error":{"code":1}}"#,
            br#"[{"id":1,"result":{}},{"id":2,"error":{"code":-32000}}]"#,
            b"{\"a\":\"\\\\\",\"error\":{}}",
        ] {
            assert!(json_has_rpc_error(error), "{}", String::from_utf8_lossy(error));
        }
        for fine in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}"#[..],
            // Nested `error` members and `error` as a value or inside strings are not JSON-RPC errors.
            br#"{"id":1,"result":{"error":{"code":1},"structured":[{"error":2}]}}"#,
            br#"{"id":1,"result":{"status":"error"}}"#,
            br#"{"id":1,"result":{"text":"an \"error\": here","k":"x\"error"}}"#,
            br#"{"id":1,"result":{}} {"error":1}"#,
            br#"[[{"error":1}]]"#,
            b"method not allowed \"error\":",
            b"",
            br#"{"error"#,
            b"{\"a\":\"\\",
        ] {
            assert!(!json_has_rpc_error(fine), "{}", String::from_utf8_lossy(fine));
        }
    }

    #[test]
    fn sse_events_with_errors() {
        let progress =
            "event: message\ndata: {\"method\":\"notifications/progress\",\"params\":{\"error\":0}}\n\n";
        let error = "event: message\r\ndata: {\"id\":1,\r\ndata:  \"error\":{\"code\":-32000}}\r\n\r\n";
        let result = "data: {\"id\":1,\"result\":{\"text\":\"\\\"error\\\"\"}}\n\n";
        assert!(!sse_has_rpc_error(format!(": open\n\n{progress}{result}").as_bytes()));
        assert!(sse_has_rpc_error(format!("{progress}{error}{result}").as_bytes()));
        assert!(sse_has_rpc_error(b"data: {\"id\":1,\"error\":{}}"), "an unterminated last event");
        assert!(!sse_has_rpc_error(b": {\"error\":1}\n\nevent: error\n\n"), "comments and event names");
    }

    #[test]
    fn statuses_and_bodies() {
        let head = |status, event_stream| Head { status, event_stream, ..Head::default() };
        assert_eq!(check(&head(200, false), br#"{"id":1,"result":{}}"#), Ok(()));
        assert_eq!(check(&head(202, false), b""), Ok(()));
        let not_found = check(&head(404, false), b"no such session").unwrap_err();
        assert_eq!(not_found, "HTTP 404: no such session");
        assert!(check(&head(301, false), b"").is_err(), "redirects are not answers");
        let rpc = check(&head(200, false), br#"{"id":1,"error":{"code":-32602}}"#).unwrap_err();
        assert!(rpc.starts_with("JSON-RPC error: HTTP 200: {"), "{rpc}");
        assert!(check(&head(200, true), b"data: {\"id\":1,\"error\":{}}\n\n").is_err());
        assert_eq!(check(&head(200, true), b": open\n\n"), Ok(()));
    }
}
