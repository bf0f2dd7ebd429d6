//! c. SSE through the proxy: the time to the first event it adds, and the delay it adds to every event
//! (each event's transit from the fixture producing it to the client receiving it).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::{Ctx, order};
use crate::load::sse_timing::{self, SseResult};
use crate::report::{Check, Section, fmt};

pub async fn run(ctx: &mut Ctx<'_>) -> Result<Section> {
    let p = ctx.profile;
    let endpoints = ctx.stack.endpoints("bench-sse");
    let args = format!(r#"{{"count":{},"interval_ms":{}}}"#, p.sse_events, p.sse_interval_ms);
    let mut s = Section::new(
        "c",
        "SSE: time to first event and per-event delay (`stream` tool on the SSE endpoint)",
        &[
            "pass",
            "via",
            "streams",
            "events",
            "first event p50 µs",
            "first event p99 µs",
            "event transit p50 µs",
            "event transit p99 µs",
            "errors",
        ],
    );
    let mut passes: Vec<BTreeMap<&'static str, SseResult>> = Vec::new();
    for pass in 0..=p.pairs {
        let mut figures = BTreeMap::new();
        for (via, ep) in order(pass, &endpoints) {
            let r =
                sse_timing::run(ep.addr, ep.stateless_call("stream", &args), p.sse_connections, p.sse).await;
            ctx.stack.check_alive()?;
            s.rows.push(vec![
                if pass == 0 { "warm-up".into() } else { pass.to_string() },
                via.label().into(),
                r.streams.to_string(),
                r.events.to_string(),
                fmt(r.first_event.p50_us),
                fmt(r.first_event.p99_us),
                fmt(r.transit.p50_us),
                fmt(r.transit.p99_us),
                r.errors.to_string(),
            ]);
            s.count_errors(format!("pass {pass} via {}", via.label()), r.errors, r.first_error.as_deref());
            s.push_raw(json!({"pass": pass, "via": via, "result": r}));
            if pass > 0 {
                figures.insert(via.label(), r);
            }
        }
        if pass > 0 {
            passes.push(figures);
        }
    }
    let added = |via: &str, pick: fn(&SseResult) -> f64| -> Vec<f64> {
        passes.iter().filter_map(|f| Some(pick(f.get(via)?) - pick(f.get("direct")?))).collect()
    };
    let check =
        Check::over("c", "added time to first event (p50)", &added("proxy", |r| r.first_event.p50_us), "ms")
            .scaled(0.001);
    let met = check.value <= 0.2;
    s.checks.push(check.target("≤ 0.2 ms", met));
    // "≈ 0": within 50 µs, the scale of one scheduling hop on this machine.
    let check = Check::over("c", "added delay per event (p50)", &added("proxy", |r| r.transit.p50_us), "µs");
    let met = check.value <= 50.0;
    s.checks.push(check.target("≈ 0 (≤ 50 µs)", met));
    s.checks.push(Check::over(
        "c",
        "added delay per event (p99)",
        &added("proxy", |r| r.transit.p99_us),
        "µs",
    ));
    s.checks.push(
        Check::over(
            "c",
            "nginx added time to first event (p50)",
            &added("nginx", |r| r.first_event.p50_us),
            "ms",
        )
        .scaled(0.001),
    );
    s.checks.push(Check::over(
        "c",
        "nginx added delay per event (p50)",
        &added("nginx", |r| r.transit.p50_us),
        "µs",
    ));
    s.notes.push(format!(
        "Each call streams {} progress events {} ms apart, then its result; {} connections back to back; transit = receive time − the fixture's wall-clock stamp in the event (one clock, one machine).",
        p.sse_events, p.sse_interval_ms, p.sse_connections
    ));
    Ok(s)
}
