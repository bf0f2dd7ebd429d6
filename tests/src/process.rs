//! Child processes owned by a test: output in a per-test log file, killed on drop, log tail on failure.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

use crate::target_dir;

/// Name of the running test, from the thread libtest runs it on (`routing::outage` → `routing__outage`).
pub fn test_name() -> String {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name,
        _ => "unnamed",
    };
    name.replace("::", "__").replace(|c: char| !(c.is_ascii_alphanumeric() || "_-.".contains(c)), "_")
}

/// Directory for the running test's logs: `target/e2e-logs/<test>/`, emptied on first use in this process.
pub fn log_dir() -> PathBuf {
    static CLEANED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let root = std::env::var_os("MCPGW_E2E_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("e2e-logs"));
    let dir = root.join(test_name());
    let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
    if cleaned.get_or_insert_with(HashSet::new).insert(dir.clone()) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A fresh log file path for a component of the running test: `<log_dir>/<label>-<n>.log`.
pub fn log_file(label: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    log_dir().join(format!("{label}-{n}.log"))
}

/// The last `lines` lines of a log file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sets what every child of the harness needs: no colours (logs are parsed), no HTTP proxy for local
/// traffic, and an `info` log level unless the caller asks otherwise through `MCPGW_E2E_RUST_LOG`.
/// Variables the caller set on `cmd` itself are kept (a test giving a process a proxy on purpose).
pub fn prepare(cmd: &mut Command) {
    let explicit: std::collections::HashSet<std::ffi::OsString> =
        cmd.as_std().get_envs().map(|(name, _)| name.to_owned()).collect();
    let rust_log = std::env::var("MCPGW_E2E_RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    cmd.env("NO_COLOR", "1").env("RUST_LOG", rust_log);
    for name in ["NO_PROXY", "no_proxy"] {
        if !explicit.contains(std::ffi::OsStr::new(name)) {
            cmd.env(name, "127.0.0.1,localhost");
        }
    }
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        if !explicit.contains(std::ffi::OsStr::new(name)) {
            cmd.env_remove(name);
        }
    }
}

/// A running child process whose stdout and stderr go to a log file.
pub struct Spawned {
    label: String,
    child: Child,
    log: PathBuf,
}

impl Spawned {
    /// Starts `cmd` with its output in a new log file named after `label`.
    pub fn spawn(label: &str, mut cmd: Command) -> Result<Self> {
        let log = log_file(label);
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        prepare(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawn {label}: {cmd:?}"))?;
        Ok(Self { label: label.to_owned(), child, log })
    }

    /// The log file of this process.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the log is and its last lines: for error messages.
    pub fn describe(&self) -> String {
        format!(
            "{} log: {}\n--- last lines ---\n{}\n---",
            self.label,
            self.log.display(),
            tail(&self.log, 40)
        )
    }

    /// OS process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The exit status if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; waits for the exit.
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.start_kill()?;
                Ok(self.child.wait().await?)
            }
        }
    }

    /// SIGKILL and wait.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // libtest shows captured output only for failing tests, so this costs nothing when all pass.
        eprintln!("{}", self.describe());
    }
}
