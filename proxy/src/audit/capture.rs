//! What a record learns from the bytes of a request and its answer, cheaply: whether the answer is a
//! JSON-RPC result or error and its code (without parsing it), the W3C trace id, a session token's digest, and a tool's arguments as the
//! server's `audit_arguments` setting keeps them.

use mcpgw_proto::v1::AuditArguments;
use serde_json::Value;

/// What the bytes of an answer say about its outcome, as far as they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A JSON-RPC result.
    Result,
    /// A JSON-RPC error, with its code when it is an integer.
    Error(Option<i64>),
}

/// The outcome of a JSON-RPC answer (a JSON body, or SSE events carrying JSON-RPC messages) from its bytes,
/// without parsing it: the first message with a `"result"` or `"error"` key says which it is (the rest of the
/// answer is not read, so this costs a few dozen bytes' scan for a typical answer of any size). Messages
/// without either (notifications before an SSE answer) are passed over line by line. Keys inside a result
/// come after `"result"` and are never reached; a string value `"error"` is not a key (no colon follows).
/// `None` when these bytes hold no answer yet.
pub fn answer(body: &[u8]) -> Option<Answer> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                let rest = &body[i + 1..];
                let (is_error, len) = if rest.starts_with(b"result\"") {
                    (false, 7)
                } else if rest.starts_with(b"error\"") {
                    (true, 6)
                } else {
                    i += 1;
                    continue;
                };
                let after = &rest[len..];
                if after.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b':') {
                    i += 1 + len;
                    continue;
                }
                if !is_error {
                    return Some(Answer::Result);
                }
                return Some(Answer::Error(error_code(after)));
            }
            _ => i += 1,
        }
    }
    None
}

/// The integer `"code"` of the error object at the start of `after` (what follows `"error"`), looked for
/// only up to the end of its line.
fn error_code(after: &[u8]) -> Option<i64> {
    let line = after.split(|b| *b == b'\n').next().unwrap_or(after);
    let at = line.windows(6).position(|w| w == b"\"code\"")? + 6;
    let digits = line[at..].iter().skip_while(|b| b.is_ascii_whitespace() || **b == b':');
    let text: Vec<u8> = digits.take_while(|b| b.is_ascii_digit() || **b == b'-').copied().collect();
    std::str::from_utf8(&text).ok()?.parse().ok()
}

/// A digest of a session token, so records of one session can be grouped without storing the token (which
/// would let anyone reading the audit log continue the session).
pub fn session_digest(token: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    hex(&digest.as_ref()[..8])
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Longest string value kept by `redacted`.
const MAX_STRING: usize = 256;
/// Longest redacted arguments text kept; longer ones are cut (and say so).
const MAX_REDACTED: usize = 4096;

/// The arguments of a `tools/call` or `prompts/get` body as `mode` keeps them; `None` when the mode keeps
/// nothing or the body has no arguments.
pub fn arguments(body: &[u8], mode: AuditArguments) -> Option<String> {
    if mode == AuditArguments::None {
        return None;
    }
    let args = crate::jsonrpc::params_member(body, "arguments")?;
    let args = serde_json::from_slice::<Value>(args).ok().filter(|a| !a.is_null())?;
    match mode {
        AuditArguments::None => None,
        // Keys are sorted (serde_json's map), so equal arguments hash equally whatever the client's order.
        AuditArguments::Hashed => {
            let text = serde_json::to_vec(&args).ok()?;
            Some(format!("sha256:{}", hex(ring::digest::digest(&ring::digest::SHA256, &text).as_ref())))
        }
        AuditArguments::Redacted => {
            let mut text = redact(args).to_string();
            if text.len() > MAX_REDACTED {
                let mut cut = MAX_REDACTED;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("…(truncated)");
            }
            Some(text)
        }
    }
}

/// Key names whose values are never kept.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "credential", "cookie", "session", "private", "signature"]
        .iter()
        .any(|s| key.contains(s))
}

fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if secret_key(&k) { Value::String("[redacted]".into()) } else { redact(v) };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) if s.chars().count() > MAX_STRING => {
            let kept: String = s.chars().take(MAX_STRING).collect();
            Value::String(format!("{kept}…({} chars)", s.chars().count()))
        }
        other => other,
    }
}

/// A client address as text, written without the formatting machinery for IPv4 (which costs more than
/// the rest of an audit record): `IpText::default().of(ip)`. The text's bytes, which the record writes
/// as they are (an IPv4 address is digits and dots: checking them as UTF-8 cost ~80 instructions).
#[derive(Default)]
pub struct IpText {
    buf: [u8; 15],
    v6: String,
}

