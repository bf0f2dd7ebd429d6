//! Active health checks end to end: a killed instance turns unhealthy within interval × threshold, the
//! proxy acknowledges the change, client calls keep succeeding, and the restarted instance comes back.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::{ADMIN_TOKEN, ControlPlane, McpHttp, Proxy, PyServer, PyServerOpts, TestDb, poll_until};
use reqwest::Method;
use serde_json::{Value, json};

use crate::first_text;

const INTERVAL: Duration = Duration::from_millis(200);
const THRESHOLD: u32 = 2;

/// Health flags shared by the tests that need fast checks.
pub const FAST_HEALTH: [&str; 8] = [
    "--health-interval",
    "200ms",
    "--health-unhealthy-threshold",
    "2",
    "--health-healthy-threshold",
    "1",
    "--health-timeout",
    "1s",
];

/// The instances of a server as the health endpoint shows them.
pub async fn instances(cp: &ControlPlane, id: &str) -> Result<Vec<Value>> {
    let (status, body) = cp.api(Method::GET, &format!("/api/v1/servers/{id}/health"), None).await?;
    ensure!(status == 200, "health of {id}: {status} {body}");
    Ok(body["instances"].as_array().cloned().unwrap_or_default())
}

async fn wait_status(
    cp: &ControlPlane,
    id: &str,
    index: usize,
    want: &str,
    within: Duration,
) -> Result<Duration> {
    let start = Instant::now();
    poll_until(&format!("instance {index} {want}"), within, || async move {
        let list = instances(cp, id).await?;
        Ok((list.get(index).and_then(|i| i["health_status"].as_str()) == Some(want)).then_some(()))
    })
    .await
    .with_context(|| cp.describe())?;
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_turns_unhealthy_then_recovers() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start_with(&db, ADMIN_TOKEN, &FAST_HEALTH).await?;
    let proxy = Proxy::start(&cp.grpc_url(), &[]).await?;
    let opts = PyServerOpts { stateless: true, json_response: true, ..Default::default() };
    let a = PyServer::start("inst-a", opts).await?;
    let b = PyServer::start("inst-b", opts).await?;
    let body = json!({"name": "pair", "auto_discover": false, "instances": [{"endpoint_url": a.url()}, {"endpoint_url": b.url()}]});
    let (status, created) = cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "{status} {created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    wait_status(&cp, &id, 0, "healthy", Duration::from_secs(20)).await?;
    wait_status(&cp, &id, 1, "healthy", Duration::from_secs(20)).await?;
    proxy.wait_routable("pair", Duration::from_secs(10)).await?;

    let port_b = b.port();
    drop(b);
    let took = wait_status(&cp, &id, 1, "unhealthy", Duration::from_secs(10)).await?;
    eprintln!("instance killed → unhealthy: {took:?} (interval {INTERVAL:?} × threshold {THRESHOLD})");
    ensure!(took < INTERVAL * THRESHOLD + Duration::from_secs(2), "unhealthy only after {took:?}");

    // The change reached the proxy: it acknowledged the routing version that carries it.
    let (_, stats) = cp.api(Method::GET, "/api/v1/admin/stats", None).await?;
    let version = stats["routing_version"].as_u64().context("routing_version")?;
    poll_until("the proxy acknowledges the health change", Duration::from_secs(5), || {
        let cp = &cp;
        async move {
            let (_, proxies) = cp.api(Method::GET, "/api/v1/proxies", None).await?;
            Ok(proxies[0]["acked_version"].as_u64().is_some_and(|v| v >= version).then_some(()))
        }
    })
    .await?;
    // No failed client call from here on.
    let client = McpHttp::new(proxy.url("pair"));
    for i in 0..20 {
        let (rid, resp) = client.modern("tools/call", json!({"name": "whoami"})).await?;
        let result = resp.response_for(&rid).and_then(|m| m.get("result").cloned());
        ensure!(
            result.as_ref().and_then(first_text) == Some("inst-a"),
            "call {i} after the kill: {} {}",
            resp.status,
            resp.text()
        );
    }

    let b = PyServer::start_on("inst-b", opts, Some(port_b)).await?;
    let back = wait_status(&cp, &id, 1, "healthy", Duration::from_secs(20)).await?;
    eprintln!("instance restarted → healthy: {back:?}");
    let history = instances(&cp, &id).await?[1]["history"].as_array().cloned().unwrap_or_default();
    ensure!(
        history.iter().any(|h| h["ok"] == false) && history[0]["ok"] == true,
        "history shows the outage: {history:?}"
    );
    drop(b);
    Ok(())
}
