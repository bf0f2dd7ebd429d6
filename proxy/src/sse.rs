//! Legacy HTTP+SSE (2024-11-05) support: the upstream announces where to POST in an `endpoint` event; the
//! proxy rewrites that URI to its own `/mcp/{server}/message?sessionId=<token>`, the token naming the
//! instance that holds the stream and the upstream's message URI, so every POST reaches that instance
//! from any replica. Every other event passes through untouched.

use bytes::Bytes;

/// Longest prefix of a stream held back while looking for the `endpoint` event.
const MAX_HELD: usize = 64 * 1024;

/// Finds and rewrites the first `endpoint` event of an SSE byte stream.
#[derive(Default)]
pub struct EndpointRewriter {
    held: Vec<u8>,
    done: bool,
}

impl EndpointRewriter {
    /// Feeds one chunk; returns what can be sent to the client now. `rewrite` maps the upstream's endpoint
    /// URI to the one the client must use (`None` leaves it).
    pub fn feed(&mut self, chunk: Bytes, mut rewrite: impl FnMut(&str) -> Option<String>) -> Bytes {
        if self.done {
            return chunk;
        }
        self.held.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(end) = event_end(&self.held) {
            let event: Vec<u8> = self.held.drain(..end).collect();
            match rewrite_event(&event, &mut rewrite) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    out.append(&mut self.held);
                    self.done = true;
                    return Bytes::from(out);
                }
                None => out.extend_from_slice(&event),
            }
        }
        if self.held.len() > MAX_HELD {
            // Not an SSE stream we understand: stop looking rather than hold it back.
            out.append(&mut self.held);
            self.done = true;
        }
        Bytes::from(out)
    }

    /// The held-back bytes at the end of the stream.
    pub fn finish(&mut self) -> Bytes {
        self.done = true;
        Bytes::from(std::mem::take(&mut self.held))
    }
}

/// The endpoint event rewritten, when `event` is one and `rewrite` maps its URI.
fn rewrite_event(event: &[u8], rewrite: &mut impl FnMut(&str) -> Option<String>) -> Option<Vec<u8>> {
    let event = parse_event(event).filter(|e| e.kind == "endpoint")?;
    let uri = rewrite(&event.data)?;
    Some(format!("event: endpoint\ndata: {uri}\n\n").into_bytes())
}

/// What `/mcp` changes in the messages an upstream answers with (`MessageRewriter`).
#[derive(Debug, Clone, Default)]
pub struct Rewrites {
    /// Requests the upstream sends the client (sampling, elicitation, roots) get ids naming the upstream,
    /// `<prefix><original id as JSON>`, so that the client's answer, posted to `/mcp`, finds its way back
    /// ([`original_id`]).
    pub request_ids: Option<std::sync::Arc<str>>,
    /// The answer goes to a 2026-07-28 client: a result without `resultType` (a legacy session's, or an
    /// older server's, for which missing means complete) gets it, and with `cacheable` `ttlMs` /
    /// `cacheScope` too, which 2026-07-28 clients require.
    pub complete: Option<Completion>,
}

/// Fields a legacy result lacks for a 2026-07-28 client.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The method's results carry caching hints (`resources/read`).
    pub cacheable: bool,
}

impl Rewrites {
    pub fn is_empty(&self) -> bool {
        self.request_ids.is_none() && self.complete.is_none()
    }

    /// Whether a message's raw bytes may need a change (cheap look before parsing): a request to give
    /// an id, or a result lacking a field to add.
    pub fn concerns(&self, raw: &[u8]) -> bool {
        (self.request_ids.is_some() && Needle::Method.in_(raw))
            || self.complete.is_some_and(|c| {
                // Most answers carry `resultType`: one scan settles them.
                let typed = Needle::ResultType.in_(raw);
                (!typed && Needle::Result.in_(raw))
                    || (typed && c.cacheable && !(Needle::TtlMs.in_(raw) && Needle::CacheScope.in_(raw)))
            })
    }

