//! The scenarios: a–g, the proxy's performance targets, each measured as interleaved direct / proxied /
//! nginx runs after a warm-up pass and reported as medians over the pairs; and t, transparency under
//! keep-alive load, which counts errors rather than time; h, instructions per request under callgrind,
//! held to a recorded figure; k, the soak (runs only when asked: 30 minutes by default).

pub mod aggregation;
pub mod instructions;
pub mod latency;
pub mod routing;
pub mod setup;
pub mod soak;
pub mod sse;
pub mod stdio;
pub mod streams;
pub mod throughput;
pub mod transparency;

use std::num::NonZeroU64;
use std::time::Duration;

use serde::Serialize;

use crate::load::Window;
use crate::orchestrate::stack::Stack;
use crate::procfs;

/// Counts and durations of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// Measured pairs (each: direct, proxied and nginx once) after one warm-up pass.
    pub pairs: usize,
    /// Connections of the closed-loop (saturation) runs.
    pub connections: usize,
    pub saturation: Window,
    /// Fixed rate as a share of the proxied saturation throughput.
    pub rate_share: f64,
    pub open_connections: usize,
    pub fixed_rate: Window,
    pub sse_connections: usize,
    pub sse_events: u32,
    pub sse_interval_ms: u64,
    pub sse: Window,
    pub setup: Window,
    /// Idle stream counts measured, in order.
    pub stream_levels: Vec<usize>,
    pub stream_settle: Duration,
    pub routing_changes: usize,
    /// Calls of scenario t per target, one at a time per connection (the pipelined part: a tenth).
    pub transparency_calls: u64,
    pub transparency_connections: usize,
    /// Requests the fixture of scenario t answers on a keep-alive connection before it closes it.
    pub transparency_close_after: NonZeroU64,
    /// Scenario h: calls counted under callgrind, and calls before them.
    pub instruction_calls: u64,
    pub instruction_warmup: u64,
    /// Scenario k: how long the soak runs.
    pub soak: Duration,
}

/// The fixture of scenario t closes every 25th request's connection, as in the proxy's own
/// transparency test (tests/e2e/transparency.rs).
const CLOSE_AFTER: NonZeroU64 = NonZeroU64::new(25).expect("25 is not zero");

fn window(warmup_ms: u64, measure_ms: u64) -> Window {
    Window { warmup: Duration::from_millis(warmup_ms), measure: Duration::from_millis(measure_ms) }
}

impl Profile {
    pub fn full() -> Self {
        Self {
            pairs: 5,
            connections: 32,
            saturation: window(500, 3000),
            rate_share: 0.3,
            open_connections: 32,
            fixed_rate: window(500, 4000),
            sse_connections: 4,
            sse_events: 10,
            sse_interval_ms: 1,
            sse: window(300, 3000),
            setup: window(300, 2000),
            stream_levels: vec![1000, 2000, 5000, 10_000],
            stream_settle: Duration::from_secs(1),
            routing_changes: 1000,
            transparency_calls: 1_000_000,
            transparency_connections: 16,
            transparency_close_after: CLOSE_AFTER,
            instruction_calls: 2000,
            instruction_warmup: 200,
            soak: Duration::from_secs(30 * 60),
        }
    }

    /// Seconds, not figures: keeps every code path running in CI.
    pub fn smoke() -> Self {
        Self {
            pairs: 1,
            connections: 4,
            saturation: window(50, 200),
            rate_share: 0.3,
            open_connections: 4,
            fixed_rate: window(50, 200),
            sse_connections: 2,
            sse_events: 3,
            sse_interval_ms: 1,
            sse: window(50, 200),
            setup: window(50, 200),
            stream_levels: vec![20, 50],
            stream_settle: Duration::from_millis(100),
            routing_changes: 10,
            transparency_calls: 4000,
            transparency_connections: 16,
            transparency_close_after: CLOSE_AFTER,
            instruction_calls: 50,
            instruction_warmup: 10,
            soak: Duration::from_secs(20),
        }
    }
}

/// What every scenario gets.
pub struct Ctx<'a> {
    pub stack: &'a mut Stack,
    pub profile: &'a Profile,
    pub ticks_per_sec: u64,
}

