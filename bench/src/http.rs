//! The load generator's HTTP/1.1 client: pre-serialized requests on one keep-alive TCP connection,
//! response heads parsed with `httparse`, bodies decoded (Content-Length or chunked) as bytes arrive so
//! that SSE events can be timed one by one. Deliberately tiny: the generator must cost less per request
//! than what it measures.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Free space kept in the read buffer before each read.
const READ_RESERVE: usize = 16 * 1024;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    #[default]
    Empty,
    Length(usize),
    Chunked,
    /// Read until the server closes.
    Close,
}

/// What the load generator needs from a response head.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    pub session_id: Option<String>,
    pub event_stream: bool,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// A whole response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(READ_RESERVE), pos: 0 })
    }

    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await
    }

    /// Sends `request` and reads the whole response.
    pub async fn request(&mut self, request: &[u8]) -> io::Result<Response> {
        self.send(request).await?;
        self.read_response().await
    }

    /// Reads the next whole response (of requests sent earlier, in order).
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let head = self.read_head().await?;
        let body = self.read_body(head.framing).await?;
        Ok(Response { head, body })
    }

    /// Reads more bytes from the socket; `Ok(0)` at end of stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > READ_RESERVE {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_RESERVE);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Reads a response head, skipping interim (1xx) responses.
    pub async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            if self.pos < self.buf.len() {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.pos..]).map_err(|e| invalid(format!("response head: {e}")))? {
                    httparse::Status::Complete(len) => {
                        let head = head_of(&resp)?;
                        self.pos += len;
                        if (100..200).contains(&head.status) {
                            continue;
                        }
                        return Ok(head);
                    }
                    httparse::Status::Partial if self.buf.len() - self.pos > MAX_HEAD => {
                        return Err(invalid("response head too large"));
                    }
                    httparse::Status::Partial => {}
                }
            }
            if self.read_more().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a whole body.
    pub async fn read_body(&mut self, framing: Framing) -> io::Result<Vec<u8>> {
        let mut decoder = BodyDecoder::new(framing);
        let mut out = Vec::new();
        while !self.next_body(&mut decoder, &mut out).await? {}
        Ok(out)
    }

    /// Decodes body bytes into `out` until some arrive or the body ends; `Ok(true)` when it ended.
    pub async fn next_body(&mut self, decoder: &mut BodyDecoder, out: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let before = out.len();
            let used = decoder.decode(&self.buf[self.pos..], out)?;
            self.pos += used;
            if decoder.is_done() {
                return Ok(true);
            }
            if out.len() > before {
                return Ok(false);
            }
            if self.read_more().await? == 0 {
                return if decoder.state == State::Close {
                    decoder.state = State::Done;
                    Ok(true)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}

fn head_of(resp: &httparse::Response<'_, '_>) -> io::Result<Head> {
    let status = resp.code.ok_or_else(|| invalid("no status"))?;
    let mut head = Head { status, ..Head::default() };
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| invalid("content-length"))?;
            length = Some(text.trim().parse::<usize>().map_err(|_| invalid("content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.windows(7).any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            head.session_id = std::str::from_utf8(h.value).ok().map(str::to_owned);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.event_stream = h.value.starts_with(b"text/event-stream");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    head.framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(len) = length {
        if len == 0 { Framing::Empty } else { Framing::Length(len) }
    } else {
        head.close = true;
        Framing::Close
    };
    Ok(head)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(usize),
    ChunkSize,
    ChunkData(usize),
    ChunkDataEnd,
    Trailer,
    Close,
    Done,
}

/// Incremental body decoder.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

fn line_end(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Self { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what it can of `input` into `out`; returns the bytes consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut i = 0;
        loop {
            let rest = &input[i..];
            match self.state {
                State::Done => return Ok(i),
                State::Close => {
                    out.extend_from_slice(rest);
                    return Ok(input.len());
                }
                State::Length(n) | State::ChunkData(n) => {
                    if rest.is_empty() {
                        return Ok(i);
                    }
                    let take = n.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    i += take;
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), l) => State::Length(l),
                        (_, 0) => State::ChunkDataEnd,
                        (_, l) => State::ChunkData(l),
                    };
                }
                State::ChunkDataEnd => {
                    if rest.len() < 2 {
                        return Ok(i);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(invalid("chunk not followed by CRLF"));
                    }
                    i += 2;
                    self.state = State::ChunkSize;
                }
                State::ChunkSize => {
                    let Some(end) = line_end(rest) else {
                        if rest.len() > 1024 {
                            return Err(invalid("chunk size line too long"));
                        }
                        return Ok(i);
                    };
                    let line = &rest[..end];
                    let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                    let hex = std::str::from_utf8(hex).map_err(|_| invalid("chunk size"))?.trim();
                    let size = usize::from_str_radix(hex, 16).map_err(|_| invalid("chunk size"))?;
                    i += end + 2;
                    self.state = if size == 0 { State::Trailer } else { State::ChunkData(size) };
                }
                State::Trailer => {
                    let Some(end) = line_end(rest) else { return Ok(i) };
                    i += end + 2;
                    if end == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for p in pieces {
            pending.extend_from_slice(p);
            let used = d.decode(&pending, &mut out).unwrap();
            pending.drain(..used);
        }
        (out, d.is_done())
    }

    #[test]
    fn chunked_across_pieces() {
        let (out, done) = decode_all(
            Framing::Chunked,
            &[b"5\r\nhel", b"lo\r", b"\n6;ext=1\r\n worl", b"d\r\n0\r\n", b"X-T: 1\r\n\r\n"],
        );
        assert_eq!(out, b"hello world");
        assert!(done);
    }

    #[test]
    fn length_and_partial() {
        let (out, done) = decode_all(Framing::Length(4), &[b"ab", b"cdEXTRA"]);
        assert_eq!(out, b"abcd");
        assert!(done);
        let (_, done) = decode_all(Framing::Chunked, &[b"3\r\nabc\r\n"]);
        assert!(!done);
    }

    #[test]
    fn heads() {
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nMcp-Session-Id: abc\r\n\r\n")
            .unwrap();
        let head = head_of(&resp).unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.event_stream);
        assert_eq!(head.session_id.as_deref(), Some("abc"));
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(head_of(&resp).unwrap().framing, Framing::Empty);
    }
}
