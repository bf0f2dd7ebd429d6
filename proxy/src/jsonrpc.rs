//! One bounded look at a JSON-RPC request body: its id, method and target name, without building a tree
//! of the (possibly large) params: a reader of our own checks the whole body against JSON's grammar and
//! decodes only the members the gateway decides on (through serde_json's visitors a 283-byte 2026-07-28
//! `tools/call` cost ~7,100 instructions; ~5,200 so).

use std::borrow::Cow;

use serde_json::Value;

/// The kind of `params.ref` of `completion/complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// `ref/prompt`: a prompt by name.
    Prompt,
    /// `ref/resource`: a resource template by URI.
    Resource,
}

/// What the gateway needs to know about a JSON-RPC body.
#[derive(Debug, Clone, PartialEq)]
pub enum Rpc {
    /// One request or notification (`id` is `None` for a notification). `name` is `params.name` or
    /// `params.uri`; `protocol_version` is `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    Message {
        id: Option<Value>,
        method: Method,
        name: Option<String>,
        protocol_version: Option<Cow<'static, str>>,
        /// `completion/complete`: what `params.ref` names (its name or URI is `name`).
        reference: Option<Reference>,
        /// Whether `params._meta["io.modelcontextprotocol/clientCapabilities"]` is an object (the last one
        /// when the member repeats, as a JSON object's reader takes it): a 2026-07-28 request must carry it.
        client_capabilities: bool,
    },
    /// A JSON-RPC response sent by the client (to a server-initiated request).
    Response { id: Value },
    /// A batch (only the 2025-03-26 revision allows them).
    Batch,
}

impl Rpc {
    /// Reads `body` as JSON-RPC; `None` when it is not (the upstream will answer with its own error).
    pub fn inspect(body: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(body)?;
        let rpc = if reader.peek()? == b'[' {
            reader.skip().ok()?;
            Self::Batch
        } else {
            Self::read(&mut reader).ok()??
        };
        reader.end().ok()?;
        Some(rpc)
    }

    /// One message: `None` when it is neither a request, a notification nor a response.
    fn read(reader: &mut Reader<'_>) -> Read<Option<Self>> {
        let (mut jsonrpc, mut id, mut method, mut params) = (None, None, None, Params::default());
        let mut seen = 0;
        reader.object(|r, key| {
            match member(&key, &["jsonrpc", "id", "method", "params"], &mut seen)? {
                Some(0) => jsonrpc = r.string_or_null()?,
                Some(1) => id = read_id(r)?,
                Some(2) => method = r.string_or_null()?,
                Some(_) => params = Params::read(r)?,
                None => {
                    r.skip()?;
                }
            }
            Ok(())
        })?;
        if jsonrpc.as_deref() != Some("2.0") {
            return Ok(None);
        }
        let Some(method) = method else { return Ok(id.map(|id| Self::Response { id })) };
        // What the method names: a resource by its URI, anything else by its name (a body that carries
        // both cannot make the gateway decide on one and the upstream act on the other).
        // `completion/complete` names a prompt or a resource template in `params.ref`.
        let (name, reference) = if method == "completion/complete" {
            match params.reference {
                Some(r) if r.kind.as_deref() == Some("ref/prompt") => (r.name, Some(Reference::Prompt)),
                Some(r) if r.kind.as_deref() == Some("ref/resource") => (r.uri, Some(Reference::Resource)),
                _ => (None, None),
            }
        } else if method.starts_with("resources/") {
            (params.uri, None)
        } else {
            (params.name.or(params.uri), None)
        };
        Ok(Some(Self::Message {
            id,
            method: known(KNOWN_METHODS, method),
            name: name.map(Cow::into_owned),
            protocol_version: params.meta.version.map(|v| known(&[STATELESS_REVISION], v)),
            reference,
            client_capabilities: params.meta.capabilities,
        }))
    }

    /// The id a JSON-RPC error answer must carry (`null` when the message had none).
    pub fn error_id(&self) -> Value {
        match self {
            Self::Message { id: Some(id), .. } | Self::Response { id } => id.clone(),
            _ => Value::Null,
        }
    }

