//! The client's side of HTTP/1 on the MCP listener: a server session of the gateway's own.
//!
//! One [`Session`] serves every request of a connection in turn (`crate::connections`): it reads a head
//! into a buffer the connection keeps (bytes read past it — the body, a pipelining client's next
//! request — stay there for what comes next), parses it with `httparse` straight into the header map the
//! handlers read (values are slices of the head's bytes, not copies), reads the body by its framing
//! (`crate::framing`, shared with the upstream answer's reader), and writes the answer's head and body.
//! Pingora's server session did the same with a fresh 4 KiB buffer, a boxed head with a second,
//! case-preserving header map, and a new session per request: ~29,000 of the ~78,000 instructions of a
//! proxied call (BENCHMARKS.md, "Performance work").
//!
//! Framing follows RFC 9112: `Transfer-Encoding` must end in `chunked` (400 otherwise, and in an HTTP/1.0
//! request); with `Content-Length` beside it the length is dropped and the connection closes after the
//! answer; repeated lengths must agree; an absolute-form target must agree with `Host`. The answer is
//! framed by its own headers: `Content-Length`, chunked when it says so (to an HTTP/1.1 client), else
//! delimited by closing the connection. The connection carries another request when the client allows it
//! (HTTP/1.1 without `Connection: close`, HTTP/1.0 with `keep-alive`), the answer ended where its framing
//! said, and the request body was read to its end (what a handler left unread is drained, up to a bound).

mod stream;

use std::io::IoSlice;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, Uri, Version, header};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use stream::HeadDeadline;

use crate::deadline::Deadline;
use crate::framing::{
    Body, FieldName, chunked_last, connection_has, head_map, known_header_name, malformed, recycle_map,
};
use crate::headers::{McpHeaders, Noted};

/// The longest request head read (request line and header fields).
const HEAD_LIMIT: usize = 64 * 1024;
/// Most header fields in a request head.
const MAX_HEADERS: usize = 128;
/// Room made for a read of a head, or of what follows an answer.
const READ_HEAD: usize = 4 * 1024;
/// Room made for a read of a body.
const READ_BODY: usize = 16 * 1024;
/// Room made for a read while an answer is made (it notices a close, and keeps what a pipelining client
/// sends): small, so that it fits in what the head's buffer has left — an idle stream waits in this read,
/// and a 4 KiB reserve would allocate a second buffer beside the one its head keeps.
const READ_IDLE: usize = 256;
/// Most bytes a handler may leave unread in a request body for the connection to be kept: they are
/// drained after the answer, within [`DRAIN_TIMEOUT`].
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How the answer's body is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// No answer head yet.
    Head,
    /// `Content-Length`: the bytes still to write.
    Length(u64),
    Chunked,
    /// Delimited by closing the connection.
    UntilClose,
    Done,
}

/// A client connection's HTTP/1 session: the request being served and the answer being written.
pub struct Session {
    stream: Box<HeadDeadline>,
    /// Read and not yet consumed.
    buf: BytesMut,
    client_addr: Option<SocketAddr>,
    head: Option<RequestHeader>,
    body: Body,
    body_empty: bool,
    /// The body's length by its `Content-Length`, when that frames it.
    declared: Option<u64>,
    /// The connection may carry another request after this one.
    keepalive: bool,
    /// How long the connection may wait for the next request's bytes (`None`: without limit).
    idle_timeout: Option<Duration>,
    /// The idle timeout's timer, kept for the connection and moved later for each wait (a new one each
    /// request was put in the runtime's timer wheel and taken out, under the wheel's lock; moving it is
    /// mostly free: see [`crate::deadline`]).
    idle: Option<Deadline>,
    /// A timer for a request's own waits (its upstream's answer), kept the same way: see [`Self::timer`].
    timer: Option<Deadline>,
    response: Option<Box<ResponseHeader>>,
    writer: Writer,
    body_bytes_sent: usize,
    /// Header fields of the head being parsed: their names as the known-name table gives them (with their
    /// slots among the MCP headers and their noted bits) and their values' places (kept to be reused: no
    /// allocation per request).
    fields: Vec<(FieldName, usize, usize)>,
    /// The request's MCP headers, kept as its head is parsed.
    mcp: McpHeaders,
    /// The request's `Host`, kept as its head is parsed (a head with two is refused).
    host: Option<HeaderValue>,
    /// Which of the fields [`Noted`] knows (framing, and those most requests lack) its head carries.
    noted: Noted,
}

