//! The proxy's SSE scanners (`proxy/src/sse.rs`): the event `Parser`, the `EndpointRewriter` of legacy
//! HTTP+SSE streams and the `MessageRewriter` of `/mcp` and 2026-07-28 answers. The stream is fed in chunks
//! whose sizes come from the first input bytes; whatever the chunking, the same events (and the same output
//! bytes) must come out as when the stream arrives in one piece.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::sse::{Completion, EndpointRewriter, MessageRewriter, Parser, Rewrites, without_events};

#[path = "common/chunking.rs"]
mod chunking;
use chunking::{chunks, split};

fn rewrites(selector: u8) -> Rewrites {
    Rewrites {
        request_ids: (selector & 1 != 0).then(|| Arc::from("mcpgw~up1~")),
        complete: (selector & 2 != 0).then_some(Completion { cacheable: selector & 4 != 0 }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = split(data) else { return };
    let pieces = chunks(stream, &sizes);

    // Events: the same list whether the stream came whole or in pieces.
    let whole = Parser::default().feed(stream).expect("small streams are never too large");
    let mut parser = Parser::default();
    let mut events = Vec::new();
    for piece in &pieces {
        events.extend(parser.feed(piece).expect("small streams are never too large"));
    }
    assert_eq!(events, whole, "events depend on the chunking");

    // The endpoint rewrite: the same bytes out, and nothing lost or invented besides the rewrite.
    let rewrite = |uri: &str| Some(format!("/mcp/s/message?sessionId=T{}", uri.len()));
    let run_endpoint = |parts: &[&[u8]]| {
        let mut r = EndpointRewriter::default();
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&r.feed(Bytes::copy_from_slice(part), rewrite));
        }
        out.extend_from_slice(&r.finish());
        out
    };
    let endpoint_whole = run_endpoint(&[stream]);
    assert_eq!(run_endpoint(&pieces), endpoint_whole, "endpoint rewrite depends on the chunking");
    if !events.iter().any(|e| e.kind == "endpoint") {
        assert_eq!(endpoint_whole, stream, "a stream without an endpoint event passes unchanged");
    }

    // The message rewrites of every configuration.
    for selector in 0..8u8 {
        let run = |parts: &[&[u8]]| {
            let mut r = MessageRewriter::new(rewrites(selector));
            let mut out = Vec::new();
            for part in parts {
                out.extend_from_slice(&r.feed(Bytes::copy_from_slice(part)));
            }
            out.extend_from_slice(&r.finish());
            out
        };
        let once = run(&[stream]);
        let chunked = run(&pieces);
        if selector == 0 {
            assert_eq!(once, stream, "no rewrites: the stream passes unchanged");
            assert_eq!(chunked, stream, "no rewrites: the stream passes unchanged");
        }
        // Compared as the client reads them: a blank line more or less between events is no difference.
        let parse = |bytes: &[u8]| Parser::default().feed(bytes).expect("small streams are never too large");
        assert_eq!(parse(&chunked), parse(&once), "message rewrite {selector} depends on the chunking");
    }

    // Dropping events that mention a needle keeps whole events only, and keeps all others.
    let kept = without_events(Bytes::copy_from_slice(stream), b"\"progressToken\"");
    assert!(kept.len() <= stream.len());
});
