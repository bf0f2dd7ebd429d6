//! The upstream's answer, read on the stream its request went out on: an HTTP/1 response reader of the
//! gateway's own.
//!
//! Pingora's client session held a 64 KiB body buffer per answer (every idle SSE stream kept one), copied
//! every header name into a title-cased copy and parsed it again into the header map, and was built for
//! requests the gateway never sends (`HEAD`, upgrades, `Expect`). This reader keeps one buffer that
//! grows with what arrives (4 KiB, doubled while reads fill it, up to 64 KiB), parses the head with
//! `httparse` straight into the header map, and hands body bytes out of that buffer without copying them.
//!
//! Framing follows RFC 9112 §6.3 for the answers to the gateway's requests (never `HEAD`, never
//! `CONNECT`): 1xx heads are skipped (101 is refused: the gateway asks for no upgrade); 204 and 304 have
//! no body; `Transfer-Encoding` ending in `chunked` is chunked (its `Content-Length`, if any, removed),
//! any other transfer coding or no framing at all reads to the end of the connection; otherwise the
//! `Content-Length` (repeated values must agree). A connection is pooled again only when its answer ended
//! exactly where its framing said, nothing more arrived, and the upstream keeps it alive.
//!
//! Every read is cancel-safe: bytes land in the buffer or not at all, and the state moves only when bytes
//! are consumed, so a read given up in a `select!` can be taken up again (a legacy answer is drained in
//! the background after its client left).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

use crate::framing::{
    Body, FieldName, connection_has, head_map, known_header_name, malformed, parse_decimal,
};
use crate::headers::Noted;
use crate::memory::{SPARE_LIMIT, Spares};
use crate::transport::Transport;
use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncReadExt;

/// The longest response head read (status line and headers).
const HEAD_LIMIT: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 128;
/// Room made for the first read (a head, and most answers' whole body with it).
const READ_FIRST: usize = 4 * 1024;
/// Room made for a read after one that did not fill its room; doubled after one that did, up to the most.
/// Small: an idle stream holds this buffer while it waits for its next event.
const READ_MIN: usize = 1024;
const READ_MAX: usize = 64 * 1024;

thread_local! {
    /// Read buffers of answers that left their connection fit for another request, for a next answer's
    /// first read (4 KiB: allocated and freed per answer, ~350 instructions under callgrind).
    static SPARE: Spares<BytesMut> = const { Spares::new() };
}

/// An answer being read from an upstream connection.
pub struct Response {
    stream: Transport,
    /// The pool's key of the connection's peer (`Peer::reuse_hash`, worked out once when it was taken).
    pool_key: u64,
    /// Bytes read and not yet handed out.
    buf: BytesMut,
    /// Room made for the next read.
    read_size: usize,
    read_timeout: Option<Duration>,
    header: Option<ResponseHeader>,
    /// Which of the fields [`Noted`] knows the head has.
    fields: Noted,
    body: Body,
    /// The upstream keeps the connection open after this answer (its version and `Connection`).
    keepalive: bool,
    /// `Keep-Alive: timeout=N`: how long the upstream keeps it idle.
    keepalive_timeout: Option<Duration>,
}

impl Response {
    /// The answer to a request just written on `stream`.
    pub fn new(stream: Transport, pool_key: u64) -> Self {
        Self {
            stream,
            pool_key,
            buf: BytesMut::new(),
            read_size: READ_FIRST,
            read_timeout: None,
            header: None,
            fields: Noted::ANY,
            body: Body::Head,
            keepalive: false,
            keepalive_timeout: None,
        }
    }

