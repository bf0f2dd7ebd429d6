//! The real peers behave as the other modules assume (direct, no gateway): if one of these fails, the
//! peer installation or the harness is at fault, not mcpgw.

use anyhow::Result;
use mcpgw_e2e::peers::inspector_transport;
use mcpgw_e2e::{EverythingServer, McpHttp, PyServer, PyServerOpts, inspector, py_client};
use serde_json::json;

use crate::{first_text, tool_names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_serves_both_transports_on_loopback() -> Result<()> {
    let http = EverythingServer::start().await?;
    let sse = EverythingServer::start_sse().await?;
    let over_http = inspector(&http.url(), &["--method", "tools/list"]).await?;
    let over_sse = inspector_transport(&sse.url(), "sse", &["--method", "tools/list"]).await?;
    assert!(tool_names(&over_http).iter().any(|n| n == "trigger-long-running-operation"), "{over_http}");
    assert_eq!(tool_names(&over_sse), tool_names(&over_http));
    // The preload pins the listener to loopback: nothing answers on another local address.
    let elsewhere = std::net::SocketAddr::from(([127, 0, 0, 2], http.port()));
    assert!(
        tokio::net::TcpStream::connect(elsewhere).await.is_err(),
        "server-everything listens beyond 127.0.0.1"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_is_dual_era_and_names_itself() -> Result<()> {
    let server = PyServer::start("py-self", PyServerOpts::default()).await?;
    let auto = py_client(&server.url(), "auto", &["call", "whoami"]).await?;
    assert_eq!(auto["protocolVersion"], "2026-07-28", "{auto}");
    assert_eq!(first_text(&auto["result"]), Some("py-self"));
    let legacy = py_client(&server.url(), "legacy", &["call", "add", r#"{"a":1,"b":2}"#]).await?;
    assert_eq!(legacy["protocolVersion"], "2025-11-25", "{legacy}");
    assert_eq!(first_text(&legacy["result"]), Some("3.0"), "{legacy}");

    let stateless = PyServer::start(
        "py-json",
        PyServerOpts { stateless: true, json_response: true, ..Default::default() },
    )
    .await?;
    let (id, resp) = McpHttp::new(stateless.url()).modern("tools/call", json!({"name": "whoami"})).await?;
    assert_eq!(resp.content_type(), "application/json", "{resp:?}");
    assert_eq!(first_text(&resp.response_for(&id).unwrap_or_default()["result"]), Some("py-json"));
    Ok(())
}
