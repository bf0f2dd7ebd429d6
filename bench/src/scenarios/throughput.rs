//! a. Saturation throughput of `tools/call` (JSON answers, keep-alive, closed loop), proxied / direct and
//! nginx / direct; and e. CPU per request of the proxy against the upstream's, from `/proc/<pid>/stat`
//! over the same runs. Measured for 2026-07-28 stateless calls (the targets) and for calls inside legacy
//! sessions (sealed session token opened on every call; informational). Stateless calls also run through
//! the proxy with an API key and with a JWT, in the same passes as the anonymous ones: the cost of
//! authentication.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::{CpuProbe, Ctx, added, order};
use crate::http::Conn;
use crate::load::closed;
use crate::load::setup::setup;
use crate::orchestrate::stack::Via;
use crate::report::{Check, Section, fmt};
use crate::requests::Endpoint;
use crate::stats::median;

/// The target labels of proxied calls carrying the stack's API key and its JWT.
const KEYED: &str = "proxy+key";
const JWT: &str = "proxy+jwt";
const POLICY: &str = "proxy+policy";
/// Target of the full policy path's cost (API key + custom role + narrowed permissions + local limit).
const POLICY_COST_US: f64 = 5.0;
/// Most proxy CPU per request an API key may add to an anonymous call (issue's target).
const AUTH_COST_US: f64 = 3.0;
/// Anonymous stateless calls through the same proxy with `--audit off` (the baseline of the audit's cost).
const UNAUDITED: &str = "proxy-unaudited";
/// Most proxy CPU per request the audit may add (records made, queued, batched and shipped).
const AUDIT_COST_US: f64 = 2.0;
/// Anonymous stateless calls through the same proxy recording every trace for a collector that is down.
const TRACED: &str = "proxy-otlp-down";
/// Least throughput with traces recorded and the collector down, against the same proxy without traces.
const TRACED_MIN_RATIO: f64 = 0.95;
/// Anonymous stateless calls through a proxy of another build (`--base-proxy-bin`): a change's cost or
/// gain is this build against it, in the same passes.
const BASE: &str = "proxy-base";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stateless,
    Session,
}

pub struct Outcome {
    pub a: Section,
    pub e: Section,
    /// Median proxied saturation throughput of stateless calls (requests/s).
    pub proxied_rps: f64,
}

#[derive(Default, Clone, Copy)]
struct Figures {
    rps: f64,
    fixture_us: f64,
    proxy_us: f64,
    nginx_us: f64,
    /// The control plane's CPU over the run (it ingests the proxy's audit records).
    control_plane_us: f64,
}

async fn requests(ep: &Endpoint, kind: Kind, conns: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(conns);
    for _ in 0..conns {
        out.push(match kind {
            Kind::Stateless => ep.stateless_echo(),
            Kind::Session => {
                let mut conn = Conn::connect(ep.addr).await?;
                let session = setup(&mut conn, ep, &ep.initialize()).await.map_err(anyhow::Error::msg)?;
                ep.session_echo(&session)
            }
        });
    }
    Ok(out)
}