    /// Bounds each later read (`None`: none, for streams that may idle for long).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// The head, once [`Self::read_response_header`] read it.
    pub fn response_header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }

    /// Which of the fields [`Noted`] knows the head has ([`Noted::ANY`] before it is read).
    pub fn response_fields(&self) -> Noted {
        self.fields
    }

    /// The head, taken out of the answer (the body is still read as it said).
    pub fn take_response_header(&mut self) -> Option<ResponseHeader> {
        self.header.take()
    }

    /// Reads the head (skipping informational ones). Does nothing when it was read (or taken).
    pub async fn read_response_header(&mut self) -> Result<()> {
        while self.body == Body::Head {
            if self.parse_head()? {
                continue;
            }
            if self.buf.len() >= HEAD_LIMIT {
                return Err(malformed(format!("a response head over {HEAD_LIMIT} bytes")));
            }
            if self.fill().await? == 0 {
                return Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "the upstream closed the connection before its answer's head ended",
                );
            }
        }
        Ok(())
    }

    /// The next bytes of the body (chunked framing removed), or `None` at its end.
    pub async fn read_response_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(next) = self.body.decode(&mut self.buf)? {
                return Ok(next);
            }
            if self.fill().await? == 0 {
                return match self.body {
                    Body::UntilClose => {
                        self.body = Body::Done;
                        Ok(None)
                    }
                    _ => Error::e_explain(
                        ErrorType::ConnectionClosed,
                        "the upstream closed the connection before its answer ended",
                    ),
                };
            }
        }
    }

    /// The connection, when this answer left it fit for another request, its pool key, and how long the
    /// upstream keeps it idle if it said so.
    pub fn into_reusable(self) -> Option<(Transport, u64, Option<Duration>)> {
        if !(self.body == Body::Done && self.keepalive && self.buf.is_empty()) {
            return None;
        }
        let mut buf = self.buf;
        // Kept when every byte handed out is gone (the buffer's memory is this answer's alone again).
        if buf.try_reclaim(READ_FIRST) && buf.capacity() <= SPARE_LIMIT {
            SPARE.with(|spare| spare.give_back(buf));
        }
        Some((self.stream, self.pool_key, self.keepalive_timeout))
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize> {
        if self.body == Body::Head
            && self.buf.capacity() == 0
            && let Some(spare) = SPARE.with(Spares::take)
        {
            self.buf = spare;
        } else if self.buf.is_empty() && self.buf.capacity() > self.read_size {
            // Everything read was handed out: the room left over from a larger read is given back (freed
            // once the bytes handed out are gone) rather than held while the next read waits.
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.read_size);
        let read = self.stream.read_buf(&mut self.buf);
        let read = match self.read_timeout {
            Some(t) => pingora::time::timeout(t, read).await.map_err(|_| {
                Error::explain(ErrorType::ReadTimedout, format!("nothing arrived within {t:?}"))
            })?,
            None => read.await,
        };
        let n = read.map_err(|e| Error::because(ErrorType::ReadError, "while reading the answer", e))?;
        self.read_size = if n >= self.read_size { (self.read_size * 2).min(READ_MAX) } else { READ_MIN };
        Ok(n)
    }

    /// Parses a head from the buffer: `false` when it is incomplete; `true` when one was consumed (the
    /// answer's, or an informational one to skip).
    fn parse_head(&mut self) -> Result<bool> {
        // Uninitialized: 128 fields are 4 KiB to write before every parse otherwise.
        let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .parse_response_with_uninit_headers(&mut parsed, &self.buf, &mut fields)
        {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(e) => return Err(malformed(format!("an unreadable response head: {e}"))),
        };
        let code = parsed.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| malformed(format!("status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(malformed("101 Switching Protocols, for a request that asked for no upgrade"));
            }
            self.buf.advance(len);
            return Ok(true);
        }
        let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
        let mut headers = head_map(parsed.headers.len());
        let mut framing = Noted::default();
        for field in parsed.headers.iter() {
            let FieldName { name, noted, .. } = known_header_name(field.name.as_bytes())?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| malformed(format!("the value of the {name} header")))?;
            framing.note_bit(noted, field.value);
            headers.try_append(name, value).map_err(|_| malformed("too many header fields"))?;
        }
        self.frame(status, version, &mut headers, framing)?;
        self.fields = framing;
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        self.header = Some(ResponseHeader::from(parts));
        self.buf.advance(len);
        Ok(true)
    }

    /// Decides the body's framing and whether the connection lives on (RFC 9112 §6.3, §9.3).
    fn frame(
        &mut self,
        status: StatusCode,
        version: Version,
        headers: &mut HeaderMap,
        framing: Noted,
    ) -> Result<()> {
        self.keepalive = match version {
            Version::HTTP_10 => connection_has(headers, framing, "keep-alive"),
            _ => !connection_has(headers, framing, "close"),
        };
        self.keepalive_timeout =
            framing.get(headers, &crate::headers::KEEP_ALIVE).and_then(|v| keepalive_timeout(v.as_bytes()));
        if matches!(status.as_u16(), 204 | 304) {
            self.body = Body::Done;
            return Ok(());
        }
        if framing.may_have(&header::TRANSFER_ENCODING)
            && (headers.remove(header::CONTENT_LENGTH).is_some() || version == Version::HTTP_10)
        {
            // Framing a request smuggler would use: read this answer, but not another on this connection.
            self.keepalive = false;
        }
        self.body = Body::framed_by(headers, framing)?.unwrap_or(Body::UntilClose);
        if self.body == Body::UntilClose {
            self.keepalive = false;
        }
        Ok(())
    }
}

