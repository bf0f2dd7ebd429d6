//! The orchestrator: starts the system under test, runs the selected scenarios in order, always stops
//! what it started, and writes `report.json` and `report.md` (also when a scenario failed or had errors;
//! the caller fails the run on `Report::errors`).

pub mod issuer;
pub mod nginx;
pub mod procs;
pub mod stack;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::load::closed;
use crate::procfs;
use crate::report::{Load, Report, Section};
use crate::scenarios::{self, Ctx, Profile};
use crate::stats::median;
use stack::{Bins, Pins, Stack, Via};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub smoke: bool,
    pub profile: Profile,
    /// Scenario letters to run (`abcdefgt`).
    pub scenarios: String,
    pub out: PathBuf,
    pub bins: Bins,
    pub database_url: String,
    pub pins: Pins,
    pub commit: Option<String>,
    pub command: String,
}

fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

/// Two runs on one machine would measure each other: runs take turns on this lock.
const LOCK: &str = "/tmp/mcpgw-bench.lock";

fn take_turn() -> Result<std::fs::File> {
    let file = match std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK) {
        Ok(file) => file,
        // Created by another user: a read-only descriptor locks as well.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => std::fs::File::open(LOCK)?,
        Err(e) => return Err(e.into()),
    };
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    eprintln!("mcpgw-bench: another benchmark run holds {LOCK}; waiting for it to finish");
    let waited = Instant::now();
    file.lock()?;
    eprintln!("mcpgw-bench: waited {:.0} s", waited.elapsed().as_secs_f64());
    Ok(file)
}

pub async fn run(opts: Options) -> Result<Report> {
    let _turn = take_turn().with_context(|| format!("locking {LOCK}"))?;
    std::fs::create_dir_all(opts.out.join("logs"))
        .with_context(|| format!("creating {}", opts.out.display()))?;
    // nginx resolves relative paths against its prefix: every path handed to a child is absolute.
    let out = std::fs::canonicalize(&opts.out)?;
    let run_dir = out.join("logs");
    let _ = std::fs::remove_file(run_dir.join("pids"));
    let started = Instant::now();
    let started_unix =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let machine = procfs::machine();
    let max_files = procfs::nofile_limit().map_or(1024, |(soft, _)| soft);
    let before = procfs::loadavg1();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let samples = samples.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(mut s) = samples.lock() {
                    s.push((procfs::loadavg1(), procfs::cpu_pressure10()));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let pinning = match (opts.pins.load, opts.pins.server) {
        (Some(l), Some(s)) => format!(
            "load generator (this process, CPUs {}) and control plane on CPU {l}; fixture, proxy (--threads 1) and nginx on CPU {s}",
            cpus_allowed()
        ),
        _ => "none".to_owned(),
    };
    let close_after = opts.scenarios.contains('t').then_some(opts.profile.transparency_close_after);
    let mut stack =
        Stack::start(&opts.bins, opts.pins, &run_dir, &opts.database_url, max_files, close_after).await?;
    let mut sections = Vec::new();
    let outcome = scenarios(&opts, &mut stack, max_files, &mut sections).await;
    stack.stop().await;
    sampler.abort();
    let sampled: Vec<(f64, f64)> = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let during: Vec<f64> = sampled.iter().map(|(l, _)| *l).collect();
    let pressure: Vec<f64> = sampled.iter().map(|(_, p)| *p).collect();
    let min = during.iter().copied().fold(f64::INFINITY, f64::min);
    let max = during.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let report = Report {
        mode: if opts.smoke { "smoke" } else { "full" },
        started_unix,
        seconds: started.elapsed().as_secs_f64(),
        commit: opts.commit.clone(),
        command: opts.command.clone(),
        machine,
        load: Load {
            before,
            during_min: min,
            during_median: median(&during),
            during_max: max,
            after: procfs::loadavg1(),
            cpu_pressure_median: median(&pressure),
            cpu_pressure_max: pressure.iter().copied().fold(f64::NAN, f64::max),
        },
        pinning,
        settings: serde_json::to_value(&opts.profile)?,
        sections,
    };
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(out.join("report.md"), report.markdown())?;
    outcome.map(|()| report)
}

async fn scenarios(
    opts: &Options,
    stack: &mut Stack,
    max_files: u64,
    sections: &mut Vec<Section>,
) -> Result<()> {
    let has = |c: char| opts.scenarios.contains(c);
    let mut ctx = Ctx { stack, profile: &opts.profile, ticks_per_sec: procfs::clock_ticks_per_sec() };
    let mut proxied_rps = f64::NAN;
    if has('a') || has('e') {
        eprintln!("mcpgw-bench: a/e. saturation throughput and CPU per request");
        let outcome = scenarios::throughput::run(&mut ctx).await?;
        proxied_rps = outcome.proxied_rps;
        sections.push(outcome.a);
        sections.push(outcome.e);
    }
    if has('b') {
        if !proxied_rps.is_finite() {
            proxied_rps = saturation(&ctx).await;
        }
        eprintln!("mcpgw-bench: b. latency at a fixed rate");
        sections.push(scenarios::latency::run(&mut ctx, proxied_rps).await?);
    }
    if has('c') {
        eprintln!("mcpgw-bench: c. SSE timing");
        sections.push(scenarios::sse::run(&mut ctx).await?);
    }
    if has('d') {
        eprintln!("mcpgw-bench: d. legacy session setup");
        sections.push(scenarios::setup::run(&mut ctx).await?);
    }
    if has('f') {
        eprintln!("mcpgw-bench: f. idle SSE streams");
        sections.push(scenarios::streams::run(&mut ctx, max_files).await?);
    }
    if has('g') {
        eprintln!("mcpgw-bench: g. routing change → applied");
        sections.push(scenarios::routing::run(&mut ctx).await?);
    }
    if has('h') {
        eprintln!("mcpgw-bench: h. instructions per proxied request (callgrind)");
        sections.push(scenarios::instructions::run(&mut ctx, opts.smoke).await?);
    }
    if has('k') {
        eprintln!("mcpgw-bench: k. soak ({} s)", opts.profile.soak.as_secs());
        sections.push(scenarios::soak::run(&mut ctx).await?);
    }
    if has('m') {
        eprintln!("mcpgw-bench: m. aggregation on /mcp");
        sections.push(scenarios::aggregation::run(&mut ctx).await?);
    }
    if has('s') {
        eprintln!("mcpgw-bench: s. a stdio server vs the same over Streamable HTTP");
        sections.push(scenarios::stdio::run(&mut ctx).await?);
    }
    if has('t') {
        eprintln!("mcpgw-bench: t. transparency under keep-alive load");
        sections.push(scenarios::transparency::run(&mut ctx).await?);
    }
    sections.sort_by_key(|s| s.id);
    Ok(())
}

/// One proxied saturation run, when scenario a was not selected but b needs its figure.
async fn saturation(ctx: &Ctx<'_>) -> f64 {
    let Some((_, ep)) = ctx.stack.endpoints("bench").into_iter().find(|(v, _)| *v == Via::Proxy) else {
        return f64::NAN;
    };
    let reqs = vec![ep.stateless_echo(); ctx.profile.connections];
    closed::run(ep.addr, reqs, ctx.profile.saturation).await.rps
}