/// What one pass runs for `kind`: each endpoint under its own label, and for stateless calls the proxy
/// once more per credential (label, bearer token). Direct and nginx runs would ignore the header, so
/// they have no authenticated twin.
fn targets(
    endpoints: &[(Via, Endpoint)],
    kind: Kind,
    credentials: &[(&'static str, String)],
    siblings: &[(&'static str, std::net::SocketAddr)],
) -> Vec<(&'static str, Via, Endpoint)> {
    let mut out = Vec::new();
    for (via, ep) in endpoints {
        out.push((via.label(), *via, ep.clone()));
        if (*via, kind) == (Via::Proxy, Kind::Stateless) {
            for (label, credential) in credentials {
                out.push((*label, *via, ep.clone().with_bearer(credential)));
            }
            for &(label, addr) in siblings {
                out.push((label, *via, Endpoint { addr, ..ep.clone() }));
            }
        }
    }
    out
}

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let p = ctx.profile;
    let endpoints = ctx.stack.endpoints("bench");
    let mut a = Section::new(
        "a",
        "tools/call saturation throughput (closed loop, keep-alive, JSON answers)",
        &[
            "calls",
            "pass",
            "via",
            "req/s",
            "p50 µs",
            "p99 µs",
            "errors",
            "fixture CPU µs/req",
            "proxy CPU µs/req",
            "nginx CPU µs/req",
        ],
    );
    let mut e = Section::new("e", "CPU per request: proxy against the upstream (from /proc/<pid>/stat)", &[]);
    let mut proxied_rps = f64::NAN;
    let credentials: Vec<(&'static str, String)> =
        [(KEYED, &ctx.stack.api_key), (JWT, &ctx.stack.jwt), (POLICY, &ctx.stack.policy_key)]
            .into_iter()
            .filter_map(|(label, credential)| Some((label, credential.clone()?)))
            .collect();
    for kind in [Kind::Stateless, Kind::Session] {
        let label = if kind == Kind::Stateless { "stateless" } else { "session" };
        let unaudited = ctx.stack.unaudited.as_ref().map(|(_, addr)| *addr);
        let base = ctx.stack.base.as_ref().map(|(_, addr)| *addr);
        let traced = ctx.stack.traced.as_ref().map(|(_, addr)| *addr);
        let siblings: Vec<_> = [(UNAUDITED, unaudited), (TRACED, traced), (BASE, base)]
            .into_iter()
            .filter_map(|(l, a)| Some((l, a?)))
            .collect();
        let targets = targets(&endpoints, kind, &credentials, &siblings);
        let mut passes: Vec<BTreeMap<&'static str, Figures>> = Vec::new();
        for pass in 0..=p.pairs {
            let mut figures = BTreeMap::new();
            for (target, via, ep) in order(pass, &targets) {
                let reqs = requests(&ep, kind, p.connections).await?;
                let probe = CpuProbe::start(ctx.stack);
                let r = closed::run(ep.addr, reqs, p.saturation).await;
                let cpu: BTreeMap<_, _> =
                    probe.per_request(r.requests_total, ctx.ticks_per_sec).into_iter().collect();
                ctx.stack.check_alive()?;
                let cpu_of = |name: &str| cpu.get(name).copied().unwrap_or(f64::NAN);
                let f = Figures {
                    rps: r.rps,
                    fixture_us: cpu_of("fixture"),
                    proxy_us: match (via, target) {
                        (Via::Proxy, UNAUDITED) => cpu_of(UNAUDITED),
                        (Via::Proxy, TRACED) => cpu_of(TRACED),
                        (Via::Proxy, BASE) => cpu_of(BASE),
                        (Via::Proxy, _) => cpu_of("proxy"),
                        _ => f64::NAN,
                    },
                    control_plane_us: cpu_of("control-plane"),
                    nginx_us: if via == Via::Nginx { cpu_of("nginx") } else { f64::NAN },
                };
                let pass_label = if pass == 0 { "warm-up".to_owned() } else { pass.to_string() };
                a.rows.push(vec![
                    label.into(),
                    pass_label,
                    target.into(),
                    fmt(r.rps),
                    fmt(r.latency.p50_us),
                    fmt(r.latency.p99_us),
                    r.errors.to_string(),
                    fmt(f.fixture_us),
                    fmt(f.proxy_us),
                    fmt(f.nginx_us),
                ]);
                a.count_errors(
                    format!("{label} pass {pass} via {target}"),
                    r.errors,
                    r.first_error.as_deref(),
                );
                a.push_raw(json!({
                    "calls": label,
                    "pass": pass,
                    "via": via,
                    "target": target,
                    "cpu_us_per_request": cpu,
                    "result": r,
                }));
                if pass > 0 {
                    figures.insert(target, f);
                }
            }
            if pass > 0 {
                passes.push(figures);
            }
        }
        let ratio = |num: &str, den: &str| -> Vec<f64> {
            passes.iter().filter_map(|f| Some(f.get(num)?.rps / f.get(den)?.rps)).collect()
        };
        let per_pass = |via: &str, pick: fn(&Figures) -> f64| -> Vec<f64> {
            passes.iter().filter_map(|f| f.get(via).map(pick)).collect()
        };
        // CPU of the proxy against the upstream's, both over the proxied runs.
        let cpu_ratio = per_pass("proxy", |x| x.proxy_us / x.fixture_us);
        let nginx_cpu_ratio = per_pass("nginx", |x| x.nginx_us / x.fixture_us);
        if kind == Kind::Stateless {
            proxied_rps = median(&per_pass("proxy", |f| f.rps));
            let check = Check::over(
                "a",
                "proxied / direct throughput (2026-07-28 stateless)",
                &ratio("proxy", "direct"),
                "×",
            );
            let met = check.value >= 0.5;
            a.checks.push(check.target("≥ 0.50", met));
            a.checks.push(Check::over(
                "a",
                "nginx / direct throughput (stateless)",
                &ratio("nginx", "direct"),
                "×",
            ));
            a.checks.push(Check::over(
                "a",
                "direct throughput (stateless)",
                &per_pass("direct", |f| f.rps),
                "req/s",
            ));
            a.checks.push(Check::over(
                "a",
                "proxied throughput (stateless)",
                &per_pass("proxy", |f| f.rps),
                "req/s",
            ));
            e.checks.push(Check::over(
                "e",
                "proxy CPU per request (stateless)",
                &per_pass("proxy", |f| f.proxy_us),
                "µs",
            ));
            e.checks.push(Check::over(
                "e",
                "upstream CPU per request, proxied (stateless)",
                &per_pass("proxy", |f| f.fixture_us),
                "µs",
            ));
            e.checks.push(Check::over(
                "e",
                "upstream CPU per request, direct (stateless)",
                &per_pass("direct", |f| f.fixture_us),
                "µs",
            ));
            let check = Check::over("e", "proxy / upstream CPU per request (stateless)", &cpu_ratio, "×");
            let met = check.value <= 1.5;
            e.checks.push(check.target("≤ 1.5×", met));
            e.checks.push(Check::over(
                "e",
                "nginx CPU per request (stateless)",
                &per_pass("nginx", |f| f.nginx_us),
                "µs",
            ));
            e.checks.push(Check::over(
                "e",
                "nginx / upstream CPU per request (stateless)",
                &nginx_cpu_ratio,
                "×",
            ));
            if unaudited.is_some() {
                let cost: Vec<f64> = passes
                    .iter()
                    .filter_map(|f| Some(added(f.get("proxy")?.proxy_us, f.get(UNAUDITED)?.proxy_us)))
                    .collect();
                let check =
                    Check::over("e", "audit cost: proxy CPU µs/req, audit on − off (anonymous)", &cost, "µs");
                let met = check.value <= AUDIT_COST_US;
                e.checks.push(check.target("≤ +2 µs", met));
                let ingest: Vec<f64> = passes
                    .iter()
                    .filter_map(|f| {
                        Some(added(f.get("proxy")?.control_plane_us, f.get(UNAUDITED)?.control_plane_us))
                    })
                    .collect();
                e.checks.push(Check::over(
                    "e",
                    "audit ingest: control-plane CPU µs/req, audit on − off",
                    &ingest,
                    "µs",
                ));
            }
            if traced.is_some() {
                let check = Check::over(
                    "a",
                    "traced, collector down / untraced throughput (stateless)",
                    &ratio(TRACED, "proxy"),
                    "×",
                );
                let met = check.value >= TRACED_MIN_RATIO;
                a.checks.push(check.target("≥ 0.95", met));
                let cost: Vec<f64> = passes
                    .iter()
                    .filter_map(|f| Some(added(f.get(TRACED)?.proxy_us, f.get("proxy")?.proxy_us)))
                    .collect();
                e.checks.push(Check::over(
                    "e",
                    "trace cost: proxy CPU µs/req, every request traced (collector down) − untraced",
                    &cost,
                    "µs",
                ));
            }
            if base.is_some() {
                let diff = |pick: fn(&Figures) -> f64| -> Vec<f64> {
                    passes
                        .iter()
                        .filter_map(|f| Some(added(pick(f.get("proxy")?), pick(f.get(BASE)?))))
                        .collect()
                };
                e.checks.push(Check::over(
                    "e",
                    "this build − base build: proxy CPU µs/req (anonymous)",
                    &diff(|f| f.proxy_us),
                    "µs",
                ));
                e.checks.push(Check::over(
                    "e",
                    "this build − base build: upstream CPU µs/req behind it",
                    &diff(|f| f.fixture_us),
                    "µs",
                ));
                e.checks.push(Check::over(
                    "e",
                    "proxy CPU per request, base build (stateless)",
                    &per_pass(BASE, |f| f.proxy_us),
                    "µs",
                ));
                a.checks.push(Check::over(
                    "a",
                    "proxied throughput this build / base build (stateless)",
                    &ratio("proxy", BASE),
                    "×",
                ));
            }
            for (target, _) in &credentials {
                // (name in the figures, the cost figure, its target)
                let (name, cost_figure, target_text) = match *target {
                    KEYED => (
                        "API key",
                        "API-key auth cost: proxy CPU µs/req, keyed − anonymous",
                        Some(("≤ +3 µs", AUTH_COST_US)),
                    ),
                    POLICY => (
                        "API key + role + limit",
                        "full policy path cost: proxy CPU µs/req, key + role + permissions + limit − anonymous",
                        Some(("≤ +5 µs", POLICY_COST_US)),
                    ),
                    _ => ("JWT", "JWT auth cost: proxy CPU µs/req, JWT − anonymous", None),
                };
                a.checks.push(Check::over(
                    "a",
                    format!("proxied throughput, {name} (stateless)"),
                    &per_pass(target, |f| f.rps),
                    "req/s",
                ));
                e.checks.push(Check::over(
                    "e",
                    format!("proxy CPU per request, {name} (stateless)"),
                    &per_pass(target, |f| f.proxy_us),
                    "µs",
                ));
                let cost: Vec<f64> = passes
                    .iter()
                    .filter_map(|f| Some(added(f.get(target)?.proxy_us, f.get("proxy")?.proxy_us)))
                    .collect();
                let check = Check::over("e", cost_figure, &cost, "µs");
                e.checks.push(match target_text {
                    Some((text, limit)) => {
                        let met = check.value <= limit;
                        check.target(text, met)
                    }
                    None => check,
                });
            }
        } else {
            a.checks.push(Check::over(
                "a",
                "proxied / direct throughput (legacy session)",
                &ratio("proxy", "direct"),
                "×",
            ));
            a.checks.push(Check::over(
                "a",
                "nginx / direct throughput (legacy session)",
                &ratio("nginx", "direct"),
                "×",
            ));
            e.checks.push(Check::over(
                "e",
                "proxy CPU per request (legacy session)",
                &per_pass("proxy", |f| f.proxy_us),
                "µs",
            ));
            e.checks.push(Check::over(
                "e",
                "proxy / upstream CPU per request (legacy session)",
                &cpu_ratio,
                "×",
            ));
        }
    }
    a.notes.push(format!(
        "{} connections, {} s warm-up + {} s measured per run; ratios are medians over {} interleaved passes (pass 0 is a warm-up, not counted).",
        p.connections,
        p.saturation.warmup.as_secs_f64(),
        p.saturation.measure.as_secs_f64(),
        p.pairs
    ));
    if !credentials.is_empty() {
        a.notes.push(format!(
            "`{KEYED}` / `{JWT}` / `{POLICY}`: stateless calls through the proxy with `Authorization: Bearer <API key>` / `<JWT>` (EdDSA, of a trusted issuer the harness serves) / `<API key holding a custom role, narrowed by its own permissions>`, in the same passes as the anonymous `proxy` runs, interleaved with them. A local rate limit on every API key's calls to `bench` (10⁶/s, never reached) is checked for `{KEYED}` and `{POLICY}`."
        ));
    }
    if let Some(why) = &ctx.stack.jwt_skipped {
        a.notes.push(format!("No `{JWT}` runs: {why}."));
    }
    e.notes.push(
        "CPU is utime + stime of each process over the whole run (warm-up included) divided by the requests completed in it; the upstream figure is the fixture's during the proxied runs, so both serve the same requests."
            .to_owned(),
    );
    Ok(Outcome { a, e, proxied_rps })
}