impl IpText {
    pub fn of(&mut self, ip: std::net::IpAddr) -> &[u8] {
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut at = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[at] = b'.';
                        at += 1;
                    }
                    if octet >= 100 {
                        self.buf[at] = b'0' + octet / 100;
                        at += 1;
                    }
                    if octet >= 10 {
                        self.buf[at] = b'0' + octet / 10 % 10;
                        at += 1;
                    }
                    self.buf[at] = b'0' + octet % 10;
                    at += 1;
                }
                &self.buf[..at]
            }
            std::net::IpAddr::V6(v6) => {
                self.v6 = v6.to_string();
                self.v6.as_bytes()
            }
        }
    }
}

/// A request id as the JSON text its audit record and span carry, without allocating for the integers
/// nearly every client numbers its requests with (`to_string` went through `fmt`, ~280 instructions):
/// `IdText::default().of(id)`.
#[derive(Default)]
pub struct IdText {
    int: itoa::Buffer,
    other: String,
}

impl IdText {
    pub fn of(&mut self, id: &Value) -> &str {
        if let Some(n) = id.as_u64() {
            return self.int.format(n);
        }
        if let Some(n) = id.as_i64() {
            return self.int.format(n);
        }
        self.other = id.to_string();
        &self.other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_answers() {
        let cases: [(&str, Option<Answer>); 9] = [
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#,
                Some(Answer::Error(Some(-32602))),
            ),
            (r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#, Some(Answer::Result)),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"error":{"code":5}}}}"#,
                Some(Answer::Result),
            ),
            (r#"{"jsonrpc":"2.0","id":"error","result":{}}"#, Some(Answer::Result)),
            (
                r#"{"jsonrpc":"2.0","id":1, "error" : { "message":"x", "code" : 42 }}"#,
                Some(Answer::Error(Some(42))),
            ),
            (r#"{"jsonrpc":"2.0","id":1,"error":{"message":"no code"}}"#, Some(Answer::Error(None))),
            (
                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"error\"}}\n\n\
                 event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32001,\"message\":\"gone\"}}\n\n",
                Some(Answer::Error(Some(-32001))),
            ),
            ("data: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"isError\":true}}\n\n", Some(Answer::Result)),
            ("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n", None),
        ];
        for (body, outcome) in cases {
            assert_eq!(answer(body.as_bytes()), outcome, "{body}");
        }
    }

    #[test]
    fn arguments_as_the_server_keeps_them() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"q":"hi","apiKey":"s3cret","nested":{"Password":"p","n":1}}}}"#;
        assert_eq!(arguments(body, AuditArguments::None), None);
        let redacted = arguments(body, AuditArguments::Redacted).unwrap();
        assert!(!redacted.contains("s3cret") && !redacted.contains("\"p\""), "{redacted}");
        assert!(redacted.contains(r#""q":"hi""#) && redacted.contains(r#""n":1"#), "{redacted}");
        let reordered = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{"nested":{"n":1,"Password":"p"},"apiKey":"s3cret","q":"hi"},"name":"t"}}"#;
        let hashed = arguments(body, AuditArguments::Hashed).unwrap();
        assert!(hashed.starts_with("sha256:") && hashed.len() == 7 + 64, "{hashed}");
        assert_eq!(Some(hashed), arguments(reordered, AuditArguments::Hashed), "key order does not matter");
        let long = format!(r#"{{"params":{{"arguments":{{"text":"{}"}}}}}}"#, "x".repeat(10_000));
        let kept = arguments(long.as_bytes(), AuditArguments::Redacted).unwrap();
        assert!(kept.len() < 400 && kept.contains("10000 chars"), "{kept}");
        assert_eq!(arguments(br#"{"params":{}}"#, AuditArguments::Hashed), None);
        assert_eq!(arguments(br#"{"params":{"arguments":null}}"#, AuditArguments::Hashed), None);
        let repeated = br#"{"params":{"arguments":{"a":1},"arguments":{"b":2}}}"#;
        assert_eq!(arguments(repeated, AuditArguments::Hashed), None, "which copy would the upstream take?");
    }

    #[test]
    fn client_addresses_read_as_their_display() {
        let mut text = IpText::default();
        for ip in
            ["0.0.0.0", "127.0.0.1", "10.20.3.100", "255.255.255.255", "192.168.1.9", "::1", "fe80::1:2"]
        {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(text.of(ip), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn request_ids_read_as_their_json_text() {
        let mut text = IdText::default();
        for id in [
            serde_json::json!(0),
            serde_json::json!(7),
            serde_json::json!(u64::MAX),
            serde_json::json!(-1),
            serde_json::json!(i64::MIN),
            serde_json::json!(1.5),
            serde_json::json!("req-\"1\""),
        ] {
            assert_eq!(text.of(&id), id.to_string());
        }
    }

    #[test]
    fn session_digests_are_short_and_stable() {
        assert_eq!(session_digest(b"abc"), session_digest(b"abc"));
        assert_ne!(session_digest(b"abc"), session_digest(b"abd"));
        assert_eq!(session_digest(b"abc").len(), 16);
    }
}
