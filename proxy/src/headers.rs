//! 2026-07-28 request metadata headers: a stateless request is routed on `Mcp-Method` / `Mcp-Name`, so the
//! proxy first checks them (and `MCP-Protocol-Version`) against the body it already inspected; a mismatch
//! is 400 with JSON-RPC `-32020` (HeaderMismatch), as the spec asks of anything that processes the body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pingora::http::RequestHeader;

use crate::jsonrpc::Rpc;

/// MCP header names the gateway reads on every request, made once: a lookup by a `&str` name parses it
/// first, each time.
pub const MCP_PROTOCOL_VERSION: http::HeaderName = http::HeaderName::from_static("mcp-protocol-version");
pub const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
pub const MCP_METHOD: http::HeaderName = http::HeaderName::from_static("mcp-method");
pub const MCP_NAME: http::HeaderName = http::HeaderName::from_static("mcp-name");
/// W3C trace context of the caller.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// An HTTP/1.0 connection's parameters (not in `http`'s table of standard names).
pub const KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");

pub use crate::jsonrpc::STATELESS_REVISION;

/// Methods whose target name must be in `Mcp-Name`.
const NAMED_METHODS: &[&str] = &["tools/call", "resources/read", "prompts/get"];

/// The MCP headers of a request: the first field of each name, as `HeaderMap::get` gives it. The client's
/// session ([`crate::downstream::Session::mcp_headers`]) keeps them as it parses the head, so the request path
/// reads them without a header-map lookup each (eight a forwarded 2026-07-28 call, ~200 instructions each).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct McpHeaders {
    values: [Option<http::HeaderValue>; 4],
}

/// The names [`McpHeaders`] keeps, in the order of its slots (`framing`'s table of known names starts with
/// them).
pub const MCP_HEADERS: [http::HeaderName; 4] = [MCP_PROTOCOL_VERSION, MCP_SESSION_ID, MCP_METHOD, MCP_NAME];

impl McpHeaders {
    /// Read from a head by lookups: for a head the client's session did not parse.
    pub fn of(req: &RequestHeader) -> Self {
        Self { values: MCP_HEADERS.map(|name| req.headers.get(name).cloned()) }
    }

    /// Keeps `value` as the header in slot `slot` of [`MCP_HEADERS`] unless an earlier field has it.
    pub(crate) fn offer(&mut self, slot: usize, value: &http::HeaderValue) {
        if let Some(kept @ None) = self.values.get_mut(slot) {
            *kept = Some(value.clone());
        }
    }

    pub fn protocol_version_value(&self) -> Option<&http::HeaderValue> {
        self.values[0].as_ref()
    }

    pub fn session_id(&self) -> Option<&http::HeaderValue> {
        self.values[1].as_ref()
    }

    pub fn method(&self) -> Option<&http::HeaderValue> {
        self.values[2].as_ref()
    }

    pub fn name(&self) -> Option<&http::HeaderValue> {
        self.values[3].as_ref()
    }

    /// The `MCP-Protocol-Version` of a request, if any.
    pub fn protocol_version(&self) -> Option<&str> {
        // `to_str` leaves visible ASCII only: its whitespace is ASCII (`str::trim` decodes characters).
        self.protocol_version_value().and_then(|v| v.to_str().ok()).map(str::trim_ascii)
    }

    /// Whether a request belongs to the stateless era (its client cancels by closing the stream).
    pub fn is_stateless(&self) -> bool {
        self.protocol_version().is_some_and(|v| v >= STATELESS_REVISION)
    }
}

/// Which of the fields the gateway looks up on every message, though most messages lack them, a head
/// carries: noted as a parsed head's fields are read (the client's session,
/// [`crate::downstream::Session::noted`], and an upstream's answer), so that the map is looked up only for
/// those it has (a lookup of an absent field still hashes its name, ~120 instructions). The framing fields
/// (`Content-Length`, `Transfer-Encoding`, `Connection`, `Keep-Alive`) and those of the request path
/// (`Origin`, `Expect`, `Authorization`, `traceparent`), and `Mcp-Session-Id`, which an upstream's answer to a
/// stateless call lacks. [`Noted::ANY`] for a head the gateway did not parse.
///
/// The `Content-Length`'s value is kept as it is noted, so the body's framing needs no lookup either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Noted {
    bits: u16,
    length: Length,
}

