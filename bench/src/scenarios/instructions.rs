//! h. Instructions per proxied request: a proxy like the measured one (same flags, audit on, anonymous
//! caller) run under callgrind, one connection making 2026-07-28 stateless `tools/call`s of `echo` on
//! `bench` one after the other. After a warm-up its counters are zeroed (`callgrind_control -z`), the calls
//! are made, and the counters dumped (`callgrind_control -d`): instructions of every thread of the proxy
//! over those calls, divided by the calls. Instruction counts do not depend on the machine's load, so
//! this figure is compared to the one recorded in `bench/instructions.json`: a full run fails when it grew
//! by more than a fifth.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::Ctx;
use crate::load::closed::{self, CallsShape};
use crate::orchestrate::procs::{Proc, Spec};
use crate::report::{Check, Section, fmt};
use crate::requests::Endpoint;

/// The figure the guard holds to, as recorded by a full run (BENCHMARKS.md, "Instructions per request").
#[derive(Debug, Deserialize)]
struct Recorded {
    instructions_per_request: f64,
    commit: String,
}

const RECORDED: &str = include_str!("../../instructions.json");
/// Growth over the recorded figure that fails a full run.
const TOLERANCE: f64 = 1.2;
/// Longest wait for one answer of the proxy under callgrind (it runs ~50× slower).
const CALL_LIMIT: Duration = Duration::from_secs(30);

pub async fn run(ctx: &mut Ctx<'_>, smoke: bool) -> Result<Section> {
    let recorded: Recorded = serde_json::from_str(RECORDED).context("bench/instructions.json")?;
    let valgrind =
        on_path("valgrind").context("valgrind is not installed (scripts/system-deps.sh installs it)")?;
    let control =
        on_path("callgrind_control").context("callgrind_control is not installed (Debian valgrind)")?;
    let stack = &*ctx.stack;
    let (args, listen, admin) = stack.sibling_args("mcpgw-bench-callgrind")?;
    let out = stack.run_dir.join("callgrind.out.%p");
    let mut cg_args = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
        stack.proxy_bin.display().to_string(),
    ];
    cg_args.extend(args);
    // Flags added to the measured proxy's, to count what a feature costs (`--otlp-endpoint …`).
    if let Ok(extra) = std::env::var("MCPGW_BENCH_H_ARGS") {
        cg_args.extend(extra.split_whitespace().map(str::to_owned));
    }
    let mut proxy = Proc::start(
        Spec {
            name: "proxy-callgrind",
            program: &valgrind,
            args: cg_args,
            env: vec![("RUST_LOG", "warn".to_owned())],
            cpu: None,
        },
        &stack.run_dir,
    )?;
    let measured = measure(ctx.profile, &mut proxy, &control, &stack.run_dir, (listen, admin)).await;
    let pid = proxy.pid;
    proxy.stop().await;
    let (calls, instructions) = measured?;
    let per_request = instructions as f64 / calls as f64;

    let mut s = Section::new(
        "h",
        "instructions per proxied request (callgrind, 2026-07-28 stateless tools/call, one connection)",
        &["calls", "instructions", "instructions / request", "recorded", "recorded at"],
    );
    s.rows.push(vec![
        calls.to_string(),
        instructions.to_string(),
        fmt(per_request),
        fmt(recorded.instructions_per_request),
        recorded.commit.clone(),
    ]);
    let limit = recorded.instructions_per_request * TOLERANCE;
    let mut check = Check::new("h", "instructions per proxied request", per_request, "");
    if !smoke {
        check = check.target("≤ recorded + 20 %", per_request <= limit);
        if per_request > limit {
            s.count_errors(
                "instructions guard",
                1,
                Some(&format!(
                    "{} instructions per request, more than {} (the {} recorded at {} + 20 %): find what grew \
                     (callgrind_annotate {}), or record the new figure in bench/instructions.json with why",
                    fmt(per_request),
                    fmt(limit),
                    fmt(recorded.instructions_per_request),
                    recorded.commit,
                    dump_path(&stack.run_dir, pid).display(),
                )),
            );
        }
    }
    s.checks.push(check);
    s.notes.push(format!(
        "Every thread of the proxy over {calls} calls after {} warm-up calls; the dump: {}",
        ctx.profile.instruction_warmup,
        dump_path(&stack.run_dir, pid).display()
    ));
    Ok(s)
}

/// Waits for the proxy under callgrind to route `bench`, warms it up, and counts the instructions of
/// `profile.instruction_calls` calls: (calls, instructions).
async fn measure(
    profile: &super::Profile,
    proxy: &mut Proc,
    control: &Path,
    run_dir: &Path,
    (listen, admin): (std::net::SocketAddr, std::net::SocketAddr),
) -> Result<(u64, u64)> {
    proxy.wait_ready(admin, "/readyz", Duration::from_secs(180)).await?;
    let request = Endpoint::new(listen, "/mcp/bench").stateless_echo();
    let shape = CallsShape { in_flight: 1, limit: Some(CALL_LIMIT) };
    // The routing table arrives over gRPC after readiness: wait for the first call answered well.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let first = closed::calls(listen, vec![request.clone()], 1, shape).await;
        if first.errors == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the proxy under callgrind answers no call: {:?}", first.first_error);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let warm = closed::calls(listen, vec![request.clone()], profile.instruction_warmup, shape).await;
    if warm.errors > 0 {
        bail!("warm-up calls failed: {} errors, first: {:?}", warm.errors, warm.first_error);
    }
    callgrind_control(control, "-z", proxy.pid).await?;
    let run = closed::calls(listen, vec![request], profile.instruction_calls, shape).await;
    if run.errors > 0 {
        bail!("measured calls failed: {} errors, first: {:?}", run.errors, run.first_error);
    }
    callgrind_control(control, "-d", proxy.pid).await?;
    let dump = dump_path(run_dir, proxy.pid);
    let text = std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let instructions = summary(&text).with_context(|| format!("no `summary:` line in {}", dump.display()))?;
    Ok((run.requests_total, instructions))
}

/// The first dump of process `pid` (`callgrind_control -d` writes `<out file>.1`).
fn dump_path(run_dir: &Path, pid: u32) -> PathBuf {
    run_dir.join(format!("callgrind.out.{pid}.1"))
}

/// The instructions counted in a callgrind dump (its `summary:` line; the only event is `Ir`).
fn summary(dump: &str) -> Option<u64> {
    dump.lines().find_map(|l| l.strip_prefix("summary:")).and_then(|v| v.trim().parse().ok())
}

async fn callgrind_control(control: &Path, command: &str, pid: u32) -> Result<()> {
    let out = tokio::process::Command::new(control)
        .args([command, &pid.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", control.display()))?;
    if !out.status.success() {
        bail!(
            "callgrind_control {command} {pid}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_of_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 47910743\n\nfn=(1) main\n";
        assert_eq!(summary(dump), Some(47_910_743));
        assert_eq!(summary("events: Ir\n"), None);
    }

    #[test]
    fn the_recorded_figure_parses() {
        let recorded: Recorded = serde_json::from_str(RECORDED).unwrap();
        assert!(recorded.instructions_per_request > 1000.0, "{recorded:?}");
    }
}
