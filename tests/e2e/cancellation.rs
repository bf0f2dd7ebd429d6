//! Cancellation follows the era, proved with the Python server's `slow` tool, which leaves marker files:
//! `.started`, then `.done` or `.cancelled`, and `.disconnected` when the HTTP connection that carried
//! the request closed. A 2026-07-28 client closing its stream cancels the upstream request; a legacy
//! client's disconnect does not (the proxy keeps the upstream connection and drains it), and a legacy
//! `notifications/cancelled` does cancel. Direct runs show the server reacts to each signal, so a proxy
//! that got it wrong would change the markers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mcpgw_e2e::dataplane::{CuttablePost, PostEvent};
use mcpgw_e2e::mcp::{headers, modern_body, modern_headers};
use mcpgw_e2e::process::log_dir;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, poll_until};
use serde_json::{Value, json};

/// How long the tool runs when nobody cancels it.
const SLOW_SECONDS: f64 = 3.0;
const MARKER_TIMEOUT: Duration = Duration::from_secs(15);

fn marker(name: &str) -> PathBuf {
    log_dir().join(name)
}

fn has(base: &Path, suffix: &str) -> bool {
    Path::new(&format!("{}.{suffix}", base.display())).exists()
}

/// The markers of `base` present now.
fn markers(base: &Path) -> Vec<&'static str> {
    ["started", "disconnected", "cancelled", "done"].into_iter().filter(|s| has(base, s)).collect()
}

async fn wait_marker(base: &Path, suffix: &str) -> Result<Duration> {
    let start = Instant::now();
    poll_until(&format!("{}.{suffix}", base.display()), MARKER_TIMEOUT, || async {
        Ok(has(base, suffix).then_some(()))
    })
    .await
    .with_context(|| format!("markers present: {:?}", markers(base)))?;
    Ok(start.elapsed())
}

fn slow_args(base: &Path) -> Value {
    json!({"name": "slow", "arguments": {"seconds": SLOW_SECONDS, "marker": base.to_string_lossy()}})
}

/// Sends a 2026-07-28 `tools/call slow` to `url`, waits until the tool runs, closes the connection;
/// returns when the tool reported cancellation, with how long that took after the close.
async fn modern_cut(url: &str, base: &Path) -> Result<Duration> {
    let params = slow_args(base);
    let mut post = CuttablePost::send(
        url,
        &modern_headers("tools/call", &params),
        &modern_body(json!(1), "tools/call", params),
    );
    wait_marker(base, "started").await?;
    if let Some(PostEvent::End(_) | PostEvent::Body(_)) = post.next(Duration::ZERO).await {
        bail!("the modern call ended before the client closed it");
    }
    post.cut();
    let took = wait_marker(base, "cancelled").await?;
    assert!(!has(base, "done"), "{}: the tool both completed and was cancelled", base.display());
    Ok(took)
}

/// In a new legacy session at `url`, sends `tools/call slow`, waits until the tool runs and closes the
/// connection; returns the session client and the request's id.
async fn legacy_cut(url: &str, base: &Path) -> Result<(McpHttp, Value)> {
    let mut client = McpHttp::new(url);
    client.initialize().await?;
    let id = json!(9);
    let hdrs = headers(&[
        ("Mcp-Session-Id", client.session_id.as_deref().unwrap_or_default()),
        ("MCP-Protocol-Version", client.protocol_version.as_deref().unwrap_or_default()),
    ]);
    let mut post = CuttablePost::send(
        url,
        &hdrs,
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": slow_args(base)}),
    );
    wait_marker(base, "started").await?;
    post.cut();
    Ok((client, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_stream_close_cancels_the_upstream_request() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-cancel", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-cancel", &upstream.url(), "streamable_http").await?;

    let direct = modern_cut(&upstream.url(), &marker("modern-direct")).await.context("direct")?;
    let through = modern_cut(&proxied, &marker("modern-proxied")).await.context("through the proxy")?;
    eprintln!("client close → upstream cancelled: direct {direct:?}, through the proxy {through:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_disconnect_does_not_cancel_but_notifications_cancelled_does() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-legacy-cancel", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-legacy-cancel", &upstream.url(), "streamable_http").await?;

    // Direct, the server notices the closed connection (and still finishes: legacy disconnects are not
    // cancellations).
    let direct = marker("legacy-direct");
    legacy_cut(&upstream.url(), &direct).await?;
    wait_marker(&direct, "disconnected").await.context("direct: the server did not notice the disconnect")?;
    wait_marker(&direct, "done").await?;
    assert!(!has(&direct, "cancelled"), "direct: {:?}", markers(&direct));

    // Through the proxy the tool finishes and never sees its connection close: the proxy drains it.
    let through = marker("legacy-proxied");
    let cut = Instant::now();
    legacy_cut(&proxied, &through).await?;
    wait_marker(&through, "done").await?;
    eprintln!(
        "legacy through the proxy: done {:?} after the client left; markers {:?}",
        cut.elapsed(),
        markers(&through)
    );
    assert!(!has(&through, "cancelled"), "a legacy disconnect cancelled the tool: {:?}", markers(&through));
    assert!(
        !has(&through, "disconnected"),
        "the proxy closed the upstream connection of a legacy request: {:?}",
        markers(&through)
    );

    // A legacy client cancels explicitly: notifications/cancelled reaches the session's instance.
    let notified = marker("legacy-notified");
    let (client, id) = legacy_cut(&proxied, &notified).await?;
    let resp = client
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": id, "reason": "e2e"}}))
        .await?;
    assert_eq!(resp.status.as_u16(), 202, "notifications/cancelled: {}", resp.text());
    let took = wait_marker(&notified, "cancelled").await?;
    eprintln!("notifications/cancelled → upstream cancelled in {took:?}");
    assert!(!has(&notified, "done"), "{:?}", markers(&notified));
    Ok(())
}
