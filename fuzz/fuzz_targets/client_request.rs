//! The MCP listener's HTTP/1 session (`proxy/src/downstream/mod.rs`): the bytes a client sends on one
//! connection — heads, bodies by length or chunked, pipelined requests — arriving in pieces whose sizes
//! come from the first input bytes, then the connection closed. Each request read is answered (200, no
//! body) and the session finished before the next. Whatever arrives, reading ends, never panics and hands
//! out no more body bytes than arrived; the requests read (method, target, headers, body) and how the
//! connection ended are the same however the bytes were cut; the MCP headers the session keeps as it
//! parses are those its head's map gives, and so are the fields it notes (`Noted`); a length is declared
//! only with a `Content-Length`.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::downstream::{HeadDeadline, Session};
use mcpgw_proxy::headers::McpHeaders;
use mcpgw_proxy::transport::Transport;
use pingora::http::ResponseHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::l4::virt::VirtualSocketStream;

#[path = "common/chunking.rs"]
mod chunking;
use chunking::{chunks, split};
#[path = "common/replay.rs"]
mod replay;
use replay::Replay;

/// One request as read: method, target, headers and whole body.
type Request = (String, String, Vec<(String, Vec<u8>)>, Vec<u8>);

/// The requests read from `pieces`, and whether reading stopped at an error (else at the connection's
/// end or a request that closed it).
fn read(pieces: &[&[u8]], arrived: usize) -> (Vec<Request>, bool) {
    let pieces = pieces.iter().filter(|p| !p.is_empty()).map(|p| p.to_vec()).collect();
    let socket = VirtualSocketStream::new(Box::new(Replay { pieces }));
    let stream = Box::new(HeadDeadline::new(
        Transport::Pingora(Box::new(L4Stream::from(socket))),
        Duration::from_secs(60),
    ));
    let mut session = Session::new(stream, None, Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    runtime.block_on(async {
        let mut requests = Vec::new();
        let mut body_bytes = 0;
        loop {
            match session.read_request().await {
                Ok(true) => {}
                Ok(false) => return (requests, false),
                Err(_) => return (requests, true),
            }
            let head = session.req_header();
            assert_eq!(
                session.mcp_headers(),
                &McpHeaders::of(head),
                "the kept MCP headers differ from the map's"
            );
            for name in [
                &http::header::CONTENT_LENGTH,
                &http::header::TRANSFER_ENCODING,
                &http::header::CONNECTION,
                &http::HeaderName::from_static("keep-alive"),
                &http::header::ORIGIN,
                &http::header::EXPECT,
                &http::header::AUTHORIZATION,
                &mcpgw_proxy::headers::TRACEPARENT,
            ] {
                assert_eq!(
                    session.noted().get(&head.headers, name),
                    head.headers.get(name),
                    "{name} noted unlike the map"
                );
            }
            let declared = session.declared_length();
            assert!(
                declared.is_none() || head.headers.get(http::header::CONTENT_LENGTH).is_some(),
                "a declared length without Content-Length"
            );
            let headers =
                head.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect();
            let (method, target) = (head.method.to_string(), head.uri.to_string());
            let mut body = Vec::new();
            loop {
                match session.read_request_body().await {
                    Ok(Some(bytes)) => {
                        body.extend_from_slice(&bytes);
                        body_bytes += bytes.len();
                        assert!(body_bytes <= arrived, "more body bytes handed out than arrived");
                    }
                    Ok(None) => break,
                    Err(_) => return (requests, true),
                }
            }
            if let Some(declared) = declared {
                assert_eq!(body.len() as u64, declared, "a body unlike its declared length");
            }
            requests.push((method, target, headers, body));
            let mut answer = ResponseHeader::build_no_case(200, None).expect("a head");
            answer.insert_header("content-length", "0").expect("a header");
            if session.write_response_header(Box::new(answer)).await.is_err()
                || session.write_response_body(Bytes::new(), true).await.is_err()
                || !session.finish().await
            {
                return (requests, false);
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, stream)) = split(data) else { return };
    let whole = read(&[stream], stream.len());
    let cut = read(&chunks(stream, &sizes), stream.len());
    assert_eq!(cut, whole, "the requests read depend on how they arrived");
});