/// The run order of pass `pass`: forwards on even passes, backwards on odd ones, so that drift in the
/// machine's load hits every target alike.
pub fn order<T: Clone>(pass: usize, targets: &[T]) -> Vec<T> {
    let mut v = targets.to_vec();
    if pass % 2 == 1 {
        v.reverse();
    }
    v
}

/// The server core during a run: how long the processes pinned to it (fixture, proxies, nginx) waited for
/// it while runnable, and how much of its time went to anything else (the database, other services, the
/// kernel's work for other processes). The servers of a proxied run also wait for each other (the proxy and
/// the fixture share the core), so runs are compared with each other: a tail that comes with other work is
/// that work's; more wait with no more other work is the core withheld (a virtual CPU not woken, or not run
/// by its host).
pub struct ServerCoreProbe {
    pids: Vec<u32>,
    cpu: Option<usize>,
    wait_ns: u64,
    busy: u64,
    own: u64,
}

/// What [`ServerCoreProbe`] saw, in milliseconds.
pub struct ServerCore {
    /// Run-queue wait of the server processes.
    pub wait_ms: f64,
    /// The core's busy time not spent by the server processes (NaN when the servers are not pinned).
    pub other_ms: f64,
}

impl ServerCoreProbe {
    pub fn start(stack: &Stack) -> Self {
        let pids: Vec<u32> = stack.server_procs().map(|p| p.pid).collect();
        let cpu = stack.pins.server;
        let (wait_ns, busy, own) = Self::read(&pids, cpu);
        Self { pids, cpu, wait_ns, busy, own }
    }

    fn read(pids: &[u32], cpu: Option<usize>) -> (u64, u64, u64) {
        let wait = pids.iter().map(|&p| procfs::run_delay_ns(p).unwrap_or(0)).sum();
        let busy = cpu.and_then(|c| procfs::cpu_busy_ticks(c).ok()).unwrap_or(0);
        let own = pids.iter().map(|&p| procfs::cpu_ticks(p).unwrap_or(0)).sum();
        (wait, busy, own)
    }

    /// Since [`ServerCoreProbe::start`].
    pub fn finish(&self, ticks_per_sec: u64) -> ServerCore {
        let (wait_ns, busy, own) = Self::read(&self.pids, self.cpu);
        let tick_ms = 1000.0 / ticks_per_sec as f64;
        let other = busy.saturating_sub(self.busy) as f64 - own.saturating_sub(self.own) as f64;
        ServerCore {
            wait_ms: wait_ns.saturating_sub(self.wait_ns) as f64 / 1e6,
            other_ms: if self.cpu.is_some() { (other * tick_ms).max(0.0) } else { f64::NAN },
        }
    }
}

/// CPU time of the processes that serve a run.
pub struct CpuProbe {
    pids: Vec<(&'static str, u32, u64)>,
}

impl CpuProbe {
    pub fn start(stack: &Stack) -> Self {
        let procs = stack.server_procs().chain([&stack.control_plane]);
        Self { pids: procs.map(|p| (p.name, p.pid, procfs::cpu_ticks(p.pid).unwrap_or(0))).collect() }
    }

    /// Microseconds of CPU per request for each process since `start`.
    pub fn per_request(&self, requests: u64, ticks_per_sec: u64) -> Vec<(&'static str, f64)> {
        self.pids
            .iter()
            .map(|(name, pid, before)| {
                let used = procfs::cpu_ticks(*pid).unwrap_or(*before).saturating_sub(*before);
                let us = used as f64 * 1e6 / ticks_per_sec as f64;
                (*name, if requests == 0 { f64::NAN } else { us / requests as f64 })
            })
            .collect()
    }

    /// [`CpuProbe::per_request`] of the proxy alone (NaN when it was not probed).
    pub fn proxy_per_request(&self, requests: u64, ticks_per_sec: u64) -> f64 {
        self.per_request(requests, ticks_per_sec)
            .into_iter()
            .find(|(n, _)| *n == "proxy")
            .map_or(f64::NAN, |(_, us)| us)
    }
}

/// `a − b`, the figure added by a hop.
pub fn added(a: f64, b: f64) -> f64 {
    a - b
}