    /// Bounded metrics label for the method.
    pub fn method_label(&self) -> &'static str {
        match self {
            Self::Message { method, .. } => method_label(method),
            Self::Response { .. } => "response",
            Self::Batch => "batch",
        }
    }
}

/// A request's method: one of [`KNOWN_METHODS`] is that `&'static str`, any other is owned (reading a
/// `tools/call` allocates nothing for its method).
pub type Method = Cow<'static, str>;

/// MCP methods known by name; anything else is counted as `other` so labels stay bounded. The most
/// frequent first: they are looked up in order.
const KNOWN_METHODS: &[&str] = &[
    "tools/call",
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The `_meta` member of a request's `params` (null when absent, not an object, repeated, or the body is
/// unreadable), read without building the rest of the body.
pub fn params_meta(body: &[u8]) -> Value {
    params_member(body, "_meta")
        .and_then(|meta| serde_json::from_slice::<Value>(meta).ok())
        .filter(Value::is_object)
        .unwrap_or(Value::Null)
}

/// The text of member `name` of a request's `params` (`None` when absent or repeated, when `params` is not
/// an object, or when the body is unreadable), found without building or allocating anything.
pub fn params_member<'a>(body: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut reader = Reader::new(body)?;
    let (mut found, mut seen) = (None, 0);
    reader
        .object(|r, key| {
            if member(&key, &["params"], &mut seen)?.is_none() || r.peek() != Some(b'{') {
                return r.skip().map(drop);
            }
            let mut seen = 0;
            r.object(|r, key| {
                if member(&key, &[name], &mut seen)?.is_some() {
                    found = Some(r.span()?);
                } else {
                    r.skip()?;
                }
                Ok(())
            })
        })
        .ok()?;
    reader.end().ok()?;
    found
}

pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.iter().find(|m| **m == method).copied().unwrap_or("other")
}

/// `text` as the `&'static str` of `table` it equals, or owned when none does.
fn known(table: &[&'static str], text: Cow<'_, str>) -> Cow<'static, str> {
    match table.iter().find(|k| **k == text) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(text.into_owned()),
    }
}

/// A request's id (`None` for `null`): small non-negative integers, as nearly every client numbers its
/// requests, are read here; anything else by serde_json, exactly as a full parse reads it (`1e400` is
/// refused as out of range).
fn read_id(reader: &mut Reader<'_>) -> Read<Option<Value>> {
    let span = reader.span()?;
    if span == b"null" {
        return Ok(None);
    }
    if span.len() <= 18 && span.iter().all(u8::is_ascii_digit) {
        let n = span.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Ok(Some(Value::from(n)));
    }
    serde_json::from_slice(span).map(Some).map_err(|_| Unreadable)
}

/// `params.name` / `params.uri` / what the gateway reads of `params._meta` and `params.ref`.
#[derive(Default)]
struct Params<'a> {
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    meta: Meta<'a>,
    reference: Option<RefParams<'a>>,
}

impl<'a> Params<'a> {
    /// An object, or an array or `null` (which name nothing); any other value makes the body unreadable.
    fn read(reader: &mut Reader<'a>) -> Read<Self> {
        let mut params = Self::default();
        match reader.peek() {
            Some(b'{') => {
                let mut seen = 0;
                reader.object(|r, key| {
                    match member(&key, &["name", "uri", "_meta", "ref"], &mut seen)? {
                        Some(0) => params.name = r.string_or_other()?,
                        Some(1) => params.uri = r.string_or_other()?,
                        Some(2) => params.meta = Meta::read(r)?,
                        Some(_) => params.reference = RefParams::read(r)?,
                        None => {
                            r.skip()?;
                        }
                    }
                    Ok(())
                })?;
            }
            Some(b'[') => {
                reader.skip()?;
            }
            _ => reader.literal(b"null")?,
        }
        Ok(params)
    }
}

/// `params.ref` of `completion/complete` (when it is an object; members that are not strings read as
/// absent).
struct RefParams<'a> {
    kind: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
}

