//! Progress notifications stream through the proxy as they are emitted, not bunched at the end.

use anyhow::{Context, Result};
use mcpgw_e2e::{EverythingServer, Gateway, PyServer, PyServerOpts, py_client};
use serde_json::Value;

/// Timing of one `py_client progress` run, in seconds from the start of the call.
#[derive(Debug)]
struct Timing {
    count: usize,
    first: f64,
    last: f64,
    result_at: f64,
}

fn timing(doc: &Value) -> Result<Timing> {
    let times: Vec<f64> = doc["progress"]
        .as_array()
        .context("no progress array")?
        .iter()
        .map(|p| p["t"].as_f64().context("progress without t"))
        .collect::<Result<_>>()?;
    Ok(Timing {
        count: times.len(),
        first: *times.first().context("no progress notification")?,
        last: *times.last().context("no progress notification")?,
        result_at: doc["resultAt"].as_f64().context("no resultAt")?,
    })
}

/// Same notifications and result; the proxied spread is at least 60% of the direct one, and the first
/// notification precedes the result by at least 60% of the direct lead.
fn assert_streamed(what: &str, direct: &Value, proxied: &Value) -> Result<()> {
    let (d, p) = (timing(direct)?, timing(proxied)?);
    eprintln!("{what}: direct {d:?}, proxied {p:?}");
    assert_eq!(proxied["result"], direct["result"], "{what}: results differ");
    assert!(d.count >= 3, "{what}: direct run emitted only {d:?}");
    assert_eq!(p.count, d.count, "{what}: notification count, proxied {p:?} vs direct {d:?}");
    let (d_spread, p_spread) = (d.last - d.first, p.last - p.first);
    assert!(
        p_spread >= 0.6 * d_spread,
        "{what}: notifications bunched through the proxy: spread {p_spread:.3}s vs {d_spread:.3}s direct \
         (proxied {p:?}, direct {d:?})"
    );
    let (d_lead, p_lead) = (d.result_at - d.first, p.result_at - p.first);
    assert!(
        p_lead >= 0.6 * d_lead,
        "{what}: first notification only {p_lead:.3}s before the result through the proxy vs {d_lead:.3}s \
         direct (proxied {p:?}, direct {d:?})"
    );
    Ok(())
}

async fn compare(what: &str, direct: &str, proxied: &str, mode: &str, tool: &str, args: &str) -> Result<()> {
    // One after the other: two concurrent runs on two cores would distort each other's timing.
    let d = py_client(direct, mode, &["progress", tool, args]).await?;
    let p = py_client(proxied, mode, &["progress", tool, args]).await?;
    assert_streamed(&format!("{what} (--mode {mode})"), &d, &p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_progress_streams_through_proxy() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = EverythingServer::start().await?;
    let proxied = gw.add_server("everything", &upstream.url(), "streamable_http").await?;
    let args = r#"{"duration":2,"steps":5}"#;
    compare(
        "trigger-long-running-operation",
        &upstream.url(),
        &proxied,
        "legacy",
        "trigger-long-running-operation",
        args,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_progress_streams_through_proxy_in_both_eras() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-progress", PyServerOpts::default()).await?;
    let proxied = gw.add_server("py-progress", &upstream.url(), "streamable_http").await?;
    let args = r#"{"steps":5,"interval_ms":300}"#;
    // auto negotiates 2026-07-28 with this server (per-request SSE stream); legacy rides a session.
    for mode in ["auto", "legacy"] {
        compare("python progress", &upstream.url(), &proxied, mode, "progress", args).await?;
    }
    Ok(())
}
