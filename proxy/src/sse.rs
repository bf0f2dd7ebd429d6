//! Legacy HTTP+SSE (2024-11-05) support: the upstream announces where to POST in an `endpoint` event; the
//! proxy rewrites that URI to its own `/mcp/{server}/message?sessionId=<token>`, the token naming the
//! instance that holds the stream and the upstream's message URI, so every POST reaches that instance
//! from any replica. Every other event passes through untouched.

use bytes::Bytes;

/// Longest prefix of a stream held back while looking for the `endpoint` event.
const MAX_HELD: usize = 64 * 1024;

/// Finds and rewrites the first `endpoint` event of an SSE byte stream.
pub struct EndpointRewriter<F> {
    held: Vec<u8>,
    done: bool,
    rewrite: F,
}

impl<F: FnMut(&str) -> Option<String>> EndpointRewriter<F> {
    /// `rewrite` maps the upstream's endpoint URI to the one the client must use (`None` leaves it).
    pub fn new(rewrite: F) -> Self {
        Self { held: Vec::new(), done: false, rewrite }
    }

    /// Feeds one chunk; returns what can be sent to the client now.
    pub fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.done {
            return chunk;
        }
        self.held.extend_from_slice(&chunk);
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(end) = event_end(&self.held) {
            let event: Vec<u8> = self.held.drain(..end).collect();
            match self.rewrite_event(&event) {
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

    fn rewrite_event(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let event = parse_event(event).filter(|e| e.kind == "endpoint")?;
        let uri = (self.rewrite)(&event.data)?;
        Some(format!("event: endpoint\ndata: {uri}\n\n").into_bytes())
    }
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
}

impl Parser {
    /// Feeds a chunk and returns the events it completed; an event over `MAX_HELD` bytes is an error.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, &'static str> {
        self.held.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.held) {
            let raw: Vec<u8> = self.held.drain(..end).collect();
            if let Some(event) = parse_event(&raw) {
                events.push(event);
            }
        }
        if self.held.len() > MAX_HELD * 64 {
            return Err("SSE event too large");
        }
        Ok(events)
    }
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

    fn rewriter() -> EndpointRewriter<impl FnMut(&str) -> Option<String>> {
        EndpointRewriter::new(|uri: &str| Some(format!("/mcp/s/message?sessionId=T({uri})")))
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
            out.extend_from_slice(&r.feed(Bytes::from(chunk)));
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            ": hello\n\nevent: endpoint\ndata: /mcp/s/message?sessionId=T(/message?sessionId=abc)\n\nevent: message\ndata: {}\n\n"
        );
        assert_eq!(
            r.feed(Bytes::from("data: later\n\n")),
            Bytes::from("data: later\n\n"),
            "passthrough after"
        );
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

    #[test]
    fn holds_only_incomplete_events() {
        let mut r = rewriter();
        assert_eq!(
            r.feed(Bytes::from("event: message\ndata: 1\n\nevent: mess")),
            Bytes::from("event: message\ndata: 1\n\n")
        );
        assert_eq!(r.finish(), Bytes::from("event: mess"));
        let mut big = rewriter();
        let out = big.feed(Bytes::from(vec![b'x'; MAX_HELD + 1]));
        assert_eq!(out.len(), MAX_HELD + 1, "gives up instead of buffering a non-SSE body");
    }
}