impl<'a> RefParams<'a> {
    fn read(reader: &mut Reader<'a>) -> Read<Option<Self>> {
        if reader.peek() != Some(b'{') {
            return reader.skip().map(|_| None);
        }
        let (mut kind, mut name, mut uri, mut seen) = (None, None, None, 0);
        reader.object(|r, key| {
            match member(&key, &["type", "name", "uri"], &mut seen)? {
                Some(0) => kind = r.string_or_other()?,
                Some(1) => name = r.string_or_other()?,
                Some(_) => uri = r.string_or_other()?,
                None => {
                    r.skip()?;
                }
            }
            Ok(())
        })?;
        Ok(Some(Self { kind, name, uri }))
    }
}

/// First revision with stateless requests and routing headers (and the revision in each request's
/// `_meta`).
pub const STATELESS_REVISION: &str = "2026-07-28";
/// The `_meta` member naming a request's protocol revision (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` member carrying a 2026-07-28 client's capabilities, on every request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The protocol version in a `_meta` object, and whether it carries the client's capabilities as an object
/// (read without building them: a 2026-07-28 client sends them on every request). A repeated member: the
/// last one counts, as a JSON object's reader takes it.
#[derive(Default)]
struct Meta<'a> {
    version: Option<Cow<'a, str>>,
    capabilities: bool,
}

impl<'a> Meta<'a> {
    /// An object; any other value carries nothing.
    fn read(reader: &mut Reader<'a>) -> Read<Self> {
        let mut meta = Self::default();
        if reader.peek() != Some(b'{') {
            reader.skip()?;
            return Ok(meta);
        }
        reader.object(|r, key| {
            match &*key {
                META_PROTOCOL_VERSION => meta.version = r.string_or_other()?,
                META_CLIENT_CAPABILITIES => meta.capabilities = r.skip()?,
                _ => {
                    r.skip()?;
                }
            }
            Ok(())
        })?;
        Ok(meta)
    }
}

/// Why a body was not read: it is not JSON, or not a shape the gateway can decide on (a member it reads
/// repeated, `params` neither an object, an array nor null...).
#[derive(Debug)]
struct Unreadable;

type Read<T> = Result<T, Unreadable>;

/// How deep a body may nest: serde_json's own limit (127 containers), which an upstream parsing with it
/// applies too. The open containers of a skipped value are kept as one bit each in a `u128`.
const MAX_DEPTH: u32 = 127;

/// One pass over a JSON body that decodes only what the gateway reads and checks the rest against JSON's
/// grammar without building or allocating anything. The body must be UTF-8, as JSON text must be (RFC 8259
/// §8.1): checked once as a whole, it is then sliced, not checked string by string. Strings it decodes
/// are checked in full (no lone surrogate in a `\u` escape); strings it skips are checked as serde_json
/// checks the ones it skips (escapes well formed, no control characters).
struct Reader<'a> {
    text: &'a str,
    body: &'a [u8],
    at: usize,
    /// Containers open around the reader's position.
    depth: u32,
}

impl<'a> Reader<'a> {
    /// `None` when the body is not UTF-8.
    fn new(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        Some(Self { text, body, at: 0, depth: 0 })
    }

