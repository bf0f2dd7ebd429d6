//! stdio servers: the control plane starts the instance's command as the proxies do — its environment
//! exactly the command's `env` (secrets included) plus this process's `PATH`, nothing else inherited — and
//! speaks newline-delimited JSON-RPC on its stdin and stdout; stderr goes to the log, line by line
//! (debug level, bounded). The process is killed when the conversation closes or is dropped. Only
//! programs named in `--stdio-programs` are started.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mcpgw_proto::v1;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{MAX_BODY, McpError};

/// Longest stderr line logged (the rest of a longer one is logged as further lines).
const MAX_LOG_LINE: usize = 4096;
/// Most stderr lines logged per process; later ones are read and dropped.
const MAX_LOG_LINES: usize = 1000;
/// How long a process that closed its stdout may take to report its exit status, and a killed one to
/// be reaped.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The programs stdio servers may run here (`--stdio-programs`), matched exactly; none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPrograms(Arc<[String]>);

impl StdioPrograms {
    pub fn new(programs: impl IntoIterator<Item = String>) -> Self {
        Self(programs.into_iter().filter(|p| !p.is_empty()).collect())
    }

    /// Whether `program` is listed (exactly as given: a bare name is not its resolved path).
    pub fn allows(&self, program: &str) -> bool {
        self.0.iter().any(|p| p == program)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The listed programs, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A stdio instance's command as the proxies receive it (secret environment merged into `env`). `Debug`
/// shows the environment's names only.
#[derive(Clone, PartialEq, Eq)]
pub struct StdioCommand {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_directory: Option<String>,
}

impl fmt::Debug for StdioCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("working_directory", &self.working_directory)
            .finish()
    }
}

impl StdioCommand {
    pub fn from_proto(command: &v1::StdioCommand) -> Self {
        Self {
            program: command.program.clone(),
            args: command.args.clone(),
            env: command.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            working_directory: Some(command.working_directory.clone()).filter(|d| !d.is_empty()),
        }
    }
}

/// A running server process: its stdin, its stdout read line by line.
pub(crate) struct StdioWire {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    program: String,
    pid: u32,
}

impl StdioWire {
    /// Starts `command` if `programs` allows it.
    pub(crate) fn spawn(command: &StdioCommand, programs: &StdioPrograms) -> Result<Self, McpError> {
        if !programs.allows(&command.program) {
            return Err(McpError::NotAllowed(command.program.clone()));
        }
        let mut cmd = Command::from(mcpgw_proto::stdio::command(
            &command.program,
            &command.args,
            &command.env,
            command.working_directory.as_deref(),
        ));
        cmd.kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| McpError::Transport(format!("cannot start {:?}: {e}", command.program)))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(McpError::Transport("the process has no pipes".into()));
        };
        let pid = child.id().unwrap_or_default();
        tokio::spawn(log_stderr(stderr, command.program.clone(), pid));
        tracing::debug!(program = %command.program, pid, "Started a stdio server.");
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            program: command.program.clone(),
            pid,
        })
    }

    /// Writes one message as one line.
    pub(crate) async fn send(&mut self, mut text: String) -> Result<(), McpError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(McpError::Transport("the process's stdin is closed".into()));
        };
        text.push('\n');
        let write = async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.flush().await
        };
        match write.await {
            Ok(()) => Ok(()),
            Err(e) => match self.exit_status().await {
                Some(status) => Err(self.exited(status)),
                None => Err(McpError::Transport(format!("writing to {:?}: {e}", self.program))),
            },
        }
    }

    /// The next JSON line of its stdout (blank lines and lines that are not JSON are skipped and logged);
    /// `None` at the end of its stdout.
    pub(crate) async fn recv(&mut self) -> Result<Option<Value>, McpError> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.stdout).take(MAX_BODY as u64 + 1).read_until(b'\n', &mut line).await;
            match read {
                Ok(0) => return Ok(None),
                Ok(_) if line.len() > MAX_BODY => {
                    return Err(McpError::protocol(format!(
                        "a line of the process is longer than {MAX_BODY} bytes"
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(McpError::Transport(format!("reading from {:?}: {e}", self.program))),
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match serde_json::from_slice(text) {
                Ok(message) => return Ok(Some(message)),
                Err(error) => tracing::debug!(program = %self.program, pid = self.pid, %error,
                    "A stdio server wrote a line that is not JSON-RPC on its stdout; skipped."),
            }
        }
    }

    /// Why the process stopped answering: it exited (with its status), or it closed its stdout.
    pub(crate) async fn gone(&mut self) -> McpError {
        match self.exit_status().await {
            Some(status) => self.exited(status),
            None => McpError::Transport(format!("{:?} closed its stdout before answering", self.program)),
        }
    }

    fn exited(&self, status: std::process::ExitStatus) -> McpError {
        McpError::Transport(format!("the process {:?} exited ({status}) before answering", self.program))
    }

    async fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(EXIT_WAIT, self.child.wait()).await.ok()?.ok()
    }

    /// Closes its stdin, kills it and reaps it.
    pub(crate) async fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(EXIT_WAIT, self.child.wait()).await;
        tracing::debug!(program = %self.program, pid = self.pid, "Stopped a stdio server.");
    }
}

/// Logs a process's stderr line by line (bounded lines, bounded count) until it closes.
async fn log_stderr(stderr: tokio::process::ChildStderr, program: String, pid: u32) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0usize;
    loop {
        line.clear();
        match (&mut reader).take(MAX_LOG_LINE as u64).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if logged >= MAX_LOG_LINES => {}
            Ok(_) => {
                logged += 1;
                let text = String::from_utf8_lossy(&line);
                tracing::debug!(%program, pid, "stdio server: {}", text.trim_end());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_match_exactly_and_debug_hides_the_environment() {
        let programs = StdioPrograms::new(["npx".to_owned(), String::new(), "/usr/bin/srv".to_owned()]);
        assert!(programs.allows("npx") && programs.allows("/usr/bin/srv"));
        assert!(!programs.allows("/usr/bin/npx") && !programs.allows("srv") && !programs.allows(""));
        assert!(StdioPrograms::default().is_empty());
        let command = StdioCommand {
            program: "npx".into(),
            args: vec![],
            env: BTreeMap::from([("TOKEN".into(), "s3cret".into())]),
            working_directory: None,
        };
        let debug = format!("{command:?}");
        assert!(debug.contains("TOKEN") && !debug.contains("s3cret"), "{debug}");
    }

    #[tokio::test]
    async fn a_program_not_listed_is_not_started() {
        let command = StdioCommand {
            program: "true".into(),
            args: vec![],
            env: BTreeMap::new(),
            working_directory: None,
        };
        assert!(matches!(
            StdioWire::spawn(&command, &StdioPrograms::default()),
            Err(McpError::NotAllowed(_))
        ));
    }
}
