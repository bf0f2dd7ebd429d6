//! s. A stdio server through the gateway against the same server over Streamable HTTP: the fixture run as
//! a stdio server (`mcpgw-bench-fixture --stdio`, one process per session, started by the proxy) and as
//! the HTTP upstream `bench`, each called with legacy-session `tools/call echo` through the proxy
//! (closed loop, one session per connection, interleaved passes). Reports throughput, latency and the
//! proxy's CPU per call (the stdio processes' own CPU is not the proxy's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;

use super::{CpuProbe, Ctx, order};
use crate::http::Conn;
use crate::load::{closed, setup::setup};
use crate::report::{Check, Section, fmt};
use crate::requests::Endpoint;

const SERVER: &str = "bench-stdio";

/// One run's throughput (req/s), p50 latency (µs) and proxy CPU per request (µs).
type Figures = (f64, f64, f64);

/// Registers the fixture as a stdio server and waits until a session opens through the proxy.
async fn register(ctx: &mut Ctx<'_>) -> Result<()> {
    let Some(program) = ctx.stack.stdio_program.clone() else {
        bail!("this build's control plane or proxy runs no stdio servers (--stdio-programs)");
    };
    let body = json!({
        "name": SERVER,
        "transport_type": "stdio",
        "command": {"program": program, "args": ["--stdio"]},
        "description": "mcpgw-bench fixture over stdio",
        "health_check": {"enabled": false},
    });
    let (status, reply) = ctx.stack.rest("POST", "/api/v1/servers", &body).await?;
    if status != 201 && status != 409 {
        bail!("registering {SERVER}: HTTP {status}: {reply}");
    }
    let ep = Endpoint::new(ctx.stack.proxy_addr, format!("/mcp/{SERVER}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = Conn::connect(ctx.stack.proxy_addr).await?;
        match setup(&mut conn, &ep, &ep.initialize()).await {
            Ok(session) => {
                let _ = conn.request(&ep.delete(&session)).await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => bail!("no session through {SERVER} after 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One session per connection: each connection's `tools/call`, and the DELETEs that end them.
async fn sessions(ep: &Endpoint, count: usize) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    let (mut calls, mut deletes) = (Vec::new(), Vec::new());
    let mut conn = Conn::connect(ep.addr).await?;
    for _ in 0..count {
        let session = setup(&mut conn, ep, &ep.initialize()).await.map_err(anyhow::Error::msg)?;
        calls.push(ep.session_echo(&session));
        deletes.push(ep.delete(&session));
    }
    Ok((calls, deletes))
}

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    register(ctx).await?;
    let mut s = Section::new(
        "s",
        "stdio server through the gateway vs the same server over Streamable HTTP (legacy-session tools/call)",
        &["pass", "server", "requests", "req/s", "p50 µs", "p99 µs", "errors", "proxy CPU µs/req"],
    );
    let proxy = ctx.stack.proxy_addr;
    let targets: Vec<(&'static str, Endpoint)> = vec![
        ("streamable_http", Endpoint::new(proxy, "/mcp/bench")),
        ("stdio", Endpoint::new(proxy, format!("/mcp/{SERVER}"))),
    ];
    let mut passes: Vec<BTreeMap<&str, Figures>> = Vec::new();
    for pass in 0..=p.pairs {
        let mut figures = BTreeMap::new();
        for (via, ep) in order(pass, &targets) {
            let (calls, deletes) = sessions(&ep, p.connections).await?;
            let probe = CpuProbe::start(ctx.stack);
            let r = closed::run(proxy, calls, p.saturation).await;
            let proxy_us = probe.proxy_per_request(r.requests_total, ctx.ticks_per_sec);
            ctx.stack.check_alive()?;
            let mut conn = Conn::connect(proxy).await?;
            for delete in &deletes {
                let _ = conn.request(delete).await;
            }
            s.count_errors(format!("pass {pass} via {via}"), r.errors, r.first_error.as_deref());
            s.rows.push(vec![
                if pass == 0 { "warm-up".into() } else { pass.to_string() },
                via.into(),
                r.requests.to_string(),
                fmt(r.rps),
                fmt(r.latency.p50_us),
                fmt(r.latency.p99_us),
                r.errors.to_string(),
                fmt(proxy_us),
            ]);
            s.push_raw(json!({"pass": pass, "server": via, "proxy_cpu_us": proxy_us, "result": r}));
            figures.insert(via, (r.rps, r.latency.p50_us, proxy_us));
        }
        if pass > 0 {
            passes.push(figures);
        }
    }
    let series = |pick: fn(&Figures, &Figures) -> f64| -> Vec<f64> {
        passes.iter().filter_map(|f| Some(pick(f.get("stdio")?, f.get("streamable_http")?))).collect()
    };
    s.checks.push(Check::over("s", "throughput stdio / Streamable HTTP", &series(|s, h| s.0 / h.0), ""));
    s.checks.push(Check::over("s", "p50 latency stdio − Streamable HTTP", &series(|s, h| s.1 - h.1), "µs"));
    s.checks.push(Check::over(
        "s",
        "proxy CPU per call stdio − Streamable HTTP",
        &series(|s, h| s.2 - h.2),
        "µs",
    ));
    s.notes.push(format!(
        "{} connections, one legacy session each (a stdio process each for `{SERVER}`), closed loop; the \
         fixture answers `echo` with the same ~1 KiB over stdio and over HTTP.",
        p.connections
    ));
    Ok(s)
}