/// A head's `Content-Length`, as its fields were noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Length {
    #[default]
    Absent,
    /// One number, in one field or repeated alike.
    Is(u64),
    /// Not known without reading the map: a list, a value that is not a number, numbers that disagree,
    /// or a head not noted.
    Unread,
}

/// The names [`Noted`] notes, in the order of their bits ([`Noted::bit`] matches the same names; the head
/// readers take a name's bit from `framing`'s table of known names, which must hold each of these).
pub(crate) const NOTED_NAMES: [&[u8]; 9] = [
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"origin",
    b"expect",
    b"authorization",
    b"traceparent",
    b"keep-alive",
    b"mcp-session-id",
];

impl Noted {
    /// Every field may be there: each is looked up.
    pub const ANY: Self = Self { bits: u16::MAX, length: Length::Unread };

    /// This name's bit (none for a name not noted): the bit of its place in [`NOTED_NAMES`]. Names compare
    /// as `http` keeps them: one of its standard names by its number, any other by its bytes (and a
    /// standard name with another at once).
    #[inline(always)]
    fn bit(name: &http::HeaderName) -> u16 {
        use http::header;
        if *name == header::CONTENT_LENGTH {
            1
        } else if *name == header::TRANSFER_ENCODING {
            2
        } else if *name == header::CONNECTION {
            4
        } else if *name == header::ORIGIN {
            8
        } else if *name == header::EXPECT {
            16
        } else if *name == header::AUTHORIZATION {
            32
        } else if *name == TRACEPARENT {
            64
        } else if *name == KEEP_ALIVE {
            128
        } else if *name == MCP_SESSION_ID {
            256
        } else {
            0
        }
    }

    /// Notes a field of the head by its name (the head readers note by the bit their table gives).
    #[cfg(test)]
    pub(crate) fn note(&mut self, name: &http::HeaderName, value: &[u8]) {
        self.note_bit(Self::bit(name), value);
    }

    /// Notes a field of the head by its name's bit (`framing::FieldName::noted`).
    #[inline]
    pub(crate) fn note_bit(&mut self, bit: u16, value: &[u8]) {
        self.bits |= bit;
        if bit == 1 {
            self.length = match (self.length, crate::framing::parse_decimal(value.trim_ascii())) {
                (Length::Absent, Some(n)) => Length::Is(n),
                (Length::Is(l), Some(n)) if l == n => Length::Is(n),
                _ => Length::Unread,
            };
        }
    }

    /// Whether the head may have a field `name`: false only for a noted name the head lacks.
    #[inline]
    pub fn may_have(self, name: &http::HeaderName) -> bool {
        let bit = Self::bit(name);
        bit == 0 || self.bits & bit != 0
    }

    /// The `Content-Length` noted: `Some(None)` for none, `None` when only the map can tell (see
    /// [`crate::framing::content_length`]).
    #[inline]
    pub(crate) fn content_length(self) -> Option<Option<u64>> {
        match self.length {
            Length::Absent => Some(None),
            Length::Is(n) => Some(Some(n)),
            Length::Unread => None,
        }
    }

    /// The first value of `name` in `headers`: `None` without a lookup when the head lacks a noted field.
    #[inline]
    pub fn get<'a>(
        self,
        headers: &'a http::HeaderMap,
        name: &http::HeaderName,
    ) -> Option<&'a http::HeaderValue> {
        if self.may_have(name) { headers.get(name) } else { None }
    }
}

/// Decodes a header value: surrounding whitespace is not part of it (RFC 9110 §5.5), and the
/// `=?base64?…?=` form carries values that are not plain ASCII.
pub fn decode_value(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = raw.iter().position(|b| !blank(b)).unwrap_or(raw.len());
    let end = raw.iter().rposition(|b| !blank(b)).map_or(start, |last| last + 1);
    let text = std::str::from_utf8(&raw[start..end]).ok()?;
    match text.strip_prefix("=?base64?").and_then(|t| t.strip_suffix("?=")) {
        Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok().map(std::borrow::Cow::Owned),
        None => Some(std::borrow::Cow::Borrowed(text)),
    }
}

/// Why a 2026-07-28 request is refused before it is routed. A header that disagrees with the body (or is
/// missing) is a header mismatch; a body that lacks what every 2026-07-28 request must carry is invalid,
/// whatever its headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not one JSON-RPC request or notification (`-32600`).
    InvalidRequest(String),
    /// A field the body must carry is absent (`-32602`).
    InvalidParams(String),
    /// A routing header is absent or differs from the body (`-32020`).
    HeaderMismatch(String),
}

