//! Audit end to end: every MCP call through two proxies ends as exactly one row in PostgreSQL, through
//! two control-plane restarts and a database outage while the calls are made.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mcpgw_bench::load::closed::{self, CallsShape};
use mcpgw_bench::requests::Endpoint;
use mcpgw_e2e::peers::{PyServer, PyServerOpts};
use mcpgw_e2e::proxy::Proxy;
use mcpgw_e2e::relay::Relay;
use mcpgw_e2e::{ControlPlane, TestDb, free_port, localhost, poll_until};
use serde_json::json;

const ADMIN: &str = "audit-admin-token";
/// Calls by the load generator (identical requests, counted per proxy).
const LOAD_CALLS: u64 = 8_000;
/// Calls each with an id and arguments of their own, matched one by one to their rows.
const OWN_CALLS: u64 = 2_000;

async fn rows(db: &TestDb, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<i64> {
    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let n = client.query_one(sql, params).await?.get::<_, i64>(0);
    drop(client);
    let _ = task.await;
    Ok(n)
}

fn spill_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[tokio::test]
async fn ten_thousand_calls_through_outages_leave_ten_thousand_rows() -> Result<()> {
    let db = TestDb::new();
    let pg = Relay::start(TestDb::server_addr()?).await?;
    let (http, grpc) = (localhost(free_port()?), localhost(free_port()?));
    let mut cp = ControlPlane::start_on_database(&db.url_through(pg.addr()), ADMIN, http, grpc, &[]).await?;
    let upstream = PyServer::start(
        "audited",
        PyServerOpts { stateless: true, json_response: true, ..Default::default() },
    )
    .await?;
    cp.register("audited", &upstream.url(), "streamable_http").await?;
    let (key_id, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;

    let spill_root = std::env::temp_dir().join(format!("mcpgw-e2e-audit-{}", uuid::Uuid::new_v4().simple()));
    let mut proxies = Vec::new();
    for n in 0..2 {
        let dir = spill_root.join(n.to_string());
        let args = ["--audit-spill-dir", dir.to_str().context("utf-8 path")?, "--proxy-id", ["p0", "p1"][n]];
        let proxy = Proxy::start_closed(&cp.grpc_url(), &args).await?;
        proxy.wait_routable("audited", Duration::from_secs(20)).await?;
        proxies.push((proxy, dir));
    }

    // The load: the bench load generator's identical calls on both proxies, and calls of their own
    // through reqwest, while the test takes the control plane and the database away.
    let done = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for (proxy, _) in &proxies {
        let ep = Endpoint::new(proxy.listen_addr(), "/mcp/audited").with_bearer(key.clone());
        let requests = vec![ep.stateless_echo(); 4];
        let done = done.clone();
        load.push(tokio::spawn(async move {
            let (mut calls, mut errors, mut first_error) = (0, 0, None);
            // In slices, so that the test can follow the progress.
            for _ in 0..20 {
                let shape = CallsShape { in_flight: 1, limit: Some(Duration::from_secs(30)) };
                let r = closed::calls(ep.addr, requests.clone(), LOAD_CALLS / 2 / 20, shape).await;
                done.fetch_add(r.requests_total + r.errors, Ordering::SeqCst);
                calls += r.requests_total;
                errors += r.errors;
                first_error = first_error.or(r.first_error);
            }
            (calls, errors, first_error)
        }));
    }
    let own = {
        let urls: Vec<String> = proxies.iter().map(|(p, _)| p.url("audited")).collect();
        let (key, done) = (key.clone(), done.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut failures = Vec::new();
            for n in 0..OWN_CALLS {
                let body = json!({"jsonrpc": "2.0", "id": format!("own-{n}"), "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": format!("call {n}")}}});
                let resp = client
                    .post(&urls[(n % 2) as usize])
                    .bearer_auth(&key)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2025-06-18")
                    .json(&body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("own-{n}: {}", r.status())),
                    Err(e) => failures.push(format!("own-{n}: {e}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        })
    };

    let total = LOAD_CALLS + OWN_CALLS;
    let at = |share: u64| {
        let done = done.clone();
        poll_until("the load to progress", Duration::from_secs(120), move || {
            let done = done.clone();
            async move { Ok((done.load(Ordering::SeqCst) >= total * share / 10).then_some(())) }
        })
    };
    at(2).await?;
    cp.restart().await?;
    at(4).await?;
    pg.cut();
    at(6).await?;
    pg.restore();
    at(7).await?;
    cp.restart().await?;

    let mut load_calls = 0;
    for task in load {
        let (calls, errors, first_error) = task.await?;
        ensure!(errors == 0, "{errors} load errors, the first: {first_error:?}");
        load_calls += calls;
    }
    let failures = own.await?;
    ensure!(failures.is_empty(), "calls failed: {failures:?}");
    ensure!(load_calls == LOAD_CALLS, "{load_calls} load calls made");

    let principal = format!("api-key:{key_id}");
    let count = "SELECT count(*) FROM audit_log WHERE kind = 'mcp' AND principal = $1";
    poll_until("every record in PostgreSQL", Duration::from_secs(90), || {
        let (db, principal) = (&db, principal.clone());
        async move {
            let n = rows(db, count, &[&principal]).await?;
            Ok((n >= total as i64).then_some(()))
        }
    })
    .await
    .with_context(|| format!("{} | {}", proxies[0].0.describe(), cp.describe()))?;

    // Exactly one row per call: none lost, none written twice.
    ensure!(rows(&db, count, &[&principal]).await? == total as i64, "more rows than calls");
    for proxy_id in ["p0", "p1"] {
        let n = rows(
            &db,
            "SELECT count(*) FROM audit_log WHERE principal = $1 AND proxy_id = $2 AND request_id = '1' \
             AND method = 'tools/call' AND target = 'echo' AND outcome = 'ok' AND status = 200 \
             AND server = 'audited' AND era = '2026-07-28'",
            &[&principal, &proxy_id],
        )
        .await?;
        ensure!(n == (LOAD_CALLS / 2) as i64, "{proxy_id}: {n} rows of load calls");
    }
    let own_rows = rows(
        &db,
        "SELECT count(DISTINCT request_id) FROM audit_log WHERE principal = $1 AND request_id LIKE '\"own-%' \
         AND outcome = 'ok' AND era = '2025-06-18'",
        &[&principal],
    )
    .await?;
    ensure!(own_rows == OWN_CALLS as i64, "{own_rows} distinct rows of {OWN_CALLS} own calls");
    for n in [0, OWN_CALLS / 2, OWN_CALLS - 1] {
        let id = format!("\"own-{n}\"");
        let proxy_id = ["p0", "p1"][(n % 2) as usize];
        let one = rows(
            &db,
            "SELECT count(*) FROM audit_log WHERE request_id = $1 AND proxy_id = $2",
            &[&id, &proxy_id],
        )
        .await?;
        ensure!(one == 1, "call {n}: {one} rows");
    }

    // The outages went through the spill, which is empty again.
    let mut spilled = 0;
    for (proxy, dir) in &proxies {
        let metrics = proxy.metrics().await?;
        spilled += metrics
            .lines()
            .find_map(|l| l.strip_prefix("mcpgw_proxy_audit_records_total{result=\"spilled\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        poll_until("the spill to empty", Duration::from_secs(30), || async {
            Ok((spill_files(dir) == 0).then_some(()))
        })
        .await?;
    }
    ensure!(spilled > 0, "no record was spilled: the outages did not reach the audit path");
    let _ = std::fs::remove_dir_all(&spill_root);
    Ok(())
}
