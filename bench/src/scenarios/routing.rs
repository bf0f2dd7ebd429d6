//! g. Routing change → applied on the proxy: a REST PATCH of a server's balancing policy on the control
//! plane, timed until the proxy's `/routes` serves the new policy under a newer table version.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::Ctx;
use crate::http::Conn;
use crate::load::ns;
use crate::orchestrate::stack::rest_on;
use crate::report::{Check, Section, fmt};
use crate::requests::Endpoint;
use crate::stats::Dist;

/// Longest wait for one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy's table version and the policy it serves for `server`.
async fn served(conn: &mut Conn, admin: std::net::SocketAddr, server: &str) -> Result<(u64, String)> {
    let resp = conn.request(&Endpoint::get(admin, "/routes")).await?;
    let routes: Value = serde_json::from_slice(&resp.body)?;
    let version = routes["version"].as_u64().context("/routes without a version")?;
    let policy = routes["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == server)
        .and_then(|s| s["load_balancing"].as_str())
        .unwrap_or_default()
        .to_owned();
    Ok((version, policy))
}

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    let stack = &*ctx.stack;
    let mut s = Section::new(
        "g",
        "routing change → applied on the proxy (REST PATCH → proxy /routes)",
        &["changes", "REST p50 ms", "applied p50 ms", "applied p99 ms", "applied max ms", "timeouts"],
    );
    let id = stack.id("bench-g").context("bench-g is not registered")?.to_owned();
    let mut api = Conn::connect(stack.api).await?;
    let mut admin = Conn::connect(stack.admin).await?;
    let mut applied = Vec::with_capacity(p.routing_changes);
    let mut rest = Vec::with_capacity(p.routing_changes);
    let mut timeouts = 0;
    for i in 0..p.routing_changes {
        let policy = if i % 2 == 0 { "random" } else { "round_robin" };
        let (before, _) = served(&mut admin, stack.admin, "bench-g").await?;
        let t0 = Instant::now();
        let (status, reply) = rest_on(
            &mut api,
            stack.api,
            &stack.token,
            "PATCH",
            &format!("/api/v1/servers/{id}"),
            &json!({"load_balancing": policy}),
        )
        .await?;
        let t_rest = Instant::now();
        if status != 200 {
            bail!("PATCH bench-g: HTTP {status}: {reply}");
        }
        loop {
            let (version, served_policy) = served(&mut admin, stack.admin, "bench-g").await?;
            if version > before && served_policy == policy {
                applied.push(ns(t0.elapsed()));
                rest.push(ns(t_rest - t0));
                break;
            }
            if t0.elapsed() > CHANGE_TIMEOUT {
                timeouts += 1;
                break;
            }
        }
    }
    let applied = Dist::from_ns(&mut applied);
    let rest = Dist::from_ns(&mut rest);
    s.rows.push(vec![
        applied.n.to_string(),
        fmt(rest.p50_us / 1000.0),
        fmt(applied.p50_us / 1000.0),
        fmt(applied.p99_us / 1000.0),
        fmt(applied.max_us / 1000.0),
        timeouts.to_string(),
    ]);
    s.push_raw(json!({"applied": applied, "rest": rest, "timeouts": timeouts}));
    s.checks.push(Check::new(
        "g",
        format!("change → applied p50 ({} changes)", applied.n),
        applied.p50_us / 1000.0,
        "ms",
    ));
    let p99 = applied.p99_us / 1000.0;
    s.checks.push(
        Check::new("g", "change → applied p99", p99, "ms").target("≤ 100 ms", p99 <= 100.0 && timeouts == 0),
    );
    s.notes.push(
        "Each change flips bench-g between `random` and `round_robin` with PATCH /api/v1/servers/{id} on one keep-alive connection; the proxy's admin /routes is polled back to back until it serves the new policy under a newer version. REST = until the PATCH answer."
            .to_owned(),
    );
    Ok(s)
}
