//! `mcpgw-bench`: runs the benchmark scenarios of BENCHMARKS.md (normally through `scripts/bench.sh`,
//! which builds the binaries, provides nginx and the database, and pins this process to the load core).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mcpgw_bench::orchestrate::stack::{Bins, Pins};
use mcpgw_bench::orchestrate::{self, Options};
use mcpgw_bench::scenarios::Profile;

#[derive(Debug, Parser)]
#[command(name = "mcpgw-bench", version, about = "mcpgw benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start fixture, control plane, proxy and nginx, run the scenarios, write the reports. Exits
    /// non-zero after writing them when any run had errors.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Seconds-long run with tiny counts and no thresholds (CI keeps the harness alive with it).
    #[arg(long)]
    smoke: bool,
    /// Scenarios to run, as letters (h, instructions per request under callgrind, and k, the soak, run
    /// only when asked: h needs valgrind, k takes 30 minutes unless --soak-seconds says otherwise).
    #[arg(long, default_value = "abcdefgmst")]
    scenarios: String,
    /// Directory of the reports and logs.
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// Directory holding mcpgw-proxy, mcpgw-control-plane and mcpgw-bench-fixture.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The proxy binary, when not the one in --bin-dir (e.g. an older build to compare with).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// A proxy build to run beside the measured one with the same flags: scenario a measures both in
    /// the same passes (`proxy-base`) and reports the difference (a change's before/after).
    #[arg(long)]
    base_proxy_bin: Option<PathBuf>,
    /// nginx binary (`none` to skip the reference proxy).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// PostgreSQL database for the control plane (created by it; dropped by scripts/bench.sh).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/mcpgw_bench")]
    database_url: String,
    /// Core of the load generator and the control plane (`none`: no pinning).
    #[arg(long, default_value = "0")]
    load_cpu: String,
    /// Core of the fixture, the proxy and nginx.
    #[arg(long, default_value = "1")]
    server_cpu: String,
    /// Measured passes (default: 5, smoke 1).
    #[arg(long)]
    pairs: Option<usize>,
    /// Connections of the saturation runs.
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds measured per saturation run.
    #[arg(long)]
    seconds: Option<f64>,
    /// Routing changes in scenario g.
    #[arg(long)]
    changes: Option<usize>,
    /// Idle stream levels in scenario f, comma-separated.
    #[arg(long, value_delimiter = ',')]
    stream_levels: Option<Vec<usize>>,
    /// Calls per target in scenario t, one at a time per connection (default: 1,000,000, smoke 4,000);
    /// its pipelined part makes a tenth as many.
    #[arg(long)]
    calls: Option<u64>,
    /// How long scenario k (the soak) runs, in seconds (default: 1,800, smoke 20).
    #[arg(long)]
    soak_seconds: Option<u64>,
    /// Commit the binaries were built from (for the report).
    #[arg(long, env = "MCPGW_BENCH_COMMIT")]
    commit: Option<String>,
}

fn cpu(arg: &str) -> Result<Option<usize>> {
    if arg == "none" {
        return Ok(None);
    }
    arg.parse().map(Some).with_context(|| format!("{arg:?} is not a CPU number"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode> {
    let Cmd::Run(args) = Cli::parse().command;
    let mut profile = if args.smoke { Profile::smoke() } else { Profile::full() };
    if let Some(p) = args.pairs {
        profile.pairs = p.max(1);
    }
    if let Some(c) = args.connections {
        profile.connections = c.max(1);
    }
    if let Some(s) = args.seconds {
        profile.saturation.measure = std::time::Duration::from_secs_f64(s);
    }
    if let Some(c) = args.changes {
        profile.routing_changes = c;
    }
    if let Some(levels) = args.stream_levels {
        profile.stream_levels = levels;
    }
    if let Some(seconds) = args.soak_seconds {
        profile.soak = std::time::Duration::from_secs(seconds.max(20));
    }
    if let Some(calls) = args.calls {
        profile.transparency_calls = calls;
    }
    let found = |path: PathBuf| -> Result<PathBuf> {
        if !path.is_file() {
            bail!("{} is missing: build it first (scripts/bench.sh does)", path.display());
        }
        Ok(path)
    };
    let bin = |name: &str| found(args.bin_dir.join(name));
    let nginx = match args.nginx.as_str() {
        "none" => None,
        path if std::path::Path::new(path).is_file() => Some(PathBuf::from(path)),
        path => {
            eprintln!("mcpgw-bench: {path} not found: running without the nginx reference");
            None
        }
    };
    let pins = Pins { load: cpu(&args.load_cpu)?, server: cpu(&args.server_cpu)? };
    let opts = Options {
        smoke: args.smoke,
        profile,
        scenarios: args.scenarios.clone(),
        out: args.out.clone(),
        bins: Bins {
            proxy: match &args.proxy_bin {
                Some(path) => found(path.clone())?,
                None => bin("mcpgw-proxy")?,
            },
            control_plane: bin("mcpgw-control-plane")?,
            fixture: bin("mcpgw-bench-fixture")?,
            nginx,
            base_proxy: args.base_proxy_bin.clone().map(found).transpose()?,
        },
        database_url: args.database_url.clone(),
        pins,
        commit: args.commit.clone(),
        command: std::env::var("MCPGW_BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
    };
    let report = orchestrate::run(opts).await?;
    println!("{}", report.markdown());
    println!("Reports: {0}/report.md, {0}/report.json", args.out.display());
    let errors = report.errors();
    if errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // An expected way to fail, not a fault of the harness: the runs, without a backtrace.
    let runs = if errors.len() == 1 { "1 run" } else { &format!("{} runs", errors.len()) };
    eprintln!("mcpgw-bench: {runs} had errors (reports written):\n  {}", errors.join("\n  "));
    Ok(ExitCode::FAILURE)
}