fn write_error(e: std::io::Error) -> Box<Error> {
    Error::because(ErrorType::WriteError, "while writing the answer", e)
}

impl Session {
    /// A session on a client's connection (`client_addr`: its peer, for the audit and address rules).
    pub fn new(stream: Box<HeadDeadline>, client_addr: Option<SocketAddr>, idle_timeout: Duration) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            client_addr,
            head: None,
            body: Body::Head,
            body_empty: true,
            declared: None,
            keepalive: false,
            idle_timeout: Some(idle_timeout),
            idle: None,
            timer: None,
            response: None,
            writer: Writer::Head,
            body_bytes_sent: 0,
            fields: Vec::new(),
            mcp: McpHeaders::default(),
            host: None,
            noted: Noted::default(),
        }
    }

    /// Reads the next request's head: `false` when the connection closed (or stayed idle past its
    /// timeout) before one began. A head that does not parse or breaks the framing rules is an
    /// `InvalidHTTPHeader` error (answered 400).
    pub async fn read_request(&mut self) -> Result<bool> {
        // Nothing of the last request may hold on to the buffer (its head's values are slices of it), so
        // that the buffer's next read reuses its memory instead of allocating another.
        if let Some(head) = self.head.take() {
            recycle_map(http::request::Parts::from(head).headers);
        }
        self.mcp = McpHeaders::default();
        self.host = None;
        if let Some(answer) = self.response.take() {
            recycle_map(http::response::Parts::from(*answer).headers);
        }
        self.writer = Writer::Head;
        self.body = Body::Head;
        self.body_bytes_sent = 0;
        loop {
            if !self.buf.is_empty() && self.parse_head()? {
                return Ok(true);
            }
            if self.buf.len() >= HEAD_LIMIT {
                return Err(malformed(format!("a request head over {HEAD_LIMIT} bytes")));
            }
            let read = match self.idle_timeout {
                Some(t) => {
                    let idle = Deadline::set_in(&mut self.idle, t);
                    tokio::select! {
                        biased;
                        read = fill(&mut self.stream, &mut self.buf, READ_HEAD) => read?,
                        () = idle => return Ok(false),
                    }
                }
                None => self.fill(READ_HEAD).await?,
            };
            if read == 0 {
                if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(false);
                }
                return Error::e_explain(ErrorType::ConnectionClosed, "the client closed in a request head");
            }
        }
    }

    /// Reads more bytes into the buffer with room for `room`; 0 at the end of the stream.
    async fn fill(&mut self, room: usize) -> Result<usize> {
        fill(&mut self.stream, &mut self.buf, room).await
    }

    /// Parses a head from the buffer: `false` when it is incomplete.
    fn parse_head(&mut self) -> Result<bool> {
        let (len, method, target, version) = {
            // Uninitialized: 128 fields are 4 KiB to write before every parse otherwise.
            let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            let len = match req.parse_with_uninit_headers(&self.buf, &mut fields) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(false),
                Err(e) => return Err(malformed(format!("an unreadable request head: {e}"))),
            };
            let base = self.buf.as_ptr() as usize;
            let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
            self.fields.clear();
            for field in req.headers.iter() {
                let (start, len) = at(field.value);
                self.fields.push((known_header_name(field.name.as_bytes())?, start, len));
            }
            let method = req.method.unwrap_or_default();
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| malformed(format!("the method {method:?}")))?;
            let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
            (len, method, at(req.path.unwrap_or_default().as_bytes()), version)
        };
        let bytes = self.buf.split_to(len).freeze();
        let mut headers = head_map(self.fields.len());
        let mut noted = Noted::default();
        let mut hosts = 0;
        for (FieldName { name, slot, noted: bit }, start, len) in self.fields.drain(..) {
            let value = HeaderValue::from_maybe_shared(bytes.slice(start..start + len))
                .map_err(|_| malformed(format!("the value of the {name} header")))?;
            if let Some(slot) = slot {
                self.mcp.offer(slot, &value);
            } else if name == header::HOST {
                hosts += 1;
                self.host.get_or_insert_with(|| value.clone());
            }
            noted.note_bit(bit, value.as_bytes());
            headers.try_append(name, value).map_err(|_| malformed("too many header fields"))?;
        }
        let uri = Uri::from_maybe_shared(bytes.slice(target.0..target.0 + target.1))
            .map_err(|e| malformed(format!("the request target: {e}")))?;
        self.keepalive = match version {
            Version::HTTP_10 => connection_has(&headers, noted, "keep-alive"),
            _ => !connection_has(&headers, noted, "close"),
        };
        if noted.may_have(&header::TRANSFER_ENCODING) {
            if version == Version::HTTP_10 {
                return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if !chunked_last(&headers) {
                return Err(malformed("a request whose last transfer coding is not chunked"));
            }
            if headers.remove(header::CONTENT_LENGTH).is_some() {
                // Framing a request smuggler would use: this request is read as chunked, and is the last.
                self.keepalive = false;
            }
        }
        self.body = Body::framed_by(&headers, noted)?.unwrap_or(Body::Done);
        self.body_empty = self.body == Body::Done;
        self.declared = match self.body {
            Body::Length(len) => Some(len),
            _ => None,
        };
        self.noted = noted;
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.version = version;
        parts.headers = headers;
        let head = RequestHeader::from(parts);
        // What Pingora's check of the target's authority and `Host` comes to for an origin-form target
        // (no authority to agree with) and at most one `Host` without userinfo: nothing to refuse. Decided
        // here, without its two lookups of `Host`; any other head gets the whole check.
        let origin_form = head.uri.authority().is_none() && head.raw_path().first() == Some(&b'/');
        let plain_host = hosts <= 1 && !self.host.as_ref().is_some_and(|h| h.as_bytes().contains(&b'@'));
        if !(origin_form && plain_host && head.method != Method::CONNECT) {
            pingora::protocols::http::authority::validate_request_authority(&head)?;
        }
        self.head = Some(head);
        Ok(true)
    }

    /// The request's head.
    ///
    /// # Panics
    /// Before [`Self::read_request`] read one.
    pub fn req_header(&self) -> &RequestHeader {
        self.head.as_ref().expect("a request head was read")
    }

    /// The request's MCP headers (the first field of each name, as its head's map gives it).
    pub fn mcp_headers(&self) -> &McpHeaders {
        &self.mcp
    }

    /// The request's `Host` field, as its head's map has it.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// Which of the fields [`Noted`] knows (framing, and those most requests lack) the request's head
    /// carries.
    pub fn noted(&self) -> Noted {
        self.noted
    }

    /// Whether the request has no body at all.
    pub fn is_body_empty(&self) -> bool {
        self.body_empty
    }

    /// The length of the request body its `Content-Length` declares (`None`: chunked, or empty).
    pub fn declared_length(&self) -> Option<u64> {
        self.declared
    }

    /// The next bytes of the request body (chunked framing removed), or `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(next) = self.body.decode(&mut self.buf)? {
                return Ok(next);
            }
            if self.fill(READ_BODY).await? == 0 {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "the client closed in the request body",
                );
            }
        }
    }

    /// The connection's timer for a request's waits, set to expire `after` from now; give it back with
    /// [`Self::give_timer`] for the next request. Requests on a connection wait for like durations, so
    /// the timer only moves later and stays in the runtime's timer wheel (`tokio::time::timeout` put a new
    /// one in and took it out again for every request, each time under the wheel's lock).
    pub fn timer(&mut self, after: Duration) -> Deadline {
        Deadline::after(self.timer.take(), after)
    }

    pub fn give_timer(&mut self, timer: Deadline) {
        self.timer = Some(timer);
    }

    /// Drops the connection's timers before the session moves to another task. A timer that was waited
    /// on holds the waiting task's waker until it fires, and with it the task's memory: an idle stream
    /// relayed in a task of its own kept the ended request task's ~7 KiB for as long as the idle timeout.
    pub fn release_timers(&mut self) {
        self.idle = None;
        self.timer = None;
        self.stream.release_timer();
    }

    /// Resolves when the client closes its connection (or it fails) while its answer is being made.
    /// Bytes it sends meanwhile (its next request) are kept for later, up to a head's worth; the
    /// connection is not reused after it went.
    pub async fn client_gone(&mut self) {
        loop {
            if self.buf.len() >= HEAD_LIMIT {
                return std::future::pending().await;
            }
            if !matches!(self.fill(READ_IDLE).await, Ok(n) if n > 0) {
                self.keepalive = false;
                return;
            }
        }
    }

    /// `None`: the connection closes after this answer (and says so in it). `Some(0)`: it may wait for
    /// the next request without limit; `Some(seconds)`: that long.
    pub fn set_keepalive(&mut self, seconds: Option<u64>) {
        match seconds {
            None => self.keepalive = false,
            Some(0) => self.idle_timeout = None,
            Some(s) => self.idle_timeout = Some(Duration::from_secs(s)),
        }
    }

    /// The answer's head, once written.
    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.response.as_deref()
    }

    /// Answer body bytes written (without chunked framing).
    pub fn body_bytes_sent(&self) -> usize {
        self.body_bytes_sent
    }

    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.client_addr.as_ref()
    }

    /// Writes `100 Continue` (before the body of a request that expects it).
    pub async fn write_continue_response(&mut self) -> Result<()> {
        if self.response.is_none() {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(write_error)?;
            self.stream.flush().await.map_err(write_error)?;
        }
        Ok(())
    }

    /// Writes the answer's head (once: a second one is ignored). Its body is framed by its own headers;
    /// `Date` and `Connection` are the gateway's.
    pub async fn write_response_header(&mut self, resp: Box<ResponseHeader>) -> Result<()> {
        if self.response.is_some() {
            return Ok(());
        }
        if resp.status.is_informational() {
            // The gateway asks for no upgrade; a 100 is `write_continue_response`'s.
            return if resp.status == StatusCode::CONTINUE {
                self.write_continue_response().await
            } else {
                Ok(())
            };
        }
        let to_http10 = self.head.as_ref().is_some_and(|h| h.version == Version::HTTP_10);
        let no_body = matches!(resp.status.as_u16(), 204 | 304)
            || self.head.as_ref().is_some_and(|h| h.method == Method::HEAD);
        self.writer = match Body::framed_by(&resp.headers, Noted::ANY) {
            _ if no_body => Writer::Done,
            Ok(Some(Body::Chunked(_))) if !to_http10 => Writer::Chunked,
            Ok(Some(Body::Length(n))) => Writer::Length(n),
            Ok(Some(Body::Done)) => Writer::Done,
            _ => Writer::UntilClose,
        };
        if self.writer == Writer::UntilClose {
            self.keepalive = false;
        }
        let wire = self.stream.held_mut();
        wire.extend_from_slice(b"HTTP/1.1 ");
        wire.extend_from_slice(resp.status.as_str().as_bytes());
        wire.push(b' ');
        let reason = resp.get_reason_phrase().or(resp.status.canonical_reason()).unwrap_or_default();
        wire.extend_from_slice(reason.as_bytes());
        wire.extend_from_slice(b"\r\n");
        for (name, value) in &resp.headers {
            let framing_dropped = self.writer == Writer::UntilClose
                && (name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH);
            if name == header::CONNECTION || name == header::DATE || framing_dropped {
                continue;
            }
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"date: ");
        wire.extend_from_slice(pingora::protocols::http::date::get_cached_date().as_bytes());
        wire.extend_from_slice(if self.keepalive {
            b"\r\nconnection: keep-alive\r\n\r\n"
        } else {
            b"\r\nconnection: close\r\n\r\n"
        });
        // Held for the body when it has a length (one send for both); sent now otherwise: a stream's head
        // must reach its client before its first event.
        if !matches!(self.writer, Writer::Length(_)) {
            self.stream.flush().await.map_err(write_error)?;
        }
        self.response = Some(resp);
        Ok(())
    }

    /// Writes answer body bytes (framed as the head said), and the body's end when `end`. Bytes past a
    /// `Content-Length` are not written.
    pub async fn write_response_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        if !data.is_empty() {
            match self.writer {
                Writer::Head => {
                    return Error::e_explain(ErrorType::InternalError, "an answer body before its head");
                }
                Writer::Length(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    self.stream.write_all(&data[..n]).await.map_err(write_error)?;
                    self.writer = Writer::Length(left - n as u64);
                    self.body_bytes_sent += n;
                    if left == n as u64 {
                        self.stream.flush().await.map_err(write_error)?;
                    }
                }
                Writer::Chunked => {
                    let mut size = [0u8; 18];
                    let line = chunk_line(&mut size, data.len());
                    self.write_all_vectored(&mut [
                        IoSlice::new(line),
                        IoSlice::new(&data),
                        IoSlice::new(b"\r\n"),
                    ])
                    .await?;
                    self.stream.flush().await.map_err(write_error)?;
                    self.body_bytes_sent += data.len();
                }
                Writer::UntilClose => {
                    self.stream.write_all(&data).await.map_err(write_error)?;
                    self.stream.flush().await.map_err(write_error)?;
                    self.body_bytes_sent += data.len();
                }
                Writer::Done => {}
            }
        }
        if end {
            self.finish_body().await?;
        }
        Ok(())
    }

    async fn write_all_vectored(&mut self, mut parts: &mut [IoSlice<'_>]) -> Result<()> {
        while !parts.is_empty() {
            let n = self.stream.write_vectored(parts).await.map_err(write_error)?;
            if n == 0 {
                return Err(write_error(std::io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(&mut parts, n);
        }
        Ok(())
    }

    /// Ends the answer's body (the last chunk of a chunked one) and sends what is held. An answer cut
    /// short of its `Content-Length` is an error, and the connection is not reused.
    async fn finish_body(&mut self) -> Result<()> {
        match self.writer {
            Writer::Head | Writer::Done => {}
            Writer::Chunked => {
                self.stream.write_all(b"0\r\n\r\n").await.map_err(write_error)?;
                self.writer = Writer::Done;
            }
            Writer::Length(0) | Writer::UntilClose => self.writer = Writer::Done,
            Writer::Length(left) => {
                self.keepalive = false;
                self.stream.flush().await.map_err(write_error)?;
                return Error::e_explain(
                    ErrorType::WriteError,
                    format!("the answer ended {left} bytes short of its Content-Length"),
                );
            }
        }
        self.stream.flush().await.map_err(write_error)
    }

    /// Answers `status` with no body, and closes the connection after it.
    pub async fn respond_error(&mut self, status: u16) -> Result<()> {
        self.keepalive = false;
        if self.response.is_some() {
            return Ok(());
        }
        let mut resp = ResponseHeader::build_no_case(status, Some(2))?;
        resp.insert_header(header::CONTENT_LENGTH, "0")?;
        resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
        self.write_response_header(Box::new(resp)).await?;
        self.finish_body().await
    }

    /// Closes the connection (what is held is sent first).
    pub async fn shutdown(&mut self) {
        self.stream.close().await;
    }

    /// Ends the request: the answer's end is written and sent, and what the handler left of the request
    /// body is read. `true` when the connection carries the next request (read it with
    /// [`Self::read_request`]); otherwise it is closed.
    pub async fn finish(&mut self) -> bool {
        let answered = self.finish_body().await.is_ok() && self.writer == Writer::Done;
        if !(answered && self.keepalive && self.drain().await) {
            self.shutdown().await;
            return false;
        }
        self.stream.rearm();
        true
    }

    /// Reads the rest of the request body, when it is short and arrives quickly.
    async fn drain(&mut self) -> bool {
        let mut left = DRAIN_LIMIT;
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            loop {
                match self.read_request_body().await {
                    Ok(None) => return true,
                    Ok(Some(bytes)) if bytes.len() as u64 <= left => left -= bytes.len() as u64,
                    _ => return false,
                }
            }
        })
        .await;
        matches!(drained, Ok(true))
    }
}

/// Reads more bytes from `stream` into `buf` with room for `room`; 0 at the end of the stream.
async fn fill(stream: &mut HeadDeadline, buf: &mut BytesMut, room: usize) -> Result<usize> {
    buf.reserve(room);
    stream
        .read_buf(buf)
        .await
        .map_err(|e| Error::because(ErrorType::ReadError, "while reading the request", e))
}

/// A chunk's size line (`1A\r\n`) in `buf`.
fn chunk_line(buf: &mut [u8; 18], len: usize) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        *slot = HEX[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A session on a real socket, and the client's end of it.
    async fn pair() -> (Session, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream = crate::transport::Transport::Tcp(server);
        let session = Session::new(
            Box::new(HeadDeadline::new(stream, Duration::from_secs(5))),
            None,
            Duration::from_secs(5),
        );
        (session, client)
    }

    async fn body(session: &mut Session) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// What the client received until the server closed.
    async fn received(mut client: tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn pipelined_requests_are_read_whole_and_answered_in_turn() {
        let (mut s, mut client) = pair().await;
        client
            .write_all(
                b"POST /mcp/a?x=1 HTTP/1.1\r\nHost: gw\r\nMcp-Session-Id: s1\r\nContent-Length: 5\r\n\r\nhello\
                  POST /mcp/b HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                  GET /mcp/c HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        assert!(s.read_request().await.unwrap());
        let head = s.req_header();
        assert_eq!(
            (head.method.as_str(), head.uri.path(), head.uri.query()),
            ("POST", "/mcp/a", Some("x=1"))
        );
        assert_eq!(head.headers["mcp-session-id"], "s1");
        assert!(!s.is_body_empty());
        assert_eq!(body(&mut s).await.unwrap(), b"hello");
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("content-length", "2").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        s.write_response_body(Bytes::from_static(b"ok"), true).await.unwrap();
        assert_eq!(s.body_bytes_sent(), 2);
        assert!(s.finish().await, "kept alive");

        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().uri.path(), "/mcp/b");
        assert!(s.response_written().is_none(), "a new request has no answer yet");
        assert_eq!(body(&mut s).await.unwrap(), b"abc");
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        resp.insert_header("connection", "upgrade").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        s.write_response_body(Bytes::from_static(b"data: 1\n\n"), false).await.unwrap();
        s.write_response_body(Bytes::new(), true).await.unwrap();
        assert!(s.finish().await);

        assert!(s.read_request().await.unwrap());
        assert!(s.is_body_empty());
        s.respond_error(404).await.unwrap();
        assert!(!s.finish().await, "the client asked to close");

        let got = received(client).await;
        let answers: Vec<&str> = got.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 3, "{got}");
        assert!(answers[0].starts_with("200 OK\r\n") && answers[0].contains("connection: keep-alive"));
        assert!(answers[0].ends_with("\r\n\r\nok"), "{}", answers[0]);
        assert!(!answers[1].contains("upgrade"), "the gateway's Connection header only");
        assert!(answers[1].ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"), "{}", answers[1]);
        assert!(answers[2].starts_with("404 Not Found\r\n") && answers[2].contains("connection: close"));
    }

    #[tokio::test]
    async fn fields_most_requests_lack_are_noted_with_the_head() {
        use http::header::{AUTHORIZATION, EXPECT, ORIGIN};
        let traceparent = crate::headers::TRACEPARENT;
        let (mut s, mut client) = pair().await;
        client
            .write_all(
                b"POST /mcp/a HTTP/1.1\r\nHost: gw\r\nORIGIN: http://a\r\nexpect: 100-continue\r\n\
                  Authorization: Bearer t\r\nTraceParent: 00-x\r\nContent-Length: 5\r\n\r\nhello\
                  POST /mcp/b HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            )
            .await
            .unwrap();
        assert!(s.read_request().await.unwrap());
        let (noted, headers) = (s.noted(), &s.req_header().headers);
        for (name, value) in [
            (&ORIGIN, "http://a"),
            (&EXPECT, "100-continue"),
            (&AUTHORIZATION, "Bearer t"),
            (&traceparent, "00-x"),
        ] {
            assert_eq!(noted.get(headers, name).unwrap(), value, "{name}");
        }
        assert_eq!(s.declared_length(), Some(5));
        body(&mut s).await.unwrap();
        let mut resp = ResponseHeader::build_no_case(204, None).unwrap();
        resp.insert_header("content-length", "0").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        s.write_response_body(Bytes::new(), true).await.unwrap();
        assert!(s.finish().await);

        assert!(s.read_request().await.unwrap());
        let (noted, headers) = (s.noted(), &s.req_header().headers);
        for name in [&ORIGIN, &EXPECT, &AUTHORIZATION, &traceparent] {
            assert_eq!(noted.get(headers, name), None, "{name}: the last request's note is not kept");
        }
        assert_eq!(noted.get(headers, &http::header::HOST).unwrap(), "gw", "names not noted are looked up");
        assert_eq!(s.declared_length(), None, "chunked");
    }

    #[tokio::test]
    async fn smuggling_shapes_and_broken_heads_are_refused() {
        for (head, what) in [
            (&b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"[..], "chunked in HTTP/1.0"),
            (b"POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "chunked not last"),
            (b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "two lengths"),
            (b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: +5\r\n\r\n", "a signed length"),
            (b"GET / HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n folded\r\n\r\n", "obs-fold"),
            (b"GET / HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n\r\n", "two Hosts"),
            (b"GET / HTTP/1.1\r\nhost: gw\r\nHOST: gw\r\n\r\n", "two Hosts, alike"),
            (b"GET / HTTP/1.1\r\nHost: user@gw\r\n\r\n", "userinfo in Host"),
            (b"GET http://user@gw/ HTTP/1.1\r\nHost: user@gw\r\n\r\n", "userinfo in the target"),
            (b"GET http://evil/ HTTP/1.1\r\nHost: gw\r\n\r\n", "an absolute target naming another host"),
            (b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n", "a space in a name"),
            (b"GET / HTTP/2.0\r\n\r\n", "another version"),
        ] {
            let (mut s, mut client) = pair().await;
            client.write_all(head).await.unwrap();
            let e = s.read_request().await.expect_err(what);
            assert_eq!(*e.etype(), ErrorType::InvalidHTTPHeader, "{what}: {e}");
        }

        // The forms that pass: an origin-form target with one `Host` (kept for the request path) or none,
        // and an absolute-form one whose authority is the `Host`.
        for (head, host) in [
            (&b"GET /mcp HTTP/1.1\r\nhOsT: gw:8080\r\n\r\n"[..], Some(&b"gw:8080"[..])),
            (b"GET /mcp HTTP/1.1\r\n\r\n", None),
            (b"GET http://gw/mcp HTTP/1.1\r\nHost: gw\r\n\r\n", Some(b"gw")),
        ] {
            let (mut s, mut client) = pair().await;
            client.write_all(head).await.unwrap();
            assert!(s.read_request().await.unwrap(), "{}", String::from_utf8_lossy(head));
            assert_eq!(s.host().map(HeaderValue::as_bytes), host);
            assert_eq!(s.host(), s.req_header().headers.get(header::HOST));
        }

        let (mut s, mut client) = pair().await;
        client.write_all(&[b'a'; HEAD_LIMIT + 10]).await.unwrap();
        assert!(s.read_request().await.is_err(), "a head over the limit");

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (mut s, mut client) = pair().await;
        client.write_all(&many).await.unwrap();
        assert!(s.read_request().await.is_err(), "too many header fields");
    }

    #[tokio::test]
    async fn both_framings_read_as_chunked_and_close_after_the_answer() {
        let (mut s, mut client) = pair().await;
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert!(s.read_request().await.unwrap());
        assert!(s.req_header().headers.get("content-length").is_none());
        assert_eq!(body(&mut s).await.unwrap(), b"ab");
        s.respond_error(400).await.unwrap();
        assert!(!s.finish().await);
        assert!(received(client).await.contains("connection: close"));
    }

    #[tokio::test]
    async fn an_unread_body_is_drained_when_short_and_closes_the_connection_when_long() {
        let (mut s, mut client) = pair().await;
        client
            .write_all(
                b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\n\r\n",
            )
            .await
            .unwrap();
        assert!(s.read_request().await.unwrap());
        s.respond_error(401).await.unwrap();
        s.keepalive = true; // an answer that keeps the connection (respond_error closes it)
        assert!(s.finish().await, "3 unread bytes are drained");
        assert!(s.read_request().await.unwrap());
        assert_eq!(s.req_header().uri.path(), "/next");

        let (mut s, mut client) = pair().await;
        let long = format!("POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n", DRAIN_LIMIT + 1);
        client.write_all(long.as_bytes()).await.unwrap();
        client.write_all(&vec![b'x'; DRAIN_LIMIT as usize + 1]).await.unwrap();
        assert!(s.read_request().await.unwrap());
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("content-length", "0").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        assert!(!s.finish().await, "too much left unread");
    }

    #[tokio::test]
    async fn answers_are_framed_by_their_headers() {
        // HTTP/1.0 client, chunked answer: delimited by the close instead.
        let (mut s, mut client) = pair().await;
        client.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        assert!(s.read_request().await.unwrap());
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("transfer-encoding", "chunked").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        s.write_response_body(Bytes::from_static(b"abc"), true).await.unwrap();
        assert!(!s.finish().await);
        let got = received(client).await;
        assert!(!got.contains("transfer-encoding") && got.contains("connection: close"), "{got}");
        assert!(got.ends_with("\r\n\r\nabc"), "{got}");

        // An answer cut short of its length is an error and closes.
        let (mut s, client) = pair().await;
        let mut client = client;
        client.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
        assert!(s.read_request().await.unwrap());
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("content-length", "10").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        assert!(s.write_response_body(Bytes::from_static(b"abc"), true).await.is_err());
        assert!(!s.finish().await);

        // A head larger than the held buffer (and than a kept spare one) is written whole, before its body.
        let (mut s, mut client) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(s.read_request().await.unwrap());
        let big = "v".repeat(20_000);
        let mut resp = ResponseHeader::build_no_case(200, None).unwrap();
        resp.insert_header("x-big", big.as_str()).unwrap();
        resp.insert_header("content-length", "3").unwrap();
        s.write_response_header(Box::new(resp)).await.unwrap();
        s.write_response_body(Bytes::from_static(b"abc"), true).await.unwrap();
        assert!(!s.finish().await);
        let got = received(client).await;
        assert!(
            got.contains(&format!("\r\nx-big: {big}\r\n")) && got.ends_with("\r\n\r\nabc"),
            "{}",
            &got[..200]
        );

        // Idle past the keep-alive timeout: no request. The timer is the connection's: a request within
        // the timeout moves it on, and the next wait starts the timeout again.
        let (mut s, mut client) = pair().await;
        s.set_keepalive(Some(1));
        tokio::time::pause();
        client.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
        assert!(s.read_request().await.unwrap());
        tokio::time::advance(Duration::from_millis(900)).await;
        s.write_response_header(Box::new(ResponseHeader::build_no_case(204, None).unwrap())).await.unwrap();
        assert!(s.finish().await);
        let at = tokio::time::Instant::now();
        assert!(!s.read_request().await.unwrap());
        assert!(
            at.elapsed() >= Duration::from_secs(1),
            "the timeout started at the wait: {:?}",
            at.elapsed()
        );
    }

    #[test]
    fn chunk_lines() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_line(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_line(&mut buf, 26), b"1A\r\n");
        assert_eq!(chunk_line(&mut buf, 4096), b"1000\r\n");
        assert_eq!(chunk_line(&mut buf, usize::MAX), b"FFFFFFFFFFFFFFFF\r\n");
    }
}
