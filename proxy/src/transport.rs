//! The sockets requests and answers travel on: a plain TCP socket read and written as it is, or a stream
//! Pingora made (a TLS listener's connection, a TLS upstream's).
//!
//! Pingora's own TCP stream puts three layers between a read and the socket — a trait object, a buffered
//! wrapper and the raw stream's enum — and times every read and write that waits (two clock reads each):
//! ~1,000 instructions and four clock reads a proxied request over its client and upstream sockets
//! (BENCHMARKS.md). The gateway needs none of it on plain TCP: it buffers and coalesces its own reads and
//! writes (`downstream::Session`, `upstream::pool`), and reads no timing digest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket.
#[derive(Debug)]
pub enum Transport {
    /// Plain TCP, read and written directly.
    Tcp(TcpStream),
    /// A stream Pingora made (TLS).
    Pingora(Stream),
}

impl Transport {
    /// Sends the FIN (a TLS stream its close-notify first); failures are not the caller's concern, the
    /// connection is ending either way.
    pub async fn close(&mut self) {
        match self {
            Transport::Tcp(tcp) => {
                if let Err(e) = AsyncWriteExt::shutdown(tcp).await {
                    tracing::debug!(error = %e, "Failed to shut the connection down.");
                }
            }
            Transport::Pingora(stream) => Shutdown::shutdown(&mut **stream).await,
        }
    }
}

impl From<Stream> for Transport {
    fn from(stream: Stream) -> Self {
        Transport::Pingora(stream)
    }
}

impl AsyncRead for Transport {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Pingora(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Transport::Pingora(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Transport::Pingora(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(tcp) => tcp.is_write_vectored(),
            Transport::Pingora(stream) => stream.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            // Nothing is buffered above the socket.
            Transport::Tcp(_) => Poll::Ready(Ok(())),
            Transport::Pingora(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Pingora(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Both kinds carry bytes both ways and end with a FIN the peer reads as the end of the stream.
    #[tokio::test]
    async fn both_kinds_carry_bytes_and_end_with_a_fin() {
        for pingora in [false, true] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let mut transport = if pingora {
                Transport::from(Box::new(pingora::protocols::l4::stream::Stream::from(tcp)) as Stream)
            } else {
                Transport::Tcp(tcp)
            };
            peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            transport.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping", "pingora: {pingora}");
            let parts = [io::IoSlice::new(b"po"), io::IoSlice::new(b"ng")];
            let sent = transport.write_vectored(&parts).await.unwrap();
            transport.write_all(&b"pong"[sent..]).await.unwrap();
            transport.flush().await.unwrap();
            transport.close().await;
            let mut answer = Vec::new();
            peer.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"pong", "pingora: {pingora}");
        }
    }
}