    /// Changes one JSON-RPC message; whether it changed.
    pub fn apply(&self, message: &mut serde_json::Value) -> bool {
        let mut changed = false;
        if let Some(prefix) = &self.request_ids
            && message.get("method").is_some()
            && let Some(id) = message.get_mut("id")
        {
            *id = serde_json::Value::String(format!("{prefix}{id}"));
            changed = true;
        }
        if let Some(completion) = self.complete
            && let Some(result) = message.get_mut("result").and_then(serde_json::Value::as_object_mut)
        {
            result.entry("resultType").or_insert_with(|| "complete".into());
            if completion.cacheable {
                result.entry("ttlMs").or_insert_with(|| 0.into());
                result.entry("cacheScope").or_insert_with(|| "private".into());
            }
            changed = true;
        }
        changed
    }

    /// A whole JSON body with its message changed (unchanged when it is not one message).
    pub fn apply_body(&self, body: &[u8]) -> Bytes {
        if !self.concerns(body) {
            return Bytes::copy_from_slice(body);
        }
        let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Bytes::copy_from_slice(body);
        };
        if self.apply(&mut message) { Bytes::from(message.to_string()) } else { Bytes::copy_from_slice(body) }
    }
}

/// Applies [`Rewrites`] to an SSE stream event by event; only whole events are sent on.
pub struct MessageRewriter {
    held: Vec<u8>,
    /// As `Parser::scanned`.
    scanned: usize,
    rewrites: Rewrites,
    /// The stream stopped looking like SSE (an event over the bound): pass everything through.
    gave_up: bool,
}

impl MessageRewriter {
    pub fn new(rewrites: Rewrites) -> Self {
        Self { held: Vec::new(), scanned: 0, rewrites, gave_up: false }
    }

    /// Feeds one chunk; returns the whole events it completed, rewritten where needed.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.gave_up {
            return chunk;
        }
        // `concerns` judges one message: a chunk of several events, one of which carries `resultType` (or
        // the caching hints) that another lacks, is looked at event by event.
        if self.held.is_empty()
            && chunk.ends_with(b"\n\n")
            && !self.rewrites.concerns(&chunk)
            && (self.rewrites.complete.is_none() || event_end(&chunk) == Some(chunk.len()))
        {
            return chunk;
        }
        self.held.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(self.held.len());
        let rewrites = &self.rewrites;
        let start = whole_events(&self.held, self.scanned, |raw| match Self::rewrite(rewrites, raw) {
            Some(event) => out.extend_from_slice(&event),
            None => out.extend_from_slice(raw),
        });
        self.held.drain(..start);
        self.scanned = self.held.len();
        if self.held.len() > MAX_HELD * 64 {
            out.append(&mut self.held);
            self.gave_up = true;
        }
        Bytes::from(out)
    }

    /// The bytes held back at the end of the stream.
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.held))
    }

    fn rewrite(rewrites: &Rewrites, raw: &[u8]) -> Option<Vec<u8>> {
        if !rewrites.concerns(raw) {
            return None;
        }
        let event = parse_event(raw)?;
        let mut message: serde_json::Value = serde_json::from_str(&event.data).ok()?;
        if !rewrites.apply(&mut message) {
            return None;
        }
        let text = std::str::from_utf8(raw).ok()?;
        let mut out = String::with_capacity(raw.len() + 64);
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with("data:")) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("data: ");
        out.push_str(&message.to_string());
        out.push_str("\n\n");
        Some(out.into_bytes())
    }
}

