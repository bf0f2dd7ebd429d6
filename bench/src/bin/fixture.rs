//! `mcpgw-bench-fixture`: the fixture MCP upstream of the benchmarks, on its own (see `mcpgw_bench::fixture`).
//! Prints `listening on ADDR` once bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::Duration;

use clap::Parser;
use mcpgw_bench::fixture::{self, Fixture, Settings};

/// Fixture MCP upstream: `/mcp` answers JSON, `/mcp-sse` answers SSE; legacy sessions and 2026-07-28
/// stateless requests; tools `echo` (~1 KiB answer) and `stream` (timed progress events).
#[derive(Debug, Parser)]
#[command(name = "mcpgw-bench-fixture", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Worker threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Padding bytes in the `echo` answer.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Keep-alive comment interval on idle GET streams.
    #[arg(long, default_value = "15", value_parser = |s: &str| s.parse::<u64>().map(Duration::from_secs))]
    keepalive_secs: Duration,
    /// Close every keep-alive connection after answering this many requests on it (the last answer
    /// carries `Connection: close`); unset: connections stay open.
    #[arg(long)]
    close_after: Option<NonZeroU64>,
    /// Serve MCP on stdin and stdout instead of HTTP (a stdio server).
    #[arg(long)]
    stdio: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings {
        payload_bytes: cli.payload_bytes,
        keepalive: cli.keepalive_secs,
        close_after: cli.close_after,
    };
    if cli.stdio {
        return Ok(fixture::serve_stdio(&Fixture::new(settings))?);
    }
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()?
    };
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        fixture::serve(listener, Fixture::new(settings)).await?;
        Ok(())
    })
}