    /// The next byte that is not whitespace, left unread.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.body.get(self.at) {
            self.at += 1;
        }
        self.body.get(self.at).copied()
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Read<()> {
        if self.peek() != Some(byte) {
            return Err(Unreadable);
        }
        self.at += 1;
        Ok(())
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(Unreadable),
        }
    }

    /// An object: `member` is called with each key and must read its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Read<()>) -> Read<()> {
        self.eat(b'{')?;
        if self.depth == MAX_DEPTH {
            return Err(Unreadable);
        }
        self.depth += 1;
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// A string, decoded: borrowed from the body unless it holds escapes.
    fn string(&mut self) -> Read<Cow<'a, str>> {
        self.eat(b'"')?;
        let run = self.run()?;
        if self.body.get(self.at) == Some(&b'"') {
            self.at += 1;
            return Ok(Cow::Borrowed(run));
        }
        self.escaped(run).map(Cow::Owned)
    }

    /// The rest of a string after `run`, which stopped at an escape (or a control character, or the
    /// body's end).
    #[cold]
    fn escaped(&mut self, run: &str) -> Read<String> {
        let mut text = String::from(run);
        loop {
            match self.body.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(text);
                }
                Some(b'\\') => {
                    self.at += 1;
                    text.push(self.unescape()?);
                }
                _ => return Err(Unreadable),
            }
            text.push_str(self.run()?);
        }
    }

    /// A string skipped: its escapes checked, not decoded.
    fn skip_string(&mut self) -> Read<()> {
        self.eat(b'"')?;
        loop {
            self.run()?;
            match self.body.get(self.at) {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.body.get(self.at) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.at += 1,
                        Some(b'u') => {
                            self.at += 1;
                            self.hex4()?;
                        }
                        _ => return Err(Unreadable),
                    }
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// The text of a string up to its end, an escape or a control character (which JSON does not allow
    /// unescaped in a string): each stops at an ASCII byte, so the slice is always on characters.
    #[inline]
    fn run(&mut self) -> Read<&'a str> {
        let start = self.at;
        self.at += run_len(&self.body[start..]);
        self.text.get(start..self.at).ok_or(Unreadable)
    }

    /// The character escaped after a backslash.
    fn unescape(&mut self) -> Read<char> {
        let byte = *self.body.get(self.at).ok_or(Unreadable)?;
        self.at += 1;
        let code = match byte {
            b'"' | b'\\' | b'/' => u32::from(byte),
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => 0x0a,
            b'r' => 0x0d,
            b't' => 0x09,
            b'u' => match self.hex4()? {
                // A leading surrogate must be followed by an escaped trailing one.
                unit @ 0xd800..=0xdbff => {
                    if self.body.get(self.at..self.at + 2) != Some(b"\\u") {
                        return Err(Unreadable);
                    }
                    self.at += 2;
                    let low = self.hex4()?;
                    if !(0xdc00..=0xdfff).contains(&low) {
                        return Err(Unreadable);
                    }
                    0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00)
                }
                unit => u32::from(unit),
            },
            _ => return Err(Unreadable),
        };
        // A trailing surrogate alone is no character.
        char::from_u32(code).ok_or(Unreadable)
    }

    fn hex4(&mut self) -> Read<u16> {
        let digits = self.body.get(self.at..self.at + 4).ok_or(Unreadable)?;
        let mut unit = 0u16;
        for &d in digits {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(Unreadable),
            };
            unit = unit << 4 | u16::from(v);
        }
        self.at += 4;
        Ok(unit)
    }

    fn digits(&mut self) -> usize {
        let n = self.body[self.at..].iter().take_while(|b| b.is_ascii_digit()).count();
        self.at += n;
        n
    }

    fn number(&mut self) -> Read<()> {
        if self.body.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.body.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Unreadable),
        }
        if self.body.get(self.at) == Some(&b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(Unreadable);
            }
        }
        if let Some(b'e' | b'E') = self.body.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.body.get(self.at) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(Unreadable);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if !self.body[self.at..].starts_with(word) {
            return Err(Unreadable);
        }
        self.at += word.len();
        Ok(())
    }

    /// Any value, checked and skipped; `Ok(true)` when it was an object. Without recursion: bit `n` of
    /// `objects` says whether the container `n` levels into the value is an object.
    fn skip(&mut self) -> Read<bool> {
        let is_object = match self.peek() {
            Some(b'{') => true,
            Some(b'[') => false,
            // Most values the gateway skips are not containers.
            Some(b'"') => return self.skip_string().map(|()| false),
            Some(b'-' | b'0'..=b'9') => return self.number().map(|()| false),
            _ => false,
        };
        let base = self.depth;
        let mut objects = 0u128;
        loop {
            // A value.
            match self.peek().ok_or(Unreadable)? {
                open @ (b'{' | b'[') => {
                    self.at += 1;
                    if self.depth == MAX_DEPTH {
                        return Err(Unreadable);
                    }
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                    } else {
                        let level = self.depth - base;
                        objects = objects & !(1 << level) | u128::from(open == b'{') << level;
                        self.depth += 1;
                        if open == b'{' {
                            self.skip_string()?;
                            self.eat(b':')?;
                        }
                        continue;
                    }
                }
                b'"' => self.skip_string()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(Unreadable),
            }
            // After a value: the next one in its container, or the container's end.
            loop {
                if self.depth == base {
                    return Ok(is_object);
                }
                let in_object = objects >> (self.depth - base - 1) & 1 == 1;
                match (self.peek(), in_object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        if in_object {
                            self.skip_string()?;
                            self.eat(b':')?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        self.depth -= 1;
                    }
                    _ => return Err(Unreadable),
                }
            }
        }
    }

    /// A string, or `None` for any other value (skipped).
    fn string_or_other(&mut self) -> Read<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'"') {
            return self.string().map(Some);
        }
        self.skip()?;
        Ok(None)
    }

    /// A string or `null`; any other value makes the body unreadable.
    fn string_or_null(&mut self) -> Read<Option<Cow<'a, str>>> {
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'n') => self.literal(b"null").map(|()| None),
            _ => Err(Unreadable),
        }
    }

    /// The bytes of the next value, checked.
    fn span(&mut self) -> Read<&'a [u8]> {
        self.peek();
        let start = self.at;
        self.skip()?;
        Ok(&self.body[start..self.at])
    }
}

