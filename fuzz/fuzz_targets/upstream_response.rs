//! The upstream answer's reader (`proxy/src/upstream/response.rs`): an HTTP/1 answer as an upstream might
//! send it, arriving in pieces whose sizes come from the first input bytes, then the connection closed.
//! Whatever arrives, reading ends, never panics and hands out no more body bytes than arrived; an answer read
//! whole comes out the same (status, headers, body) however it was cut, and one that fails fails either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::transport::Transport;
use mcpgw_proxy::upstream::response::Response;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::VirtualSocketStream;

#[path = "common/chunking.rs"]
mod chunking;
use chunking::{chunks, split};
#[path = "common/replay.rs"]
mod replay;
use replay::Replay;

/// What reading an answer gave: its status, headers and whole body, or `None` when it failed.
type Read = Option<(u16, Vec<(String, Vec<u8>)>, Vec<u8>)>;

/// Reads one answer from `pieces` (an empty piece would read as the end, so there is none).
fn read(pieces: &[&[u8]], arrived: usize) -> Read {
    let pieces = pieces.iter().filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect();
    let socket = VirtualSocketStream::new(Box::new(Replay { pieces }));
    let mut answer = Response::new(Transport::Pingora(Box::new(L4Stream::from(socket))), 0);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    runtime.block_on(async {
        answer.read_response_header().await.ok()?;
        let head = answer.take_response_header()?;
        let headers =
            head.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
        let mut body = Vec::new();
        loop {
            match answer.read_response_body().await {
                Ok(Some(bytes)) => {
                    body.extend_from_slice(&bytes);
                    assert!(body.len() <= arrived, "more body bytes handed out than arrived");
                }
                Ok(None) => return Some((head.status.as_u16(), headers, body)),
                Err(_) => return None,
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = split(data) else { return };
    let whole = read(&[stream], stream.len());
    let cut = read(&chunks(stream, &sizes), stream.len());
    assert_eq!(cut, whole, "the answer read depends on how it arrived");
});