/// Checks a 2026-07-28 request's headers against its body.
pub fn check(headers: &McpHeaders, rpc: Option<&Rpc>) -> Result<(), Refusal> {
    fn header(value: Option<&http::HeaderValue>) -> Option<Option<std::borrow::Cow<'_, str>>> {
        value.map(|v| decode_value(v.as_bytes()))
    }
    let Some(Rpc::Message { method, name, protocol_version: meta_version, .. }) = rpc else {
        return Err(Refusal::InvalidRequest("the body must be one JSON-RPC request or notification".into()));
    };
    let version = headers.protocol_version().unwrap_or_default();
    match meta_version {
        None => {
            return Err(Refusal::InvalidParams(
                "params._meta must carry io.modelcontextprotocol/protocolVersion".into(),
            ));
        }
        Some(v) if v != version => {
            return Err(Refusal::HeaderMismatch(format!(
                "MCP-Protocol-Version {version:?} does not match params._meta protocolVersion {v:?}"
            )));
        }
        Some(_) => {}
    }
    match header(headers.method()) {
        None => return Err(Refusal::HeaderMismatch("Mcp-Method header is required".into())),
        Some(v) if v.as_deref() != Some(&**method) => {
            return Err(Refusal::HeaderMismatch(format!(
                "Mcp-Method {:?} does not match the body's method {method:?}",
                v.unwrap_or_default()
            )));
        }
        Some(_) => {}
    }
    if NAMED_METHODS.contains(&&**method) {
        let Some(name) = name else {
            let field = if method == "resources/read" { "uri" } else { "name" };
            return Err(Refusal::InvalidParams(format!("{method} requires params.{field}")));
        };
        match header(headers.name()) {
            None => return Err(Refusal::HeaderMismatch(format!("Mcp-Name header is required for {method}"))),
            Some(h) if h.as_deref() == Some(name.as_str()) => {}
            Some(h) => {
                return Err(Refusal::HeaderMismatch(format!(
                    "Mcp-Name {:?} does not match the body's name {name:?}",
                    h.unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}

/// A header value as 2026-07-28 wants it: plain visible ASCII as is, anything else in the base64 form.
pub fn header_value(text: &str) -> http::HeaderValue {
    use base64::Engine;
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("=?");
    let encoded;
    let value = if plain {
        text
    } else {
        encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(text));
        &encoded
    };
    http::HeaderValue::from_str(value).unwrap_or_else(|_| http::HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn noted_names_are_noted_by_their_place() {
        for (at, text) in NOTED_NAMES.iter().enumerate() {
            assert_eq!(Noted::bit(&http::HeaderName::from_bytes(text).unwrap()), 1 << at);
        }
        for name in [http::header::HOST, http::header::CONTENT_TYPE, MCP_METHOD, http::header::DATE] {
            assert_eq!(Noted::bit(&name), 0, "{name}");
        }
    }

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        r.insert_header("MCP-Protocol-Version", "2026-07-28").unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn req(headers: &[(&str, &str)]) -> McpHeaders {
        McpHeaders::of(&head(headers))
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
    fn noted_fields_are_looked_up_only_when_noted() {
        use http::header::{
            AUTHORIZATION, CONNECTION, CONTENT_LENGTH, EXPECT, HOST, ORIGIN, TRANSFER_ENCODING,
        };
        let noted = [
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            CONNECTION,
            KEEP_ALIVE,
            ORIGIN,
            EXPECT,
            AUTHORIZATION,
            TRACEPARENT,
            MCP_SESSION_ID,
        ];
        let mut headers = http::HeaderMap::new();
        for name in noted.iter().chain([&HOST]) {
            headers.insert(name.clone(), http::HeaderValue::from_static("v"));
        }
        let none = Noted::default();
        for name in &noted {
            assert!(!none.may_have(name) && Noted::ANY.may_have(name), "{name}");
            assert_eq!(none.get(&headers, name), None, "{name}: not noted, not looked up");
            assert!(Noted::ANY.get(&headers, name).is_some(), "{name}");
            let mut one = Noted::default();
            one.note(name, b"v");
            assert!(one.get(&headers, name).is_some(), "{name}");
            let mut others = noted.iter().filter(|n| *n != name);
            assert!(others.all(|other| one.get(&headers, other).is_none()), "{name} notes itself only");
        }
        assert!(
            none.may_have(&HOST) && none.get(&headers, &HOST).is_some(),
            "a name not noted is always looked up"
        );
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
        let mut old = head(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]);
        old.insert_header("MCP-Protocol-Version", "2026-07-29").unwrap();
        assert!(matches!(
            check(&McpHeaders::of(&old), call("echo").as_ref()),
            Err(Refusal::HeaderMismatch(m)) if m.contains("protocolVersion")
        ));
        assert!(matches!(check(&req(&[("Mcp-Method", "x")]), None), Err(Refusal::InvalidRequest(_))));
    }

    /// `Mcp-Name` belongs to the methods that name a target; on any other method the proxy neither needs nor
    /// judges it, and the upstream answers exactly as it would directly.
    #[test]
    fn a_name_header_on_a_method_without_a_name_is_the_upstreams_business() {
        let list = Rpc::inspect(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
                "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(
            check(&req(&[("Mcp-Method", "tools/list"), ("Mcp-Name", "stray")]), list.as_ref()),
            Ok(())
        );
        assert_eq!(check(&req(&[("Mcp-Method", "tools/list")]), list.as_ref()), Ok(()));
    }

    #[test]
    fn whitespace_around_values_is_not_part_of_them() {
        let headers = [("Mcp-Method", " tools/call\t"), ("Mcp-Name", "  echo  ")];
        assert_eq!(check(&req(&headers), call("echo").as_ref()), Ok(()));
        for (raw, text) in [
            (&b" \t echo\t "[..], "echo"),
            (b"echo", "echo"),
            (b" \t ", ""),
            (b"", ""),
            (b"a b", "a b"),
            (b"\t=?base64?ZWNobw==?= ", "echo"),
        ] {
            assert_eq!(decode_value(raw).as_deref(), Some(text), "{raw:?}");
        }
        assert_eq!(decode_value(b" \xff "), None, "not UTF-8");
    }

    /// A body that lacks a field every such request must carry is invalid (-32602) whatever the headers
    /// say; only a header that is absent or differs is a mismatch (-32020).
    #[test]
    fn absent_body_fields_are_invalid_params() {
        let body = |params: serde_json::Value| {
            Rpc::inspect(
                json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":params}).to_string().as_bytes(),
            )
        };
        let headers = req(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]);
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"});
        for params in [
            json!({"name": "echo"}),
            json!({"name": "echo", "_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}),
            json!({"_meta": meta}),
        ] {
            assert!(
                matches!(check(&headers, body(params.clone()).as_ref()), Err(Refusal::InvalidParams(_))),
                "{params}"
            );
        }
        let no_name = req(&[("Mcp-Method", "tools/call")]);
        assert!(matches!(
            check(&no_name, body(json!({"name": "echo", "_meta": meta})).as_ref()),
            Err(Refusal::HeaderMismatch(_))
        ));
    }

    /// Each accessor reads the header of its own name (the slots follow `MCP_HEADERS`' order).
    #[test]
    fn each_accessor_reads_its_own_header() {
        let mut r = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        for name in &MCP_HEADERS {
            r.insert_header(name.clone(), name.as_str()).unwrap();
        }
        let mcp = McpHeaders::of(&r);
        let read = |v: Option<&http::HeaderValue>| v.map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(read(mcp.protocol_version_value()).as_deref(), Some("mcp-protocol-version"));
        assert_eq!(read(mcp.session_id()).as_deref(), Some("mcp-session-id"));
        assert_eq!(read(mcp.method()).as_deref(), Some("mcp-method"));
        assert_eq!(read(mcp.name()).as_deref(), Some("mcp-name"));
        let mut kept = McpHeaders::default();
        kept.offer(1, &http::HeaderValue::from_static("first"));
        kept.offer(1, &http::HeaderValue::from_static("second"));
        kept.offer(7, &http::HeaderValue::from_static("not an MCP header"));
        assert_eq!(read(kept.session_id()).as_deref(), Some("first"), "the first field of a name is kept");
        assert_eq!(kept, McpHeaders { values: [None, kept.values[1].clone(), None, None] });
    }

    #[test]
    fn era() {
        assert!(req(&[]).is_stateless());
        let legacy = RequestHeader::build("POST", b"/", None).unwrap();
        assert!(!McpHeaders::of(&legacy).is_stateless());
    }
}
