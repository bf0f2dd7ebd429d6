//! The client's stream on the MCP listener: request heads bounded by `--request-head-timeout` from their
//! first byte, and small writes held until a flush so an answer's head and a small body leave in one send.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::deadline::Deadline;
use crate::memory::{SPARE_LIMIT, Spares};
use crate::transport::Transport;

/// Where a request head is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// No byte of the next head yet (the connection may be idle between requests).
    Awaited,
    /// Reading it; `after_lf`: the last byte that was not CR was LF (one more LF ends the head).
    Reading { after_lf: bool },
    /// Read: nothing is scanned until the next request.
    Read,
}

/// Most bytes held back to go out with the next write (an answer's head with a small body): one TCP
/// segment, as Pingora's L4 write buffer.
const COALESCE: usize = 1460;

thread_local! {
    /// Write buffers given back once their bytes were sent: an answer takes one and gives it back at its
    /// flush (1,460 bytes is past glibc's per-thread cache: ~400 instructions a request under callgrind).
    static SPARE: Spares<Vec<u8>> = const { Spares::new() };
}

fn take_buffer() -> Vec<u8> {
    SPARE.with(Spares::take).unwrap_or_else(|| Vec::with_capacity(COALESCE))
}

fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() > SPARE_LIMIT {
        // Grown by a large answer head (`HeadDeadline::held_mut`): not kept.
        return;
    }
    buffer.clear();
    SPARE.with(|spare| spare.give_back(buffer));
}

/// A client stream whose request heads must arrive within a deadline from their first byte, and whose
/// small writes are held until a flush (or a write that would overflow them) so an answer's head and a
/// small body leave in one send. The held bytes' buffer is given back once sent: an idle stream holds none.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Transport,
    timeout: Duration,
    head: Head,
    deadline: Option<Deadline>,
    /// Written, not yet sent; `held[sent..]` is what remains.
    held: Vec<u8>,
    sent: usize,
}

impl HeadDeadline {
    pub fn new(inner: Transport, timeout: Duration) -> Self {
        Self { inner, timeout, head: Head::Awaited, deadline: None, held: Vec::new(), sent: 0 }
    }

    /// Sends what is held; the buffer is freed once it is all out.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.held.capacity() > 0 {
            give_back(std::mem::take(&mut self.held));
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Holds `bufs` when they fit beside what is held: `None` when they do not (what is held must go first).
    fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.held.len() + len > COALESCE {
            return None;
        }
        if self.held.capacity() == 0 {
            self.held = take_buffer();
        }
        for buf in bufs {
            self.held.extend_from_slice(buf);
        }
        Some(len)
    }

    /// The held bytes, to write more straight into them (sent at the next flush, or before a write that
    /// does not fit beside them): an answer's head is built here instead of in a buffer of its own.
    pub(crate) fn held_mut(&mut self) -> &mut Vec<u8> {
        if self.held.capacity() == 0 {
            self.held = take_buffer();
        }
        &mut self.held
    }

    /// Drops the head deadline's timer (made again for the next head): see `Session::release_timers`.
    pub(crate) fn release_timer(&mut self) {
        self.deadline = None;
    }

    /// The next bytes start a new request head.
    pub(crate) fn rearm(&mut self) {
        self.head = Head::Awaited;
    }

    /// Sends what is held (the last answer before a close), then the FIN.
    pub(crate) async fn close(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_send_held(cx)).await;
        self.inner.close().await;
    }

    /// Follows the head through `bytes` just read.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.head == Head::Read {
            return;
        }
        let after_lf = match self.head {
            Head::Reading { after_lf } => after_lf,
            _ => {
                Deadline::set_in(&mut self.deadline, self.timeout);
                false
            }
        };
        self.head = match scan_head(after_lf, bytes) {
            Some(after_lf) => Head::Reading { after_lf },
            None => Head::Read,
        };
    }
}

/// Scans the next `bytes` of a request head, `after_lf` saying whether the last byte before them that was
/// not CR was LF: `None` when they end the head (an empty line, CRLF or bare LF), else the same for them.
fn scan_head(mut after_lf: bool, bytes: &[u8]) -> Option<bool> {
    // Line by line (`memchr` finds each LF): a line ends the head when only CRs stand between it and the
    // LF before it.
    let mut rest = bytes;
    loop {
        let Some(lf) = memchr::memchr(b'\n', rest) else {
            return Some(after_lf && rest.iter().all(|&b| b == b'\r'));
        };
        if after_lf && rest[..lf].iter().all(|&b| b == b'\r') {
            return None;
        }
        after_lf = true;
        rest = &rest[lf + 1..];
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if matches!(this.head, Head::Reading { .. })
            && let Some(deadline) = &mut this.deadline
            && Pin::new(deadline).poll(cx).is_ready()
        {
            crate::metrics::METRICS.request_head_timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the request head did not arrive within {:?}", this.timeout),
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let filled = buf.filled().len();
            if filled > before {
                this.scan(&buf.filled()[before..filled]);
                if matches!(this.head, Head::Reading { .. })
                    && let Some(deadline) = &mut this.deadline
                {
                    // Registers the timer with this task, so a silent client is woken at the deadline.
                    let _ = Pin::new(deadline).poll(cx);
                }
            }
        }
        polled
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(len) = this.hold(bufs) {
            return Poll::Ready(Ok(len));
        }
        std::task::ready!(this.poll_send_held(cx))?;
        match this.hold(bufs) {
            Some(len) => Poll::Ready(Ok(len)),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_head_ends_at_an_empty_line_with_or_without_carriage_returns() {
        let ends = |chunks: &[&[u8]]| {
            let mut after_lf = false;
            chunks.iter().any(|chunk| match scan_head(after_lf, chunk) {
                None => true,
                Some(next) => {
                    after_lf = next;
                    false
                }
            })
        };
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]));
        assert!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n\r", b"\n"]), "split anywhere");
        assert!(ends(&[b"GET / HTTP/1.1\nHost: a\n\n"]), "bare LF");
        assert!(!ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-Slow: 1\r\n"]));
        assert!(!ends(&[b"GET / HTTP/1.1\r\nX: a\r\r\n"]), "a lone CR is not a line");
    }

    #[tokio::test]
    async fn small_writes_leave_together_at_the_flush_and_large_ones_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let mut stream = HeadDeadline::new(Transport::Tcp(client), Duration::from_secs(5));

        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        stream.write_all(head).await.unwrap();
        let written = stream.write_vectored(&[io::IoSlice::new(b"o"), io::IoSlice::new(b"k")]).await.unwrap();
        assert_eq!(written, 2);
        assert_eq!((stream.held.len(), stream.sent), (head.len() + 2, 0), "held until the flush");
        stream.flush().await.unwrap();
        assert_eq!(stream.held.capacity(), 0, "the buffer is given back once sent");
        let mut got = vec![0; head.len() + 2];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..head.len()], head);
        assert_eq!(&got[head.len()..], b"ok");

        // Over the limit: what is held goes first, then the large write, unbuffered.
        stream.write_all(b"x").await.unwrap();
        stream.write_all(&[b'y'; 5000]).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = vec![0; 5001];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'x');
        assert!(got[1..].iter().all(|&b| b == b'y'));
        assert_eq!(stream.held.capacity(), 0);
    }
}
