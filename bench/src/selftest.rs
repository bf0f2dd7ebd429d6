//! The fixture and the load generator against each other, in process: every load shape the scenarios
//! use gets answers it accepts, and every load loop counts the answers it must not accept.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::fixture::{self, Fixture, Settings};
use crate::http::Conn;
use crate::load::closed::CallsShape;
use crate::load::{Window, closed, open, setup, sse_timing, streams};
use crate::requests::Endpoint;

async fn start() -> (Endpoint, Endpoint, std::sync::Arc<Fixture>) {
    start_with(None).await
}

async fn start_with(close_after: Option<u64>) -> (Endpoint, Endpoint, std::sync::Arc<Fixture>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let close_after = close_after.and_then(NonZeroU64::new);
    let fx = Fixture::new(Settings { payload_bytes: 1024, keepalive: Duration::from_secs(15), close_after });
    tokio::spawn(fixture::serve(listener, fx.clone()));
    (Endpoint::new(addr, "/mcp"), Endpoint::new(addr, "/mcp-sse"), fx)
}

fn shape(in_flight: u64) -> CallsShape {
    CallsShape { in_flight, limit: Some(Duration::from_secs(5)) }
}

fn short() -> Window {
    Window { warmup: Duration::from_millis(10), measure: Duration::from_millis(100) }
}

#[tokio::test]
async fn every_load_shape_works_against_the_fixture() {
    let (json, sse, fx) = start().await;
    let r = closed::run(json.addr, vec![json.stateless_echo(); 2], short()).await;
    assert!(r.requests > 0 && r.errors == 0, "{r:?}");

    let mut conn = Conn::connect(json.addr).await.unwrap();
    let resp = conn.request(&json.stateless_echo()).await.unwrap();
    assert!(resp.body.len() > 1024, "~1 KiB payload");
    let session = setup::setup(&mut conn, &json, &json.initialize()).await.unwrap();
    let r = closed::run(json.addr, vec![json.session_echo(&session)], short()).await;
    assert!(r.requests > 0 && r.errors == 0, "{r:?}");

    let r = open::run(json.addr, json.stateless_echo(), 500.0, 2, short()).await;
    assert!(r.requests > 20 && r.errors == 0, "{r:?}");

    let call = sse.stateless_call("stream", r#"{"count":3,"interval_ms":1}"#);
    let r = sse_timing::run(sse.addr, call, 1, short()).await;
    assert!(r.streams > 0 && r.errors == 0, "{r:?}");
    assert_eq!(r.events, r.streams * 4, "3 progress events and the result, each stamped");

    let r = setup::run(&sse, short()).await;
    assert!(r.requests > 0 && r.errors == 0, "session setup with SSE answers: {r:?}");

    let (held, errors) = streams::open(&json, &session, 5, 2).await;
    assert_eq!((held.len(), errors.count), (5, 0));
    let unknown = conn.request(&json.get_stream("nope")).await.unwrap();
    assert_eq!(unknown.head.status, 404);
    let deleted = conn.request(&json.delete(&session)).await.unwrap();
    assert_eq!(deleted.head.status, 200);
    assert_eq!(fx.session_count(), 0, "setup::run deletes its sessions; the last one was deleted above");
}

#[tokio::test]
async fn every_load_loop_counts_rpc_errors_and_non_2xx_answers() {
    let (json, sse, _fx) = start().await;
    // The fixture answers an unknown tool with HTTP 200 and a JSON-RPC error.
    let unknown_tool = json.stateless_call("nope", "{}");
    let r = closed::run(json.addr, vec![unknown_tool.clone(); 2], short()).await;
    assert!(r.requests_total == 0 && r.errors > 0, "{r:?}");
    assert!(r.first_error.as_deref().is_some_and(|e| e.starts_with("JSON-RPC error: HTTP 200: {")), "{r:?}");
    let r = open::run(json.addr, unknown_tool.clone(), 500.0, 2, short()).await;
    assert!(r.requests_total == 0 && r.errors > 20, "{r:?}");
    for in_flight in [1, 2] {
        let r = closed::calls(json.addr, vec![unknown_tool.clone(); 2], 100, shape(in_flight)).await;
        assert_eq!((r.requests_total, r.errors), (0, 100), "{in_flight} in flight: {r:?}");
    }

    // A GET without a session: 405 with a plain-text body, no JSON-RPC in it.
    let not_allowed = Endpoint::get(json.addr, &json.path);
    let r = closed::run(json.addr, vec![not_allowed.clone()], short()).await;
    assert!(r.requests_total == 0 && r.errors > 0, "{r:?}");
    assert_eq!(r.first_error.as_deref(), Some("HTTP 405: GET needs a session"));
    let r = open::run(json.addr, not_allowed, 500.0, 2, short()).await;
    assert!(r.requests_total == 0 && r.errors > 20, "{r:?}");

    let r = sse_timing::run(sse.addr, sse.stateless_call("nope", "{}"), 1, short()).await;
    assert!(r.streams == 0 && r.errors > 0, "{r:?}");
    let (held, errors) = streams::open(&json, "nope", 3, 2).await;
    assert_eq!((held.len(), errors.count), (0, 3));
}

#[tokio::test]
async fn the_fixture_closes_connections_after_close_after_requests() {
    let (json, _, _fx) = start_with(Some(3)).await;
    let mut conn = Conn::connect(json.addr).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(conn.request(&json.stateless_echo()).await.unwrap().head.close);
    }
    assert_eq!(seen, [false, false, true], "the third answer carries Connection: close");
    assert!(conn.request(&json.stateless_echo()).await.is_err(), "and the connection is closed after it");

    let r = closed::calls(json.addr, vec![json.stateless_echo()], 60, shape(1)).await;
    assert_eq!((r.requests_total, r.errors, r.connections), (60, 0, 20), "{r:?}");
    // Two in flight: the 3rd answer closes the connection and the 4th request is made again on the next.
    let r = closed::calls(json.addr, vec![json.stateless_echo(); 2], 61, shape(2)).await;
    assert_eq!((r.requests_total, r.errors), (61, 0), "{r:?}");
    assert!(r.connections >= 21, "{r:?}");
}
