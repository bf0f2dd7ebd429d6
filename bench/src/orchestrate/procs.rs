//! Child processes of a run: started pinned to a core with `taskset` (which execs, so the pid is the
//! program's own), logs to files, killed when dropped, and their pids recorded so `scripts/bench.sh`
//! can clean up after a crash.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::http::Conn;
use crate::requests::Endpoint;

/// One running child.
pub struct Proc {
    pub name: &'static str,
    pub pid: u32,
    pub log: PathBuf,
    child: Child,
}

/// How to start a child.
pub struct Spec<'a> {
    pub name: &'static str,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// Core to pin to (none: unpinned).
    pub cpu: Option<usize>,
}

impl Proc {
    pub fn start(spec: Spec<'_>, run_dir: &Path) -> Result<Self> {
        let log = run_dir.join(format!("{}.log", spec.name));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match spec.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(spec.program);
                c
            }
            None => Command::new(spec.program),
        };
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.id().context("child has no pid")?;
        if let Ok(mut pids) = std::fs::OpenOptions::new().create(true).append(true).open(run_dir.join("pids"))
        {
            let _ = writeln!(pids, "{pid}");
        }
        Ok(Self { name: spec.name, pid, log, child })
    }

    /// Fails when the process has exited (with its log's tail).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{} exited ({status}); log {}:\n{}", self.name, self.log.display(), tail(&self.log));
        }
        Ok(())
    }

    /// Waits until `GET path` on `addr` answers 200 (or, with `path` empty, until `addr` accepts).
    pub async fn wait_ready(&mut self, addr: SocketAddr, path: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if ready(addr, path).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready on {addr}{path} after {timeout:?}; log:\n{}", self.name, tail(&self.log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn ready(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut conn) = Conn::connect(addr).await else { return false };
    if path.is_empty() {
        return true;
    }
    matches!(conn.request(&Endpoint::get(addr, path)).await, Ok(r) if r.head.status == 200)
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Whether `program subcommand --help` lists `flag` (an older build given with `--proxy-bin` may not).
pub async fn knows_flag(program: &Path, subcommand: &str, flag: &str) -> bool {
    let help = Command::new(program).args([subcommand, "--help"]).stdin(Stdio::null()).output().await;
    help.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}

/// A free port on 127.0.0.1 (released before use: a small race the harness accepts).
pub fn free_port() -> Result<u16> {
    Ok(free_ports::<1>()?[0])
}

/// `N` distinct free ports on 127.0.0.1: each is held until all are found (one released before the next
/// is asked for may be handed out again).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
