//! What the harness reads from `/proc`: a process's CPU time (`stat`: utime + stime, all threads) and
//! resident memory (`status`: VmRSS), the open-file limit, the load average and the machine.

use std::io;
use std::process::Command;

use serde::Serialize;

/// CPU time used so far by process `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| io::Error::other("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let field = |i: usize| -> io::Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| io::Error::other("bad stat field"))
    };
    Ok(field(11)? + field(12)?)
}

/// Nanoseconds the threads of process `pid` have spent runnable but waiting for a CPU
/// (`/proc/<pid>/task/*/schedstat`, second field; a thread that ends takes its share with it).
pub fn run_delay_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else { continue };
        total += text.split_whitespace().nth(1).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// Clock ticks CPU `cpu` has been busy so far (`/proc/stat`: user, nice, system, irq and softirq; not idle,
/// I/O wait or steal).
pub fn cpu_busy_ticks(cpu: usize) -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .ok_or_else(|| io::Error::other(format!("no {name} in /proc/stat")))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal …
    Ok([0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum())
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux in practice).
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// Soft and hard limits on open files of this process.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((nums.next()??, nums.next()??))
}

/// The 1-minute load average.
pub fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU pressure: the share of the last 10 s in which some runnable task waited for a CPU (`/proc/pressure/cpu`,
/// `some avg10`, percent), the most direct sign of other work competing with the benchmark.
pub fn cpu_pressure10() -> f64 {
    std::fs::read_to_string("/proc/pressure/cpu")
        .ok()
        .and_then(|s| {
            s.lines().next()?.split_whitespace().find_map(|f| f.strip_prefix("avg10=")?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_gib: f64,
    pub kernel: String,
    pub nofile_soft: u64,
    pub nofile_hard: u64,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let (nofile_soft, nofile_hard) = nofile_limit().unwrap_or((0, 0));
    Machine {
        // Not `available_parallelism`: the harness runs pinned to one core.
        cpus: cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1),
        cpu_model,
        mem_total_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        nofile_soft,
        nofile_hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        cpu_ticks(me).unwrap();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(nofile_limit().is_some());
        assert!(machine().cpus >= 1);
    }

    #[test]
    fn a_busy_core_and_a_waiting_thread_are_seen() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // Two more spinning threads than cores: some of them must wait for one.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let me = std::process::id();
        let (wait_before, busy_before) = (run_delay_ns(me).unwrap(), cpu_busy_ticks(0).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..cores + 2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        // Read while they live (an ended thread takes its share with it), until a wait and a tick are seen.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let (mut wait, mut busy) = (0, busy_before);
        while (wait == 0 || busy == busy_before) && std::time::Instant::now() < deadline {
            // (saturating: another test's thread of this process may end meanwhile)
            wait = run_delay_ns(me).unwrap().saturating_sub(wait_before);
            busy = cpu_busy_ticks(0).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(wait > 0, "no run-queue wait with {} spinning threads on {cores} cores", cores + 2);
        assert!(busy > busy_before, "core 0 not busy while every core had a spinning thread");
        assert!(cpu_busy_ticks(usize::MAX).is_err());
    }
}