/// The `timeout` parameter of a `Keep-Alive` header (`timeout=5, max=100`).
fn keepalive_timeout(value: &[u8]) -> Option<Duration> {
    value.split(|&b| b == b',').find_map(|param| {
        let eq = param.iter().position(|&b| b == b'=')?;
        let (name, seconds) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        name.eq_ignore_ascii_case(b"timeout").then(|| parse_decimal(seconds).map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A response reader over a real socket whose peer writes `parts` one write at a time (then closes
    /// unless `keep_open`).
    async fn over_socket(parts: Vec<&'static [u8]>, keep_open: bool) -> Response {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            for part in parts {
                peer.write_all(part).await.unwrap();
                peer.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            if keep_open {
                let mut sink = [0u8; 16];
                let _ = peer.read(&mut sink).await;
            }
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        Response::new(Transport::Tcp(stream), 0)
    }

    async fn body(r: &mut Response) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = r.read_response_body().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn content_length_bodies_end_where_they_say_and_keep_the_connection() {
        let mut r = over_socket(
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\n",
                b"\r\nhello",
                b" world",
            ],
            true,
        )
        .await;
        r.read_response_header().await.unwrap();
        let head = r.response_header().unwrap();
        assert_eq!(head.status, 200, "the informational head is skipped");
        assert_eq!(head.headers["x-a"], "1");
        assert_eq!(body(&mut r).await.unwrap(), b"hello world");
        assert!(r.into_reusable().is_some());
    }

    #[tokio::test]
    async fn a_reusable_answers_buffer_serves_the_next_answers_first_read() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        // A body chunk still held: the buffer's memory is not the answer's alone, and is not kept.
        let mut held = over_socket(vec![ANSWER], true).await;
        held.read_response_header().await.unwrap();
        let chunk = held.read_response_body().await.unwrap().unwrap();
        assert_eq!(held.read_response_body().await.unwrap(), None);
        assert!(held.into_reusable().is_some());
        assert!(SPARE.with(Spares::take).is_none());
        drop(chunk);

        let mut first = over_socket(vec![ANSWER], true).await;
        first.read_response_header().await.unwrap();
        assert_eq!(body(&mut first).await.unwrap(), b"ok");
        assert!(first.into_reusable().is_some());
        let spare = SPARE.with(Spares::take).expect("the buffer is kept");
        assert!(spare.is_empty() && spare.capacity() >= READ_FIRST);
        let memory = spare.as_ptr() as usize..spare.as_ptr() as usize + spare.capacity();
        SPARE.with(|s| s.give_back(spare));

        let mut second = over_socket(vec![ANSWER], true).await;
        second.read_response_header().await.unwrap();
        assert!(memory.contains(&(second.buf.as_ptr() as usize)), "read into the kept buffer");
        assert_eq!(body(&mut second).await.unwrap(), b"ok");
    }

    #[tokio::test]
    async fn chunked_bodies_are_unframed_split_anywhere() {
        let mut r = over_socket(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5;ext=1\r",
                b"\nhel",
                b"lo\r\n6\r\n world\r",
                b"\n0\r\nX-Trailer: t\r\n\r\n",
            ],
            true,
        )
        .await;
        r.read_response_header().await.unwrap();
        assert!(r.response_header().unwrap().headers.get("content-length").is_none(), "chunked wins");
        assert_eq!(body(&mut r).await.unwrap(), b"hello world");
        assert!(r.into_reusable().is_none(), "both framings given: not reused");

        let mut r = over_socket(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
            true,
        )
        .await;
        r.read_response_header().await.unwrap();
        assert_eq!(body(&mut r).await.unwrap(), b"abc");
        assert!(r.into_reusable().is_some());
    }

    #[tokio::test]
    async fn a_body_without_framing_reads_to_the_end_and_is_not_reused() {
        let mut r = over_socket(
            vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\n", b"data: 2\n\n"],
            false,
        )
        .await;
        r.read_response_header().await.unwrap();
        assert_eq!(body(&mut r).await.unwrap(), b"data: 1\n\ndata: 2\n\n");
        assert!(r.into_reusable().is_none());
    }

    #[tokio::test]
    async fn connection_close_http_1_0_and_extra_bytes_are_not_reused() {
        for (head, extra) in [
            (&b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"[..], 0),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0),
            (b"HTTP/1.1 204 No Content\r\n\r\nX", 1),
        ] {
            let mut r = over_socket(vec![head], true).await;
            r.read_response_header().await.unwrap();
            while r.buf.len() < extra {
                r.fill().await.unwrap();
            }
            assert_eq!(body(&mut r).await.unwrap(), b"");
            assert!(r.into_reusable().is_none(), "{}", String::from_utf8_lossy(head));
        }
        let mut r =
            over_socket(vec![b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\nx"], true)
                .await;
        r.read_response_header().await.unwrap();
        assert_eq!(body(&mut r).await.unwrap(), b"x");
        assert_eq!(r.into_reusable().map(|(_, _, t)| t), Some(Some(Duration::from_secs(5))));
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        for (parts, what) in [
            (vec![&b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"[..]], "disagreeing lengths"),
            (vec![b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"], "a negative length"),
            (vec![b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n"], "a space in a name"),
            (vec![b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], "an upgrade"),
            (vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], "a bad chunk size"),
            (vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"], "an overlong chunk"),
            (
                vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n"],
                "a huge chunk",
            ),
            (vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"], "an early end"),
            (vec![b"HTTP/1.1 200 OK\r\n"], "a head cut short"),
        ] {
            let mut r = over_socket(parts, false).await;
            let result = match r.read_response_header().await {
                Ok(()) => body(&mut r).await.map(drop),
                Err(e) => Err(e),
            };
            assert!(result.is_err(), "{what}");
        }
    }

    #[tokio::test]
    async fn a_read_given_up_is_taken_up_again() {
        let mut r = over_socket(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", b"cd"], true).await;
        r.read_response_header().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            // A zero timeout often gives the read up before it completes: nothing may be lost.
            if let Ok(chunk) = tokio::time::timeout(Duration::ZERO, r.read_response_body()).await {
                got.extend_from_slice(&chunk.unwrap().unwrap());
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(got, b"abcd");
        assert_eq!(r.read_response_body().await.unwrap(), None);
    }
}
