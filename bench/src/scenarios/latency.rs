//! b. Latency at a fixed rate (open loop, ~30% of the proxied saturation throughput, latency from each
//! request's scheduled time): the p50 and p99 the proxy adds to a direct call, and nginx's for reference.
//! The proxy's sibling without audit (`--audit off`, when the build has the flag) runs in the same passes,
//! so that the audit pipeline's share of the tail (its shipping, and the control plane and PostgreSQL
//! taking the records on the machine's other core) is told apart from the request path's. Each run also
//! reports the server core's state ([`super::ServerCoreProbe`]): how long the servers waited for it, and how
//! much of it went to other work (the database inserting audit records lands there when the load core is
//! busy).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::{Ctx, ServerCoreProbe, order};
use crate::load::open;
use crate::report::{Check, Section, fmt};
use crate::stats::Dist;

/// The proxy's sibling with `--audit off`.
const UNAUDITED: &str = "proxy-unaudited";

pub async fn run(ctx: &mut Ctx<'_>, proxied_rps: f64) -> Result<Section> {
    let p = ctx.profile;
    let rate = (proxied_rps * p.rate_share).max(50.0);
    let mut targets: Vec<(&'static str, crate::requests::Endpoint)> =
        ctx.stack.endpoints("bench").into_iter().map(|(via, ep)| (via.label(), ep)).collect();
    if let Some((_, addr)) = ctx.stack.unaudited.as_ref() {
        let proxied = targets.iter().find(|(label, _)| *label == "proxy").map(|(_, ep)| ep.clone());
        if let Some(ep) = proxied {
            targets.push((UNAUDITED, crate::requests::Endpoint { addr: *addr, ..ep }));
        }
    }
    let mut s = Section::new(
        "b",
        "latency at a fixed rate (open loop, 2026-07-28 tools/call)",
        &[
            "pass",
            "via",
            "rate req/s",
            "done req/s",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs",
            "errors",
            "server wait ms",
            "server core other ms",
        ],
    );
    let mut passes: Vec<BTreeMap<&'static str, Dist>> = Vec::new();
    // Per target, per measured pass: the server core's figures (see `ServerCoreProbe`).
    let mut core: BTreeMap<&'static str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for pass in 0..=p.pairs {
        let mut figures = BTreeMap::new();
        for (via, ep) in order(pass, &targets) {
            let probe = ServerCoreProbe::start(ctx.stack);
            let r = open::run(ep.addr, ep.stateless_echo(), rate, p.open_connections, p.fixed_rate).await;
            let server = probe.finish(ctx.ticks_per_sec);
            ctx.stack.check_alive()?;
            let d = r.latency;
            s.rows.push(vec![
                if pass == 0 { "warm-up".into() } else { pass.to_string() },
                via.into(),
                fmt(rate),
                fmt(r.rps),
                fmt(d.p50_us),
                fmt(d.p90_us),
                fmt(d.p99_us),
                fmt(d.max_us),
                r.errors.to_string(),
                fmt(server.wait_ms),
                fmt(server.other_ms),
            ]);
            s.count_errors(format!("pass {pass} via {via}"), r.errors, r.first_error.as_deref());
            s.push_raw(json!({"pass": pass, "via": via, "rate": rate, "result": r}));
            if pass > 0 {
                figures.insert(via, d);
                let (wait, other) = core.entry(via).or_default();
                wait.push(server.wait_ms);
                other.push(server.other_ms);
            }
        }
        if pass > 0 {
            passes.push(figures);
        }
    }
    let added = |via: &str, pick: fn(&Dist) -> f64| -> Vec<f64> {
        passes.iter().filter_map(|f| Some(pick(f.get(via)?) - pick(f.get("direct")?))).collect()
    };
    let check =
        Check::over("b", format!("added p50 at {} req/s", fmt(rate)), &added("proxy", |d| d.p50_us), "µs");
    let met = check.value <= 50.0;
    s.checks.push(check.target("≤ +50 µs", met));
    let check =
        Check::over("b", format!("added p99 at {} req/s", fmt(rate)), &added("proxy", |d| d.p99_us), "µs");
    let met = check.value <= 150.0;
    s.checks.push(check.target("≤ +150 µs", met));
    if passes.iter().any(|f| f.contains_key(UNAUDITED)) {
        s.checks.push(Check::over("b", "added p99 without audit", &added(UNAUDITED, |d| d.p99_us), "µs"));
    }
    s.checks.push(Check::over("b", "nginx added p50", &added("nginx", |d| d.p50_us), "µs"));
    s.checks.push(Check::over("b", "nginx added p99", &added("nginx", |d| d.p99_us), "µs"));
    for (via, (wait, other)) in &core {
        s.checks.push(Check::over("b", format!("server processes' run-queue wait via {via}"), wait, "ms"));
        if other.iter().all(|v| v.is_finite()) {
            s.checks.push(Check::over("b", format!("server core's other work via {via}"), other, "ms"));
        }
    }
    let direct: Vec<f64> = passes.iter().filter_map(|f| Some(f.get("direct")?.p50_us)).collect();
    s.checks.push(Check::over("b", "direct p50", &direct, "µs"));
    s.notes.push(format!(
        "Rate = {:.0}% of the proxied saturation throughput of scenario a, the same for every target; {} connections; {} s warm-up + {} s measured; added = median over {} passes of (target − direct) in the same pass.",
        p.rate_share * 100.0,
        p.open_connections,
        p.fixed_rate.warmup.as_secs_f64(),
        p.fixed_rate.measure.as_secs_f64(),
        p.pairs
    ));
    s.notes.push(
        "Server wait = time the fixture, proxies and nginx (pinned to the server core) were runnable but not running during the run (warm-up included; /proc/<pid>/task/*/schedstat); server core other = the core's busy time not theirs (/proc/stat less their CPU time): the database's inserts of the audit records, other services, the kernel. A proxied run's wait includes the proxy and the fixture waiting for each other on their one core, so compare proxied runs with each other: more wait with no more other work is the core withheld (a virtual CPU not woken)."
            .into(),
    );
    Ok(s)
}
