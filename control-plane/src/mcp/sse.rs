//! An incremental `text/event-stream` parser: feed it chunks as they arrive, take complete events out.

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field; empty means `message`.
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    pub id: Option<String>,
}

/// Longest line, and longest event (its fields together), a server may send: past either the stream is
/// refused, so an upstream sending one endless line cannot grow the control plane's memory without bound.
pub const MAX_EVENT: usize = 8 * 1024 * 1024;

/// A line or an event over [`MAX_EVENT`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an SSE line or event over {MAX_EVENT} bytes")]
pub struct TooLarge;

/// Parser state across chunks. Lines may end in `\n`, `\r\n` or `\r`; comments (`:`) are skipped.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no line end (not scanned again: a long line costs linear time).
    scanned: usize,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Adds a chunk and returns every event it completed; refuses a line or an event over [`MAX_EVENT`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLarge> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            let Some(at) = self.buffer[self.scanned..].iter().position(|b| *b == b'\n' || *b == b'\r') else {
                self.scanned = self.buffer.len();
                break;
            };
            let end = self.scanned + at;
            // A lone '\r' at the end of the buffer may be the first half of "\r\n": wait for more.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                self.scanned = end;
                break;
            }
            let skip =
                if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') { 2 } else { 1 };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            self.scanned = 0;
            let line = String::from_utf8_lossy(&line);
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            if self.current.data.len() + self.current.event.len() > MAX_EVENT {
                return Err(TooLarge);
            }
        }
        if self.buffer.len() > MAX_EVENT {
            return Err(TooLarge);
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let complete = std::mem::take(&mut self.has_data) || !event.event.is_empty();
            return complete.then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_and_line_endings() {
        let mut p = Parser::default();
        assert!(p.feed(b"id: 1\r\nevent: endpoint\r\ndata: /message?s").unwrap().is_empty());
        let events = p.feed(b"essionId=x\r\n\r\n: keep-alive\n\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "endpoint");
        assert_eq!(events[0].data, "/message?sessionId=x");
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[1].data, "{\"a\":\n1}");
        assert_eq!(p.feed(b"data: x\r").unwrap().len(), 0);
        assert_eq!(p.feed(b"\n\r\n").unwrap().len(), 1);
    }

    #[test]
    fn an_endless_line_or_event_is_refused() {
        let mut p = Parser::default();
        let chunk = vec![b'a'; 64 * 1024];
        assert!(p.feed(b"data: ").unwrap().is_empty());
        let mut fed = 6;
        let refused = loop {
            match p.feed(&chunk) {
                Ok(events) => assert!(events.is_empty()),
                Err(e) => break e,
            }
            fed += chunk.len();
            assert!(fed <= MAX_EVENT + chunk.len(), "still buffering after {fed} bytes");
        };
        assert_eq!(refused, TooLarge);
        // Many short data lines of one event add up the same way.
        let mut p = Parser::default();
        let line = [b"data: ".as_slice(), &vec![b'b'; 1023], b"\n"].concat();
        let many: Vec<u8> = line.iter().copied().cycle().take(line.len() * 1024).collect();
        let outcome = (0..=MAX_EVENT / many.len() + 1).try_for_each(|_| p.feed(&many).map(drop));
        assert_eq!(outcome, Err(TooLarge));
    }

    #[test]
    fn priming_event_without_data_is_not_an_event() {
        let mut p = Parser::default();
        assert!(p.feed(b"id: abc\ndata:\n\n").unwrap().iter().all(|e| e.data.is_empty()));
        assert!(p.feed(b"retry: 3000\n\n").unwrap().is_empty());
    }
}