/// `data` (whole SSE events) without the events whose bytes contain `needle`.
pub fn without_events(data: Bytes, needle: &[u8]) -> Bytes {
    if !contains(&data, needle) {
        return data;
    }
    let mut out = Vec::with_capacity(data.len());
    let mut start = 0;
    while let Some(end) = event_end(&data[start..]) {
        let event = &data[start..start + end];
        if !contains(event, needle) {
            out.extend_from_slice(event);
        }
        start += end;
    }
    out.extend_from_slice(&data[start..]);
    Bytes::from(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// The keys [`Rewrites`] looks for in every answer, with their searchers built once.
#[derive(Clone, Copy)]
enum Needle {
    Method,
    Result,
    ResultType,
    TtlMs,
    CacheScope,
}

impl Needle {
    fn in_(self, haystack: &[u8]) -> bool {
        use memchr::memmem::Finder;
        use std::sync::LazyLock;
        static FINDERS: LazyLock<[Finder<'static>; 5]> = LazyLock::new(|| {
            [
                Finder::new(b"\"method\""),
                Finder::new(b"\"result\""),
                Finder::new(b"\"resultType\""),
                Finder::new(b"\"ttlMs\""),
                Finder::new(b"\"cacheScope\""),
            ]
        });
        static LAST: LazyLock<memchr::memmem::FinderRev<'static>> =
            LazyLock::new(|| memchr::memmem::FinderRev::new(b"\"resultType\""));
        match self {
            // Serializers put it last in the result, often at the end of the message: searched backwards.
            Self::ResultType => LAST.rfind(haystack).is_some(),
            _ => FINDERS[self as usize].find(haystack).is_some(),
        }
    }
}

/// The upstream's own id of a request [`Rewrites::request_ids`] renamed with `prefix`, if `id` is one.
pub fn original_id(id: &serde_json::Value, prefix: &str) -> Option<serde_json::Value> {
    serde_json::from_str(id.as_str()?.strip_prefix(prefix)?).ok()
}

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent).
    pub kind: String,
    /// The `data:` lines joined with newlines.
    pub data: String,
}

/// Incremental SSE parser: feed chunks, get whole events.
#[derive(Debug, Default)]
pub struct Parser {
    held: Vec<u8>,
    /// Bytes of `held` already looked at without finding an event's end: the next look starts there
    /// (less the 3 bytes an end can straddle), so a large event arriving in many chunks is scanned once.
    scanned: usize,
}

impl Parser {
    /// Feeds a chunk and returns the events it completed; an event over `MAX_HELD` bytes is an error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, &'static str> {
        self.held.extend_from_slice(chunk);
        let mut events = Vec::new();
        let start = whole_events(&self.held, self.scanned, |raw| {
            if let Some(event) = parse_event(raw) {
                events.push(event);
            }
        });
        // One move of the incomplete tail per chunk, not one per event.
        self.held.drain(..start);
        self.scanned = self.held.len();
        if self.held.len() > MAX_HELD * 64 {
            return Err("SSE event too large");
        }
        Ok(events)
    }
}

/// Calls `each` with every whole event at the start of `buf`, looking for event ends from `scanned`
/// on (the part before it holds none: a previous look); returns where the incomplete rest begins.
fn whole_events(buf: &[u8], scanned: usize, mut each: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    let mut from = scanned.saturating_sub(3);
    loop {
        let base = from.max(start);
        let Some(rel) = event_end(&buf[base..]) else { break };
        let end = base + rel;
        each(&buf[start..end]);
        start = end;
        from = end;
    }
    start
}

pub(crate) fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut kind = None;
    let mut data: Option<String> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    Some(Event { kind: kind.unwrap_or_else(|| "message".to_owned()), data: data? })
}

