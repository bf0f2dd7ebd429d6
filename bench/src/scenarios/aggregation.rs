//! m. Aggregation on `/mcp`: the merged `tools/list` over 50 registered servers of 20 tools each, answered
//! by the proxy from the catalog in its routing table (latency, one connection, sequential; the fixture
//! counts the `tools/list` requests it gets, which must not move), and the proxy CPU a `tools/call`
//! costs through `/mcp` (renamed back and forwarded) against `/mcp/bench`, in the same passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{CpuProbe, Ctx, order};
use crate::http::Conn;
use crate::load::closed;
use crate::report::{Check, Section, fmt};
use crate::requests::Endpoint;

/// Servers registered for the merged list, and the tools each lists.
const SERVERS: usize = 50;
const TOOLS: usize = 20;
/// Target: p99 of the merged list through the proxy.
const LIST_P99_MS: f64 = 1.0;
/// Target: proxy CPU a call through `/mcp` may add to the same call through `/mcp/{server}`.
const CALL_COST_US: f64 = 3.0;

/// Registers `agg-00` … `agg-49` (each the fixture's `/mcp?tools=20`) and waits until `/mcp` lists all
/// their tools.
async fn register(ctx: &mut Ctx<'_>) -> Result<()> {
    let fixture = ctx.stack.fixture_addr;
    for i in 0..SERVERS {
        let name = format!("agg-{i:02}");
        let body = json!({
            "name": name,
            "endpoint_url": format!("http://{fixture}/mcp?tools={TOOLS}&server={i}"),
            "transport_type": "streamable_http",
            "description": "mcpgw-bench aggregation fixture",
            "health_check": {"enabled": false},
        });
        let (status, reply) = ctx.stack.rest("POST", "/api/v1/servers", &body).await?;
        if status != 201 && status != 409 {
            bail!("registering {name}: HTTP {status}: {reply}");
        }
    }
    let list = Endpoint::new(ctx.stack.proxy_addr, "/mcp").stateless_list();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = Conn::connect(ctx.stack.proxy_addr).await?;
    loop {
        let resp = conn.request(&list).await?;
        let doc: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        let listed = doc["result"]["tools"].as_array().map_or(0, |t| {
            t.iter().filter(|t| t["name"].as_str().is_some_and(|n| n.starts_with("agg-"))).count()
        });
        // The first page holds 1,000 names, sorted: agg-* come first.
        if listed >= (SERVERS * TOOLS).min(1000) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("/mcp lists {listed} of the {} aggregated tools after 60 s", SERVERS * TOOLS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `tools/list` requests the fixture has answered.
async fn fixture_lists(ctx: &Ctx<'_>) -> Result<u64> {
    let mut conn = Conn::connect(ctx.stack.fixture_addr).await?;
    let resp = conn.request(&Endpoint::get(ctx.stack.fixture_addr, "/stats")).await?;
    let doc: Value = serde_json::from_slice(&resp.body).context("fixture /stats")?;
    doc["tools_list"].as_u64().context("fixture /stats without tools_list")
}

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    register(ctx).await?;
    let mut s = Section::new(
        "m",
        "aggregation on /mcp: merged tools/list (50 servers × 20 tools) and tools/call through /mcp",
        &["what", "pass", "via", "requests", "req/s", "p50 µs", "p99 µs", "errors", "proxy CPU µs/req"],
    );
    let proxy = ctx.stack.proxy_addr;
    let list = Endpoint::new(proxy, "/mcp").stateless_list();
    let targets: Vec<(&'static str, Vec<u8>)> = vec![
        ("/mcp/bench", Endpoint::new(proxy, "/mcp/bench").stateless_echo()),
        ("/mcp", Endpoint::new(proxy, "/mcp").stateless_call("bench_echo", r#"{"message":"hello"}"#)),
    ];
    let mut list_p99 = Vec::new();
    let mut list_p50 = Vec::new();
    let mut costs = Vec::new();
    let lists_before = fixture_lists(ctx).await?;
    for pass in 0..=p.pairs {
        let label = if pass == 0 { "warm-up".to_owned() } else { pass.to_string() };
        let r = closed::run(proxy, vec![list.clone()], p.setup).await;
        ctx.stack.check_alive()?;
        s.count_errors(format!("list pass {pass}"), r.errors, r.first_error.as_deref());
        s.rows.push(vec![
            "tools/list".into(),
            label.clone(),
            "/mcp".into(),
            r.requests.to_string(),
            fmt(r.rps),
            fmt(r.latency.p50_us),
            fmt(r.latency.p99_us),
            r.errors.to_string(),
            String::new(),
        ]);
        s.push_raw(json!({"what": "tools/list", "pass": pass, "result": r}));
        if pass > 0 {
            list_p99.push(r.latency.p99_us / 1000.0);
            list_p50.push(r.latency.p50_us / 1000.0);
        }
        let mut cpu: BTreeMap<&str, f64> = BTreeMap::new();
        for (via, request) in order(pass, &targets) {
            let probe = CpuProbe::start(ctx.stack);
            let r = closed::run(proxy, vec![request; p.connections], p.saturation).await;
            let proxy_us = probe.proxy_per_request(r.requests_total, ctx.ticks_per_sec);
            ctx.stack.check_alive()?;
            s.count_errors(format!("call pass {pass} via {via}"), r.errors, r.first_error.as_deref());
            s.rows.push(vec![
                "tools/call".into(),
                label.clone(),
                via.into(),
                r.requests.to_string(),
                fmt(r.rps),
                fmt(r.latency.p50_us),
                fmt(r.latency.p99_us),
                r.errors.to_string(),
                fmt(proxy_us),
            ]);
            s.push_raw(json!({"what": "tools/call", "pass": pass, "via": via, "proxy_cpu_us": proxy_us, "result": r}));
            cpu.insert(via, proxy_us);
        }
        if pass > 0 {
            costs.push(cpu["/mcp"] - cpu["/mcp/bench"]);
        }
    }
    let upstream_lists = fixture_lists(ctx).await? - lists_before;
    let check = Check::over("m", "merged tools/list through the proxy, p99", &list_p99, "ms");
    let met = check.value <= LIST_P99_MS;
    s.checks.push(check.target("≤ 1 ms", met));
    s.checks.push(Check::over("m", "merged tools/list through the proxy, p50", &list_p50, "ms"));
    s.checks.push(
        Check::new("m", "tools/list requests the upstream got meanwhile", upstream_lists as f64, "")
            .target("0", upstream_lists == 0),
    );
    let check = Check::over("m", "proxy CPU of tools/call via /mcp − via /mcp/bench", &costs, "µs");
    let met = check.value <= CALL_COST_US;
    s.checks.push(check.target("≤ +3 µs", met));
    s.notes.push(format!(
        "{SERVERS} servers of {TOOLS} tools each (the fixture's /mcp?tools={TOOLS}) plus the other benchmark \
         servers and the gateway's own tools: the first page holds 1,000 of them (~{} KiB). Lists: one \
         connection, sequential, 2026-07-28, anonymous. Calls: {} connections, closed loop, `bench_echo` on /mcp \
         against `echo` on /mcp/bench.",
        SERVERS * TOOLS * 200 / 1024,
        p.connections
    ));
    Ok(s)
}
