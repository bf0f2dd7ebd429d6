//! Legacy session streams through the proxy: the GET stream opens and stays up, DELETE ends the session.

use std::time::Duration;

use anyhow::Result;
use mcpgw_e2e::mcp::StreamEvent;
use mcpgw_e2e::{EverythingServer, Gateway, McpHttp, PyServer, PyServerOpts};
use serde_json::{Value, json};

/// Status and JSON-RPC error code the upstream gives a request on a deleted session.
async fn refusal_after_delete(url: &str) -> Result<(u16, Option<i64>)> {
    let mut client = McpHttp::new(url);
    client.initialize().await?;
    let status = client.delete_session().await?;
    assert!(status.is_success(), "DELETE {url}: {status}");
    refusal(&client).await
}

async fn refusal(client: &McpHttp) -> Result<(u16, Option<i64>)> {
    let resp =
        client.post(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list", "params": {}})).await?;
    let code = resp.messages().first().and_then(|m| m.pointer("/error/code")).and_then(Value::as_i64);
    Ok((resp.status.as_u16(), code))
}

async fn get_stream_and_delete(direct: &str, proxied: &str) -> Result<()> {
    let direct_refusal = refusal_after_delete(direct).await?;
    eprintln!("deleted session, direct: {direct_refusal:?}");
    assert!(direct_refusal.0 >= 400, "upstream accepted a deleted session: {direct_refusal:?}");

    let mut client = McpHttp::new(proxied);
    let init = client.initialize().await?;
    assert!(init.session_id.is_some(), "no Mcp-Session-Id through the proxy: {init:?}");
    assert_eq!(init.protocol_version, mcpgw_e2e::mcp::LEGACY_VERSION, "{init:?}");

    let mut stream = client.open_get_stream().await?;
    assert_eq!(stream.status.as_u16(), 200, "GET stream through the proxy: body {:?}", stream.body);
    assert_eq!(stream.content_type(), "text/event-stream");
    // A priming event, a notification, or silence: all fine. The stream must not just end.
    match stream.next(Duration::from_secs(1)).await {
        StreamEvent::Event(e) => eprintln!("GET stream event: {e:?}"),
        StreamEvent::StillOpen => eprintln!("GET stream silent and open after 1 s"),
        StreamEvent::Ended => panic!("the GET stream ended at once through the proxy"),
    }
    // The session keeps working while its GET stream is open.
    let listed = client.call("tools/list", json!({})).await?;
    assert!(listed.get("result").is_some(), "tools/list with an open GET stream: {listed}");
    stream.close();

    let status = client.delete_session().await?;
    assert!(status.is_success(), "DELETE through the proxy: {status}");
    assert_eq!(refusal(&client).await?, direct_refusal, "a deleted session through the proxy vs direct");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_get_stream_and_delete_through_proxy() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = EverythingServer::start().await?;
    let proxied = gw.add_server("everything", &upstream.url(), "streamable_http").await?;
    get_stream_and_delete(&upstream.url(), &proxied).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_get_stream_and_delete_through_proxy() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-streams", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-streams", &upstream.url(), "streamable_http").await?;
    get_stream_and_delete(&upstream.url(), &proxied).await
}
