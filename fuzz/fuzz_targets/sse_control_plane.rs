//! The control plane's SSE parser (`control-plane/src/mcp/sse.rs`, used by discovery and health checks
//! against upstream MCP servers). The stream is fed in chunks whose sizes come from the first input bytes;
//! the events must not depend on where the chunks are cut, and no event may hold more than the stream did.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpgw_control_plane::mcp::sse::Parser;

#[path = "common/chunking.rs"]
mod chunking;
use chunking::{chunks, split};

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = split(data) else { return };
    let whole = Parser::default().feed(stream).expect("small streams are never too large");
    let mut parser = Parser::default();
    let mut events = Vec::new();
    for piece in chunks(stream, &sizes) {
        events.extend(parser.feed(piece).expect("small streams are never too large"));
    }
    assert_eq!(events, whole, "events depend on the chunking");
    // Byte by byte too: the worst case for the resumed line search.
    let mut parser = Parser::default();
    let mut bytewise = Vec::new();
    for b in stream {
        bytewise.extend(parser.feed(std::slice::from_ref(b)).expect("small streams are never too large"));
    }
    assert_eq!(bytewise, whole, "events differ when fed byte by byte");
    for event in &whole {
        // Invalid UTF-8 becomes U+FFFD (3 bytes for at least 1): bounded by three times the input.
        assert!(event.data.len() + event.event.len() <= 3 * stream.len());
        assert!(!event.data.contains('\r'), "line ends are never part of data");
    }
});
