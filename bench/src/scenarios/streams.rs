//! f. Idle SSE streams through the proxy: resident memory per stream (the growth of the proxy's VmRSS
//! over its level before the streams, divided by the streams held) and the most streams held, rising
//! from 1k to 10k. Each stream costs the proxy two descriptors (client and upstream), so the levels stop
//! at what the open-file limit allows.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::http::Conn;
use crate::load::setup::setup;
use crate::load::streams;
use crate::orchestrate::stack::{Via, proxy_gauge};
use crate::procfs;
use crate::report::{Check, Section, fmt};

/// Descriptors kept free for everything else a process opens.
const SPARE_FILES: u64 = 128;
/// Streams opened at once.
const OPEN_CONCURRENCY: usize = 256;
/// The goal for the most streams held.
const GOAL: usize = 10_000;
/// The proxy's RSS after the streams closed, against before: the target.
const RSS_BACK: f64 = 1.10;
/// Longest wait for the RSS to come back after the streams closed, in settle times (15 s in a full run).
const RSS_WAIT_SETTLES: u32 = 15;

pub async fn run(ctx: &mut Ctx<'_>, max_files: u64) -> Result<Section> {
    let p = ctx.profile;
    let mut s = Section::new(
        "f",
        "idle SSE streams through the proxy (legacy GET streams of one session)",
        &[
            "streams asked",
            "held",
            "proxy RSS MiB",
            "proxy KiB/stream",
            "fixture KiB/stream",
            "open-streams gauge",
        ],
    );
    let Some((_, ep)) = ctx.stack.endpoints("bench").into_iter().find(|(v, _)| *v == Via::Proxy) else {
        return Ok(s);
    };
    let cap = usize::try_from(max_files.saturating_sub(SPARE_FILES) / 2).unwrap_or(usize::MAX);
    let mut levels: Vec<usize> = p.stream_levels.iter().copied().filter(|l| *l <= cap).collect();
    if p.stream_levels.iter().any(|l| *l > cap) && levels.last() != Some(&cap) {
        levels.push(cap);
        s.notes.push(format!(
            "The open-file limit ({max_files}) allows {cap} streams through the proxy (two descriptors each); the levels above it are replaced by {cap}."
        ));
    }
    let mut conn = Conn::connect(ep.addr).await?;
    let session = setup(&mut conn, &ep, &ep.initialize()).await.map_err(anyhow::Error::msg)?;
    drop(conn);
    tokio::time::sleep(p.stream_settle).await;
    let (proxy_pid, fixture_pid) = (ctx.stack.proxy.pid, ctx.stack.fixture.pid);
    let proxy_base = procfs::rss_kib(proxy_pid)?;
    let fixture_base = procfs::rss_kib(fixture_pid)?;
    let mut held: Vec<Conn> = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for level in levels {
        let (new, errors) =
            streams::open(&ep, &session, level.saturating_sub(held.len()), OPEN_CONCURRENCY).await;
        held.extend(new);
        tokio::time::sleep(p.stream_settle).await;
        ctx.stack.check_alive()?;
        let proxy_rss = procfs::rss_kib(proxy_pid)?;
        let per_stream = (proxy_rss as f64 - proxy_base as f64) / held.len().max(1) as f64;
        let fixture_per =
            (procfs::rss_kib(fixture_pid)? as f64 - fixture_base as f64) / held.len().max(1) as f64;
        let gauge = proxy_gauge(ctx.stack.admin, "mcpgw_proxy_open_streams").await.unwrap_or(f64::NAN);
        s.rows.push(vec![
            level.to_string(),
            held.len().to_string(),
            fmt(proxy_rss as f64 / 1024.0),
            fmt(per_stream),
            fmt(fixture_per),
            fmt(gauge),
        ]);
        s.push_raw(json!({"asked": level, "held": held.len(), "proxy_rss_kib": proxy_rss, "proxy_base_kib": proxy_base,
            "proxy_kib_per_stream": per_stream, "fixture_kib_per_stream": fixture_per, "open_streams_gauge": gauge,
            "errors": errors.count, "first_error": errors.first}));
        if errors.count > 0 {
            s.count_errors(format!("{level} streams via proxy"), errors.count, errors.first.as_deref());
            break;
        }
        best = Some((held.len(), per_stream));
    }
    let opened = held.len();
    drop(held);
    // The proxy gives freed memory back a few seconds after a wave of connections ends (its housekeeping
    // runs every 5 s): RSS is read every 250 ms until it is back within 10 % of before, for at most 15 s
    // (1.5 s in the smoke run).
    let closed_at = std::time::Instant::now();
    tokio::time::sleep(p.stream_settle.max(Duration::from_millis(500))).await;
    let back = (proxy_base as f64 * RSS_BACK) as u64;
    let mut after = procfs::rss_kib(proxy_pid).unwrap_or(0);
    while after > back && closed_at.elapsed() < p.stream_settle * RSS_WAIT_SETTLES {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = procfs::rss_kib(proxy_pid).unwrap_or(0);
    }
    let waited = closed_at.elapsed();
    s.notes.push(format!(
        "Proxy RSS {} MiB before the streams, {} MiB {:.1} s after the {opened} streams closed. Memory per stream = (RSS − RSS before) / streams held.",
        fmt(proxy_base as f64 / 1024.0),
        fmt(after as f64 / 1024.0),
        waited.as_secs_f64()
    ));
    let ratio = after as f64 / proxy_base.max(1) as f64;
    s.checks.push(
        Check::new("f", "proxy RSS after the streams closed / before", ratio, "×")
            .target("≤ 1.10 within 15 s", ratio <= RSS_BACK),
    );
    let (most, per_stream) = best.unwrap_or((0, f64::NAN));
    s.checks.push(
        Check::new("f", format!("proxy memory per idle SSE stream (at {most})"), per_stream, "KiB")
            .target("≤ 16 KiB", per_stream <= 16.0),
    );
    s.checks.push(
        Check::new("f", "most concurrent streams held", most as f64, "streams").target("≥ 10k", most >= GOAL),
    );
    Ok(s)
}
