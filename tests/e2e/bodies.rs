//! Large request bodies through every path that inspects the body (Pingora's own retry buffer would
//! drop anything above 64 KiB): a legacy session, a 2026-07-28 request (header check) and an HTTP+SSE
//! message (sessionId token). The echo tools must return exactly the text that was sent.

use anyhow::{Context, Result};
use mcpgw_e2e::dataplane::{LegacySseClient, pseudo_random_text};
use mcpgw_e2e::{EverythingServer, Gateway, McpHttp, PyServer, PyServerOpts};
use serde_json::json;

use crate::first_text;

const SIZES: [usize; 2] = [100 * 1024, 2 * 1024 * 1024];

fn same_text(what: &str, got: Option<&str>, sent: &str) {
    let got = got.unwrap_or_default();
    assert!(
        got == sent,
        "{what}: echo of {} bytes came back as {} bytes (first difference at byte {:?})",
        sent.len(),
        got.len(),
        got.bytes().zip(sent.bytes()).position(|(a, b)| a != b)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_arrive_intact_on_every_path() -> Result<()> {
    let gw = Gateway::start().await?;
    let (py, everything) = tokio::try_join!(
        PyServer::start("py-bodies", PyServerOpts::default()),
        EverythingServer::start_sse()
    )?;
    let proxied = gw.add_server("py-bodies", &py.url(), "streamable_http").await?;
    gw.add_server("sse-bodies", &everything.url(), "sse").await?;

    let mut session = McpHttp::new(&proxied);
    session.initialize().await?;
    let stateless = McpHttp::new(&proxied);
    let mut sse = LegacySseClient::connect(&format!("{}/sse", gw.proxy.url("sse-bodies"))).await?;
    sse.initialize().await?;

    for (n, size) in SIZES.into_iter().enumerate() {
        let text = pseudo_random_text(size, 11 + n as u64);
        let kib = size / 1024;

        let result = session
            .call_tool("echo", json!({"message": text}))
            .await
            .with_context(|| format!("{kib} KiB legacy"))?;
        same_text(&format!("{kib} KiB in a legacy session"), first_text(&result), &text);

        let (id, resp) =
            stateless.modern("tools/call", json!({"name": "echo", "arguments": {"message": text}})).await?;
        let message = resp
            .response_for(&id)
            .with_context(|| format!("{kib} KiB modern: {} {}", resp.status, resp.text()))?;
        same_text(&format!("{kib} KiB in a 2026-07-28 request"), first_text(&message["result"]), &text);

        let result = sse
            .call_tool("echo", json!({"message": text}))
            .await
            .with_context(|| format!("{kib} KiB SSE"))?;
        same_text(
            &format!("{kib} KiB in an HTTP+SSE message"),
            first_text(&result).and_then(|t| t.strip_prefix("Echo: ")),
            &text,
        );
        eprintln!("{kib} KiB: identical on the legacy, 2026-07-28 and HTTP+SSE paths");
    }
    Ok(())
}
