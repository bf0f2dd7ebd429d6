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

/// Parser state across chunks. Lines may end in `\n`, `\r\n` or `\r`; comments (`:`) are skipped.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Adds a chunk and returns every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A lone '\r' at the end of the buffer may be the first half of "\r\n": wait for more.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                break;
            }
            let skip =
                if self.buffer[end] == b'\r' && self.buffer.get(end + 1) == Some(&b'\n') { 2 } else { 1 };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        events
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
        assert!(p.feed(b"id: 1\r\nevent: endpoint\r\ndata: /message?s").is_empty());
        let events = p.feed(b"essionId=x\r\n\r\n: keep-alive\n\ndata: {\"a\":\ndata: 1}\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event, "endpoint");
        assert_eq!(events[0].data, "/message?sessionId=x");
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[1].data, "{\"a\":\n1}");
        assert_eq!(p.feed(b"data: x\r").len(), 0);
        assert_eq!(p.feed(b"\n\r\n").len(), 1);
    }

    #[test]
    fn priming_event_without_data_is_not_an_event() {
        let mut p = Parser::default();
        assert!(p.feed(b"id: abc\ndata:\n\n").iter().all(|e| e.data.is_empty()));
        assert!(p.feed(b"retry: 3000\n\n").is_empty());
    }
}
