//! stdio servers as a bridge link: each bridged session runs its own process of the instance's command,
//! one JSON-RPC message per line on its stdin and stdout. The process's environment is exactly the
//! command's `env` plus the proxy's `PATH` (nothing else of the proxy's environment — session key, tokens —
//! is inherited); its stderr goes to the proxy's log, line by line. The process ends with its session
//! (`DELETE`, expiry, shutdown: killed) and a process that exits ends its session: requests waiting on it
//! fail with 502 and the session's token gets 404 (the client re-initializes, which starts a new process).
//! Failures to start or early exits reach the instance's breaker, so a command that keeps failing is
//! backed off (503 while its breaker is open) instead of being spawned in a loop.
//!
//! Only programs named in `--stdio-programs` are started (none by default).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::RequestHeader;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::Attempt;
use super::bridge::{Inbound, Link, Opened};
use crate::error::ProxyError;
use crate::routing::{Instance, Server};
use crate::shared::Shared;

/// Longest line (message) read from a process; a longer one ends the session.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Longest stderr line logged (the rest is cut).
const MAX_LOG_LINE: usize = 4096;

/// Starts the instance's command. A program not allowed here, or one that cannot be started, is
/// `NotSent` (another instance may be tried).
pub(crate) async fn open(gw: &Shared, server: &Server, instance: &Arc<Instance>) -> Result<Opened, Attempt> {
    let unreachable = |detail: String| {
        Attempt::NotSent(ProxyError::UpstreamUnreachable { server: server.name.to_string(), detail })
    };
    let Some(command) = &instance.command else {
        return Err(unreachable(format!("instance {} has no command", instance.id)));
    };
    if !gw.stdio_programs.iter().any(|p| *p == command.program) {
        return Err(Attempt::Failed(
            ProxyError::StdioNotAllowed { server: server.name.to_string(), program: command.program.clone() }
                .into(),
            None,
        ));
    }
    let mut cmd = Command::from(mcpgw_proto::stdio::command(
        &command.program,
        &command.args,
        &command.env,
        Some(&command.working_directory),
    ));
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| unreachable(format!("cannot start {}: {e}", command.program)))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(unreachable("the process has no pipes".into()));
    };
    let pid = child.id().unwrap_or_default();
    let child = Arc::new(std::sync::Mutex::new(child));
    let (name, id) = (server.name.clone(), instance.id.clone());
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut lines).take(MAX_LINE as u64).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LOG_LINE)]);
                    tracing::info!(server = %name, instance = %id, pid, "stdio: {}", text.trim_end());
                }
            }
        }
    });
    tracing::debug!(server = %server.name, instance = %instance.id, pid, program = %command.program, "stdio process started.");
    Ok(Opened {
        link: Box::new(StdinLink { stdin: tokio::sync::Mutex::new(stdin), child: child.clone() }),
        inbound: Box::new(Lines { child, stdout: BufReader::new(stdout), server: server.name.clone(), pid }),
        early: Vec::new(),
    })
}

/// Client messages as lines on the process's stdin. Closing it kills the process at once (shutdown does
/// not wait for the tasks reading it); so does dropping the last handle of the process.
struct StdinLink {
    stdin: tokio::sync::Mutex<ChildStdin>,
    child: Arc<std::sync::Mutex<Child>>,
}

#[async_trait]
impl Link for StdinLink {
    async fn send(
        &self,
        _: &Shared,
        server: &Server,
        _: &RequestHeader,
        message: Bytes,
    ) -> Result<(), ProxyError> {
        let line = one_line(message)?;
        let mut stdin = self.stdin.lock().await;
        let write = async {
            stdin.write_all(&line).await?;
            stdin.flush().await
        };
        write.await.map_err(|e| ProxyError::UpstreamFailed {
            server: server.name.to_string(),
            detail: format!("writing to the stdio process: {e}"),
        })
    }

    fn close(&self) {
        let _ = self.child.lock().unwrap_or_else(|e| e.into_inner()).start_kill();
    }
}

/// `message` as one newline-terminated line: a JSON text with line breaks between tokens is written
/// again compactly (line breaks inside JSON strings are always escaped).
fn one_line(message: Bytes) -> Result<Bytes, ProxyError> {
    let body = message.trim_ascii();
    let mut line = if body.contains(&b'\n') || body.contains(&b'\r') {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::BadRequest(format!("the message is not JSON: {e}")))?;
        BytesMut::from(serde_json::to_vec(&value).unwrap_or_default().as_slice())
    } else {
        BytesMut::from(body)
    };
    line.extend_from_slice(b"\n");
    Ok(line.freeze())
}

/// Lines of the process's stdout; the process is killed when this is dropped.
struct Lines {
    child: Arc<std::sync::Mutex<Child>>,
    stdout: BufReader<ChildStdout>,
    server: Arc<str>,
    pid: u32,
}

#[async_trait]
impl Inbound for Lines {
    async fn next(&mut self) -> Option<Bytes> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = (&mut self.stdout).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).await;
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) if line.len() > MAX_LINE => {
                    tracing::warn!(server = %self.server, pid = self.pid, "A stdio process wrote a line over {MAX_LINE} bytes; ending its session.");
                    return None;
                }
                Ok(_) => {
                    let message = line.trim_ascii();
                    if !message.is_empty() {
                        return Some(Bytes::copy_from_slice(message));
                    }
                }
            }
        }
        // Its exit status, when it has exited by now (a process that only closed its stdout is killed).
        let status = self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait();
        match status {
            Ok(Some(status)) => {
                tracing::warn!(server = %self.server, pid = self.pid, %status, "A stdio process exited.")
            }
            _ => tracing::warn!(server = %self.server, pid = self.pid, "A stdio process closed its stdout."),
        }
        None
    }
}