/// How many bytes of `bytes` come before the first `"`, `\\` or control character (or all of them), eight
/// at a time: in a word, `(w - 0x01..01 * n) & !w & 0x80..80` flags its bytes below `n`, exactly up to and
/// including the first such byte (a borrow may flag bytes after it, never before); equality is "below 1"
/// of the word XORed with the byte. serde_json scans its strings the same way.
#[inline]
fn run_len(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let (words, rest) = bytes.as_chunks::<8>();
    let mut n = 0;
    for word in words {
        let w = u64::from_le_bytes(*word);
        let stops = below(w, 0x20) | below(w ^ QUOTES, 1) | below(w ^ BACKSLASHES, 1);
        if stops != 0 {
            return n + (stops.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(rest.len())
}

/// Which of `names` `key` is; a key seen before (`seen` holds one bit for each of `names`) makes the body
/// unreadable: parsers disagree on repeated keys (first wins, last wins, error), so a body that repeats one
/// the gateway decides on is not read (nor let through for restricted callers).
fn member(key: &str, names: &[&str], seen: &mut u8) -> Read<Option<usize>> {
    let Some(i) = names.iter().position(|n| *n == key) else { return Ok(None) };
    if *seen & 1 << i != 0 {
        return Err(Unreadable);
    }
    *seen |= 1 << i;
    Ok(Some(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inspect(v: Value) -> Option<Rpc> {
        Rpc::inspect(v.to_string().as_bytes())
    }

    #[test]
    fn client_capabilities_are_found_as_params_meta_finds_them() {
        let key = "io.modelcontextprotocol/clientCapabilities";
        let declared =
            |body: &[u8]| matches!(Rpc::inspect(body), Some(Rpc::Message { client_capabilities: true, .. }));
        // Each after `{"jsonrpc":"2.0","id":1,"method":"tools/call",` (or alone where it starts with `[` or
        // is not an object).
        let rests: &[&str] = &[
            r#""params":{"name":"e","arguments":{"m":"x\"y"},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"a":[1,{"b":2}]},"io.modelcontextprotocol/clientInfo":{"name":"c"}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":5}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":[]}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":null}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":"x"}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientCapabilities":1}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":1,"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
            r#""params":{"_meta":{"other":{}}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}},"_meta":{}}}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}},"params":{}}"#,
            r#""params":{"_meta":5}}"#,
            r#""params":{"_meta":null}}"#,
            r#""params":[{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}]}"#,
            r#""params":"x"}"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}} trailing"#,
            r#""params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"#,
            r#""params":{"_meta":{"io.model\u0063ontextprotocol/clientCapabilities":{}}}}"#,
        ];
        let mut bodies: Vec<String> =
            rests.iter().map(|r| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call",{r}"#)).collect();
        bodies.extend(
            [
                r#"[{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}]"#,
                "not json",
                "",
            ]
            .map(String::from),
        );
        for body in &bodies {
            let expected = params_meta(body.as_bytes()).get(key).is_some_and(Value::is_object);
            assert_eq!(declared(body.as_bytes()), expected, "{body}");
        }
        assert!(declared(bodies[0].as_bytes()), "the case that matters");
        assert!(declared(bodies[7].as_bytes()), "the last of a repeated member counts");
        assert!(declared(bodies[17].as_bytes()), "an escaped name is the name");
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"_meta\":{\"k\":{}}}}\xff"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":{\"x\":\"\xff\",\"_meta\":{\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
        ] {
            let expected = params_meta(body).get(key).is_some_and(Value::is_object);
            assert_eq!(declared(body), expected, "not UTF-8: {body:?}");
        }
    }

    #[test]
    fn params_members_are_found_once_or_not_at_all() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"q":[1,{"a":"\u00e9"}]}}}"#;
        assert_eq!(params_member(body, "arguments"), Some(&br#"{"q":[1,{"a":"\u00e9"}]}"#[..]));
        assert_eq!(params_member(body, "name"), Some(&br#""x""#[..]));
        assert_eq!(params_member(body, "uri"), None);
        assert_eq!(
            params_member(br#"{"params":{"arguments":1,"arguments":2}}"#, "arguments"),
            None,
            "repeated"
        );
        assert_eq!(params_member(br#"{"params":{"arguments":1},"params":{}}"#, "arguments"), None);
        assert_eq!(params_member(br#"{"params":[{"arguments":1}]}"#, "arguments"), None, "positional");
        assert_eq!(params_member(br#"{"params":{"arguments":1}} x"#, "arguments"), None, "trailing bytes");
    }

    #[test]
    fn params_meta_reads_only_meta() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"big":[1,2,{"_meta":0}]},"_meta":{"progressToken":7}}}"#;
        assert_eq!(params_meta(body), serde_json::json!({"progressToken": 7}));
        assert_eq!(params_meta(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), Value::Null);
        assert_eq!(params_meta(br#"{"params":[1]}"#), Value::Null, "positional params have no _meta");
        assert_eq!(params_meta(b"not json"), Value::Null);
        assert_eq!(params_meta(br#"{"params":{"_meta":{"a":1},"_meta":{"b":2}}}"#), Value::Null, "repeated");
        assert_eq!(params_meta(br#"{"params":{"_meta":5}}"#), Value::Null, "not an object");
    }

    #[test]
    fn requests_and_notifications() {
        let call = inspect(json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
            "params":{"arguments":{"name":"not me","big":[1,2,3]},"name":"echo"}}));
        assert_eq!(
            call,
            Some(Rpc::Message {
                id: Some(json!(3)),
                method: "tools/call".into(),
                name: Some("echo".into()),
                protocol_version: None,
                reference: None,
                client_capabilities: false,
            })
        );
        let modern = inspect(json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{
            "io.modelcontextprotocol/clientCapabilities":{"x":[1]},
            "io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}));
        assert!(
            matches!(modern, Some(Rpc::Message { protocol_version: Some(Cow::Borrowed(v)), .. }) if v == "2026-07-28")
        );
        assert_eq!(call.as_ref().unwrap().method_label(), "tools/call");
        // Known methods and revisions are the gateway's own strings; others are owned.
        assert!(matches!(call, Some(Rpc::Message { method: Cow::Borrowed("tools/call"), .. })));
        let later = inspect(json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
            "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2027-01-01"}}}));
        assert!(
            matches!(later, Some(Rpc::Message { protocol_version: Some(Cow::Owned(ref v)), .. }) if v == "2027-01-01")
        );
        let read =
            inspect(json!({"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}));
        assert!(matches!(read, Some(Rpc::Message { name: Some(ref n), .. }) if n == "file:///x"));
        let note = inspect(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert_eq!(note.error_id(), Value::Null);
        let odd = inspect(json!({"jsonrpc":"2.0","id":1,"method":"x/y","params":[1,2]})).unwrap();
        assert_eq!(odd.method_label(), "other");
        assert!(matches!(odd, Rpc::Message { method: Cow::Owned(ref m), .. } if m == "x/y"));
        let non_str_name =
            inspect(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"a":1}}}));
        assert!(matches!(non_str_name, Some(Rpc::Message { name: None, .. })));
        let escaped =
            Rpc::inspect(br#"{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"e\u0063ho"}}"#);
        assert!(
            matches!(escaped, Some(Rpc::Message { ref method, name: Some(ref n), .. }) if method == "tools/call" && n == "echo")
        );
    }

    #[test]
    fn responses_batches_and_garbage() {
        assert_eq!(
            inspect(json!({"jsonrpc":"2.0","id":9,"result":{}})),
            Some(Rpc::Response { id: json!(9) })
        );
        assert_eq!(Rpc::inspect(b" [{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]"), Some(Rpc::Batch));
        assert_eq!(Rpc::inspect(b"{not json"), None);
        assert_eq!(Rpc::inspect(b""), None);
        assert_eq!(inspect(json!({"id":1,"method":"ping"})), None, "jsonrpc member is required");
        assert_eq!(inspect(json!({"jsonrpc":"1.0","id":1,"method":"ping"})), None);
    }

    /// A body whose `arguments` is `value`.
    fn call_with(value: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"e","arguments":{value}}}}}"#
        )
    }

    #[test]
    fn skipped_values_are_held_to_json_grammar() {
        let valid = [
            "{}",
            "[]",
            r#"{"a":[1,-2,3.5,-0.25e+3,4E-2,0,true,false,null,"s",{"b":{}}],"c":[[],[[]]]}"#,
            r#" { "a" : [ 1 , 2 ] , "b" : "x\"\\\/\b\f\n\r\t\u00e9\ud800" } "#,
            "\"é\"",
            "-0",
        ];
        for value in valid {
            let body = call_with(value);
            assert!(Rpc::inspect(body.as_bytes()).is_some(), "{body}");
        }
        let invalid = [
            "01",
            "1.",
            "-",
            "1e",
            "+1",
            ".5",
            "tru",
            "nul",
            "True",
            "[1,]",
            "[,1]",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":}"#,
            "[1}",
            r#"{"a":1]"#,
            "[",
            "\"x",
            "\"\u{1}\"",
            r#""\q""#,
            r#""\u12g4""#,
            r#""\u12""#,
            "[1 2]",
            "'x'",
            "",
        ];
        for value in invalid {
            let body = call_with(value);
            assert!(serde_json::from_str::<Value>(&body).is_err(), "a full parse refuses {body}");
            assert_eq!(Rpc::inspect(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        let arrays = |n: usize| call_with(&format!("{}{}", "[".repeat(n), "]".repeat(n)));
        let objects = |n: usize| call_with(&format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n)));
        for body in (120..130).flat_map(|n| [arrays(n), objects(n)]) {
            let full = serde_json::from_str::<Value>(&body).is_ok();
            assert_eq!(Rpc::inspect(body.as_bytes()).is_some(), full, "{body}");
        }
        assert!(Rpc::inspect(arrays(120).as_bytes()).is_some());
        assert_eq!(Rpc::inspect(arrays(100_000).as_bytes()), None, "no recursion, no overflow");
    }

    #[test]
    fn decoded_strings_are_checked_in_full() {
        let named = |name: &str| match Rpc::inspect(call_with_name(name).as_bytes()) {
            Some(Rpc::Message { name, .. }) => Ok(name),
            other => Err(other),
        };
        assert_eq!(named(r#""\ud83d\ude00 \u00e9\t""#), Ok(Some("😀 é\t".into())), "a pair is one character");
        for lone in [r#""\ud83d""#, r#""\ud83dx""#, r#""\ud83d\u0041""#, r#""\ude00""#] {
            assert_eq!(named(lone), Err(None), "a lone surrogate is not a name: {lone}");
            assert!(serde_json::from_str::<Value>(&call_with_name(lone)).is_err());
        }
        assert_eq!(named("5"), Ok(None), "a name that is not a string names nothing");
        assert_eq!(named("null"), Ok(None));
    }

    fn call_with_name(name: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{name}}}}}"#)
    }

    #[test]
    fn repeated_members_the_gateway_reads_are_refused() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{},"params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","u\u0072i":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"a","name":"b"}}}"#,
        ] {
            assert_eq!(Rpc::inspect(body.as_bytes()), None, "{body}");
        }
        // Members it skips may repeat, as JSON allows.
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","x":1,"x":2,"params":{"name":"a","arguments":{},"arguments":{}}}"#;
        assert!(Rpc::inspect(body.as_bytes()).is_some());
    }

    #[test]
    fn ids_read_as_a_full_parse_reads_them() {
        for id in [
            "0",
            "7",
            "123456789012345678",
            "1234567890123456789012",
            "-3",
            "1.5",
            "1e2",
            r#""a""#,
            "[1]",
            "{}",
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let full: Value = serde_json::from_str(&body).unwrap();
            let Some(Rpc::Message { id: Some(read), .. }) = Rpc::inspect(body.as_bytes()) else {
                panic!("{body}")
            };
            assert_eq!(read, full["id"], "{body}");
        }
        let body = r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#;
        assert_eq!(
            Rpc::inspect(body.as_bytes()),
            None,
            "an id out of range is refused as serde_json refuses it"
        );
        let note = r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#;
        assert!(matches!(Rpc::inspect(note.as_bytes()), Some(Rpc::Message { id: None, .. })));
    }

    #[test]
    fn completion_references() {
        let complete = |r: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{r}}}}}"#
            );
            match Rpc::inspect(body.as_bytes()) {
                Some(Rpc::Message { name, reference, .. }) => (name, reference),
                other => panic!("{body}: {other:?}"),
            }
        };
        assert_eq!(
            complete(r#"{"type":"ref/prompt","name":"p","uri":"u"}"#),
            (Some("p".into()), Some(Reference::Prompt))
        );
        assert_eq!(
            complete(r#"{"uri":"u","type":"ref/resource"}"#),
            (Some("u".into()), Some(Reference::Resource))
        );
        assert_eq!(complete(r#"{"type":"ref/other","name":"p"}"#), (None, None));
        assert_eq!(complete(r#"{"type":5,"name":"p"}"#), (None, None));
        // An array is not a reference, whatever a positional reading of it would say.
        assert_eq!(complete(r#"["ref/prompt","p"]"#), (None, None));
        assert_eq!(complete("null"), (None, None));
    }

    #[test]
    fn only_utf8_is_read() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"météo","arguments":{"k":"日本"}}}"#;
        let Some(Rpc::Message { name, .. }) = Rpc::inspect(body.as_bytes()) else { panic!("a request") };
        assert_eq!(name.as_deref(), Some("météo"));
        // JSON text is UTF-8 (RFC 8259 §8.1): bytes that are not are no JSON, wherever they stand.
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"arguments\":{\"k\":\"\xc3\"}}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\xff",
        ] {
            assert!(serde_json::from_slice::<Value>(body).is_err(), "a full parse refuses {body:?}");
            assert_eq!(Rpc::inspect(body), None, "{body:?}");
            assert_eq!(params_meta(body), Value::Null, "{body:?}");
        }
    }

    #[test]
    fn string_runs_end_where_a_byte_by_byte_scan_ends_them() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len());
        // Every stop, and bytes next to them that are not stops (DEL, UTF-8, `!`, `]`, space), at every
        // offset of words and their remainder.
        for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for filler in [b'a', 0x7f, 0x80, 0xff, b'!', b']', b' ', 0x21, 0x5d] {
                for len in 0..20 {
                    for at in 0..=len {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = stop;
                            // A second stop after the first may not hide it.
                            if at + 1 < len {
                                bytes[at + 1] = b'"';
                            }
                        }
                        assert_eq!(run_len(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }
}
