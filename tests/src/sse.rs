//! An incremental `text/event-stream` parser that stamps each event with its arrival time.

use std::time::Instant;

use serde_json::Value;

/// One server-sent event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `event:` field, if any.
    pub event: Option<String>,
    /// `data:` lines joined with `\n` (empty for a priming event).
    pub data: String,
    /// `id:` field, if any.
    pub id: Option<String>,
    /// `retry:` field, if any.
    pub retry: Option<u64>,
    /// When the chunk that completed this event arrived.
    pub at: Instant,
}

impl SseEvent {
    /// The data parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// Feed chunks in, get complete events out (fields per the WHATWG event-stream rules; an event that had
/// only an `id`/`retry` is kept, because priming events look like that).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    /// Comment lines seen (`: keep-alive`).
    pub comments: usize,
}

impl SseParser {
    /// Parses whatever complete lines `chunk` finishes; events completed by it are stamped `at`.
    pub fn feed(&mut self, chunk: &[u8], at: Instant) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if let Some(event) = self.dispatch(at) {
                    events.push(event);
                }
                continue;
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => {
                    (field.to_owned(), value.strip_prefix(' ').unwrap_or(value).to_owned())
                }
                None => (line.clone(), String::new()),
            };
            match field.as_str() {
                "event" => self.event = Some(value),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(&value);
                    }
                    None => self.data = Some(value),
                },
                "id" => self.id = Some(value),
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
        events
    }

    fn dispatch(&mut self, at: Instant) -> Option<SseEvent> {
        if self.event.is_none() && self.data.is_none() && self.id.is_none() && self.retry.is_none() {
            return None;
        }
        Some(SseEvent {
            event: self.event.take(),
            data: self.data.take().unwrap_or_default(),
            id: self.id.take(),
            retry: self.retry.take(),
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_chunks_priming_and_comments() {
        let mut p = SseParser::default();
        let now = Instant::now();
        assert!(p.feed(b"id: abc\ndata:\n\n: keep\n\nevent: message\ndata: {\"a\"", now).len() == 1);
        let events = p.feed(b":1}\r\ndata: x\r\n\r\n", now);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.as_deref(), Some("message"));
        assert_eq!(events[0].data, "{\"a\":1}\nx");
        assert_eq!(p.comments, 1);
    }
}