/// End (exclusive) of the first complete event: a blank line in any of SSE's line endings.
pub(crate) fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        let nl = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let next = i + nl;
        match buf.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            Some(b'\r') if next + 1 < buf.len() => return Some(next + 1),
            _ => i = next,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_gateway(uri: &str) -> Option<String> {
        Some(format!("/mcp/s/message?sessionId=T({uri})"))
    }

    fn rewriter() -> EndpointRewriter {
        EndpointRewriter::default()
    }

    #[test]
    fn rewrites_the_endpoint_event_across_chunks() {
        let mut r = rewriter();
        let mut out = Vec::new();
        for chunk in [
            ": hello\n\n",
            "event: endp",
            "oint\r\ndata: /message?sessionId=abc\r\n",
            "\r\nevent: message\ndata: {}\n\n",
        ] {
            out.extend_from_slice(&r.feed(Bytes::from(chunk), to_gateway));
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            ": hello\n\nevent: endpoint\ndata: /mcp/s/message?sessionId=T(/message?sessionId=abc)\n\nevent: message\ndata: {}\n\n"
        );
        assert_eq!(
            r.feed(Bytes::from("data: later\n\n"), to_gateway),
            Bytes::from("data: later\n\n"),
            "passthrough after"
        );
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = b"event: a\r\ndata: 1\r\n\r\ndata: 2\n\n: c\n\ndata: x\rdata: y\r\r\n";
        let whole = Parser::default().feed(stream).unwrap();
        assert_eq!(whole.len(), 3, "{whole:?}");
        for cut in 0..=stream.len() {
            for second in cut..=stream.len() {
                let mut p = Parser::default();
                let mut events = p.feed(&stream[..cut]).unwrap();
                events.extend(p.feed(&stream[cut..second]).unwrap());
                events.extend(p.feed(&stream[second..]).unwrap());
                assert_eq!(events, whole, "cut at {cut} and {second}");
            }
        }
        // Byte by byte, a long event too: each byte is looked at a bounded number of times.
        let mut p = Parser::default();
        let long = [b"data: ".as_slice(), &vec![b'x'; 100_000], b"\n\n"].concat();
        let mut got = Vec::new();
        for b in &long {
            got.extend(p.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data.len(), 100_000);
    }

    #[test]
    fn parses_events_across_chunks() {
        let mut p = Parser::default();
        assert_eq!(p.feed(b"event: endpoint\ndata: /m?s=1\n").unwrap(), []);
        let events = p.feed(b"\n: comment\n\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(
            events,
            [
                Event { kind: "endpoint".into(), data: "/m?s=1".into() },
                Event { kind: "message".into(), data: "{\"a\":\n1}".into() }
            ]
        );
    }

    /// Whether an answer gets `resultType` (and the caching hints) must not depend on what else arrived in
    /// the same chunk: another event carrying them says nothing about this one (found by fuzzing,
    /// `fuzz/regressions/sse_proxy`).
    #[test]
    fn each_event_of_a_chunk_is_completed_on_its_own() {
        let bare = r#"data: {"jsonrpc":"2.0","id":1,"result":{}}"#;
        let typed = r#"data: {"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","ttlMs":5,"cacheScope":"public"}}"#;
        for cacheable in [false, true] {
            let rewrites = Rewrites { request_ids: None, complete: Some(Completion { cacheable }) };
            let chunk = Bytes::from(format!("{bare}\n\n{typed}\n\n"));
            let out = MessageRewriter::new(rewrites).feed(chunk);
            let events = Parser::default().feed(&out).unwrap();
            assert_eq!(events.len(), 2, "{cacheable}");
            let first: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
            assert_eq!(first["result"]["resultType"], "complete", "{cacheable}: {}", events[0].data);
            assert_eq!(first["result"].get("ttlMs").is_some(), cacheable);
            let second: serde_json::Value = serde_json::from_str(&events[1].data).unwrap();
            assert_eq!(second["result"]["ttlMs"], 5, "a complete answer is left as it is");
        }
    }

    #[test]
    fn holds_only_incomplete_events() {
        let mut r = rewriter();
        assert_eq!(
            r.feed(Bytes::from("event: message\ndata: 1\n\nevent: mess"), to_gateway),
            Bytes::from("event: message\ndata: 1\n\n")
        );
        assert_eq!(r.finish(), Bytes::from("event: mess"));
        let mut big = rewriter();
        let out = big.feed(Bytes::from(vec![b'x'; MAX_HELD + 1]), to_gateway);
        assert_eq!(out.len(), MAX_HELD + 1, "gives up instead of buffering a non-SSE body");
    }
}
