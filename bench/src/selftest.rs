//! The fixture and the load generator against each other, in process: every load shape the scenarios
//! use gets answers it accepts.

use std::time::Duration;

use crate::fixture::{self, Fixture, Settings};
use crate::http::Conn;
use crate::load::{Window, closed, open, setup, sse_timing, streams};
use crate::requests::Endpoint;

async fn start() -> (Endpoint, Endpoint, std::sync::Arc<Fixture>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fx = Fixture::new(Settings { payload_bytes: 1024, keepalive: Duration::from_secs(15) });
    tokio::spawn(fixture::serve(listener, fx.clone()));
    (Endpoint::new(addr, "/mcp"), Endpoint::new(addr, "/mcp-sse"), fx)
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
