//! Routing table delivery: fast propagation of registrations, and a proxy that keeps serving while the
//! control plane is away and picks up changes again once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, py_client};
use serde_json::json;

use crate::first_text;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_routable_within_a_second() -> Result<()> {
    let gw = Gateway::start().await?;
    let upstream = PyServer::start("py-fast", PyServerOpts::default()).await?;
    let before = gw.proxy.routes().await?;
    assert!(!mcpgw_e2e::proxy::routable(&before, "py-fast"), "routable before registration: {before}");

    gw.cp.register("py-fast", &upstream.url(), "streamable_http").await?;
    let registered = Instant::now();
    gw.proxy.wait_routable("py-fast", Duration::from_secs(5)).await?;
    let took = registered.elapsed();
    eprintln!("registration → routable: {took:?}");
    assert!(took < Duration::from_secs(1), "registration reached the proxy after {took:?}");

    let metrics = gw.proxy.metrics().await?;
    assert!(
        metrics.contains("mcpgw_routing_table_version"),
        "no routing table gauge in /metrics:\n{metrics}"
    );
    let doc = py_client(&gw.proxy.url("py-fast"), "auto", &["call", "whoami"]).await?;
    assert_eq!(first_text(&doc["result"]), Some("py-fast"), "{doc}");
    Ok(())
}

/// Calls made while the control plane is down.
const OUTAGE_CALLS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_control_plane_outage_and_restart() -> Result<()> {
    let mut gw = Gateway::start().await?;
    let steady = PyServer::start("steady", PyServerOpts::default()).await?;
    let url = gw.add_server("steady", &steady.url(), "streamable_http").await?;
    // Started now so that the timing after the restart measures the proxy's reconnection, not Python.
    let late = PyServer::start("late", PyServerOpts::default()).await?;

    // Legacy session calls and stateless modern calls, alternating, in a loop that spans the outage.
    let mut session = McpHttp::new(&url);
    session.initialize().await?;
    let stateless = McpHttp::new(&url);
    let done = Arc::new(AtomicUsize::new(0));
    let outage_started = Arc::new(tokio::sync::Notify::new());
    let outage_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (done, outage_started, outage_flag) = (done.clone(), outage_started.clone(), outage_flag.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut during_outage = 0;
            let mut i = 0;
            while during_outage < OUTAGE_CALLS {
                let message = format!("call-{i}");
                let outcome = if i % 2 == 0 {
                    session.call_tool("echo", json!({"message": message})).await
                } else {
                    match stateless
                        .modern("tools/call", json!({"name": "echo", "arguments": {"message": message}}))
                        .await
                    {
                        Ok((id, resp)) => resp
                            .response_for(&id)
                            .and_then(|m| m.get("result").cloned())
                            .ok_or_else(|| anyhow::anyhow!("status {} body {}", resp.status, resp.text())),
                        Err(e) => Err(e),
                    }
                };
                match outcome {
                    Ok(result) if first_text(&result) == Some(message.as_str()) => {}
                    Ok(result) => failures.push(format!("{message}: unexpected result {result}")),
                    Err(e) => failures.push(format!("{message}: {e:#}")),
                }
                i += 1;
                if outage_flag.load(Ordering::SeqCst) {
                    during_outage += 1;
                }
                if done.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                    outage_started.notified().await;
                }
                // Pacing only: spreads the calls over the outage.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (i, failures)
        })
    };
    // After 10 calls, take the control plane away; the caller resumes once it is gone.
    mcpgw_e2e::poll_until("10 calls", Duration::from_secs(30), || {
        let n = done.load(Ordering::SeqCst);
        async move { Ok((n >= 10).then_some(())) }
    })
    .await?;
    gw.cp.stop().await?;
    outage_flag.store(true, Ordering::SeqCst);
    outage_started.notify_one();
    let (total, failures) = caller.await?;
    assert!(
        failures.is_empty(),
        "{} of {total} calls failed with the control plane down: {failures:#?}",
        failures.len()
    );
    assert!(gw.proxy.is_routable("steady").await?, "the proxy dropped its routes during the outage");

    // Back on the same ports: the proxy reconnects by itself and sees new registrations.
    gw.cp.restart().await?;
    let restarted = Instant::now();
    gw.cp.register("late", &late.url(), "streamable_http").await?;
    gw.proxy.wait_routable("late", Duration::from_secs(15)).await?;
    let took = restarted.elapsed();
    eprintln!("{total} calls, none failed; a registration after the restart was routable in {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "a registration after the restart reached the proxy after {took:?}"
    );
    let doc = py_client(&gw.proxy.url("late"), "auto", &["call", "whoami"]).await?;
    assert_eq!(first_text(&doc["result"]), Some("late"), "{doc}");
    Ok(())
}
