//! The gateway's stand-in for `tokio-test` (`[patch.crates-io]` in the workspace's `Cargo.toml`).
//!
//! pingora-core depends on tokio-test as a normal dependency only to implement its I/O traits for
//! `tokio_test::io::Mock`, which its own unit tests use. tokio-test turns on tokio's `test-util` feature,
//! and with it every reading of the runtime's clock (each timer set, each turn of the time driver) takes
//! a mutex and reads the clock twice: instructions on every proxied request (BENCHMARKS.md, "Where the
//! proxy's time goes"). This crate has the one type pingora-core names, with no values: nothing can use it.
#![forbid(unsafe_code)]

/// Mock I/O.
pub mod io {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    /// Uninhabited: pingora-core implements its I/O traits for it; no value of it exists.
    #[derive(Debug)]
    pub enum Mock {}

    impl AsyncRead for Mock {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match *self.get_mut() {}
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
            match *self.get_mut() {}
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match *self.get_mut() {}
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            match *self.get_mut() {}
        }
    }
}
