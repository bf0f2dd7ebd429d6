//! d. Legacy session setup (`initialize` + `notifications/initialized`) through the proxy: the latency it
//! adds (the proxy seals the upstream's session id into a token, then opens it on the notification).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::{Ctx, order};
use crate::load::setup;
use crate::report::{Check, Section, fmt};
use crate::stats::Dist;

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    let endpoints = ctx.stack.endpoints("bench");
    let mut s = Section::new(
        "d",
        "legacy session setup (initialize + notifications/initialized, one connection, sequential)",
        &["pass", "via", "setups", "p50 µs", "p90 µs", "p99 µs", "errors"],
    );
    let mut passes: Vec<BTreeMap<&'static str, Dist>> = Vec::new();
    for pass in 0..=p.pairs {
        let mut figures = BTreeMap::new();
        for (via, ep) in order(pass, &endpoints) {
            let r = setup::run(&ep, p.setup).await;
            ctx.stack.check_alive()?;
            s.rows.push(vec![
                if pass == 0 { "warm-up".into() } else { pass.to_string() },
                via.label().into(),
                r.requests.to_string(),
                fmt(r.latency.p50_us),
                fmt(r.latency.p90_us),
                fmt(r.latency.p99_us),
                r.errors.to_string(),
            ]);
            s.count_errors(format!("pass {pass} via {}", via.label()), r.errors, r.first_error.as_deref());
            s.push_raw(json!({"pass": pass, "via": via, "result": r}));
            if pass > 0 {
                figures.insert(via.label(), r.latency);
            }
        }
        if pass > 0 {
            passes.push(figures);
        }
    }
    let added = |via: &str, pick: fn(&Dist) -> f64| -> Vec<f64> {
        passes.iter().filter_map(|f| Some(pick(f.get(via)?) - pick(f.get("direct")?))).collect()
    };
    let check = Check::over("d", "added session setup latency (p50)", &added("proxy", |d| d.p50_us), "ms")
        .scaled(0.001);
    let met = check.value <= 0.2;
    s.checks.push(check.target("≤ 0.2 ms", met));
    s.checks.push(
        Check::over("d", "added session setup latency (p99)", &added("proxy", |d| d.p99_us), "ms")
            .scaled(0.001),
    );
    s.checks.push(
        Check::over("d", "nginx added session setup latency (p50)", &added("nginx", |d| d.p50_us), "ms")
            .scaled(0.001),
    );
    s.notes.push("Each session is deleted after it is timed (DELETE, not timed).".to_owned());
    Ok(s)
}
