//! The real MCP peers of `tests/peers/` (installed by `tests/peers/install.sh`): server-everything, the
//! Python SDK server and client, and the Inspector CLI.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::process::{Spawned, log_file, prepare};
use crate::{free_port, localhost, wait_for_tcp};

/// How long a peer server may take to start listening (the Python SDK needs 2-3 s).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client CLI invocation may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// `tests/peers/`.
pub fn peers_dir() -> PathBuf {
    crate::workspace_root().join("tests").join("peers")
}

fn require(path: PathBuf) -> Result<PathBuf> {
    if !path.exists() {
        bail!("{} is missing: run tests/peers/install.sh (scripts/test.sh does)", path.display());
    }
    Ok(path)
}

/// The peers' Python (`tests/peers/.venv/bin/python`), with `requirements.txt` installed.
pub fn python() -> Result<PathBuf> {
    require(peers_dir().join(".venv").join("bin").join("python"))
}

/// Starts a server on a free port, retrying with another port if it exits early (lost the port race).
async fn start_on_free_port(label: &str, build: impl Fn(u16) -> Result<Command>) -> Result<(Spawned, u16)> {
    let mut last = None;
    for _ in 0..4 {
        let port = free_port()?;
        let mut proc = Spawned::spawn(label, build(port)?)?;
        let up = wait_for_tcp(localhost(port), START_TIMEOUT).await;
        match (up, proc.exited()) {
            (Ok(()), None) => return Ok((proc, port)),
            (_, Some(status)) => {
                last = Some(anyhow::anyhow!("{label} exited with {status}\n{}", proc.describe()))
            }
            (Err(e), None) => return Err(e.context(proc.describe())),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{label} did not start")))
}

/// Programs the stdio servers of the tests run: the peers' Python and `node` (for `--stdio-programs`).
pub fn stdio_programs() -> Result<String> {
    Ok(format!("{},node", python()?.display()))
}

/// The `command` registering `py_server.py` as a stdio server named `name`.
pub fn py_stdio_command(name: &str) -> Result<serde_json::Value> {
    let script = require(peers_dir().join("py_server.py"))?;
    Ok(serde_json::json!({
        "program": python()?.display().to_string(),
        "args": [script.display().to_string(), "--transport", "stdio", "--name", name],
    }))
}

/// The `command` registering server-everything in its stdio mode.
pub fn everything_stdio_command() -> Result<serde_json::Value> {
    let dir = peers_dir();
    let entry = require(dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))?;
    Ok(serde_json::json!({
        "program": "node",
        "args": [entry.display().to_string(), "stdio"],
        "working_directory": dir.display().to_string(),
    }))
}

/// `@modelcontextprotocol/server-everything` (legacy era only), pinned to 127.0.0.1 by a `--require` preload.
pub struct EverythingServer {
    proc: Spawned,
    port: u16,
    path: &'static str,
}

impl EverythingServer {
    /// Streamable HTTP: `http://127.0.0.1:<port>/mcp`.
    pub async fn start() -> Result<Self> {
        Self::start_mode("streamableHttp", "/mcp").await
    }

    /// Deprecated HTTP+SSE: `GET http://127.0.0.1:<port>/sse`, `POST /message?sessionId=`.
    pub async fn start_sse() -> Result<Self> {
        Self::start_mode("sse", "/sse").await
    }

    async fn start_mode(mode: &str, path: &'static str) -> Result<Self> {
        let dir = peers_dir();
        let preload = require(dir.join("localhost-only.cjs"))?;
        let entry = require(dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"))?;
        let (proc, port) = start_on_free_port("server-everything", |port| {
            let mut cmd = Command::new("node");
            cmd.current_dir(&dir)
                .arg("--require")
                .arg(&preload)
                .arg(&entry)
                .arg(mode)
                .env("PORT", port.to_string());
            Ok(cmd)
        })
        .await?;
        Ok(Self { proc, port, path })
    }

    /// The MCP URL (`/mcp`, or `/sse` for the SSE transport).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Log location and tail.
    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

/// Options of [`PyServer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PyServerOpts {
    /// `stateless_http=True`: no legacy sessions.
    pub stateless: bool,
    /// `json_response=True`: `application/json` instead of SSE.
    pub json_response: bool,
    /// `--transport websocket`: MCP over WebSocket at `ws://127.0.0.1:<port>/ws` instead of HTTP.
    pub websocket: bool,
}

/// `tests/peers/py_server.py`: a Python SDK (`mcp` 2.3.0) dual-era server with echo/add/whoami/progress.
pub struct PyServer {
    proc: Spawned,
    port: u16,
    name: String,
    websocket: bool,
}

impl PyServer {
    /// Starts it on a free port; `name` is what `whoami` returns.
    pub async fn start(name: &str, opts: PyServerOpts) -> Result<Self> {
        Self::start_on(name, opts, None).await
    }

    /// Starts it on `port` (a restart at the same address), or on a free port.
    pub async fn start_on(name: &str, opts: PyServerOpts, port: Option<u16>) -> Result<Self> {
        Self::launch(name, opts, port, None).await
    }

    /// Starts it protected as an OAuth resource server: every request needs a JWT of `issuer` (keys at
    /// `jwks_url`) whose audience is its own URL; its `whoami_token` tool shows the token it received.
    pub async fn start_protected(name: &str, jwks_url: &str, issuer: &str) -> Result<Self> {
        Self::launch(name, PyServerOpts::default(), None, Some((jwks_url, issuer))).await
    }

    async fn launch(
        name: &str,
        opts: PyServerOpts,
        port: Option<u16>,
        auth: Option<(&str, &str)>,
    ) -> Result<Self> {
        let python = python()?;
        let script = require(peers_dir().join("py_server.py"))?;
        let build = |port: u16| {
            let mut cmd = Command::new(&python);
            cmd.arg(&script).arg("--port").arg(port.to_string()).arg("--name").arg(name);
            if let Some((jwks, issuer)) = auth {
                cmd.arg("--auth-jwks").arg(jwks).arg("--auth-issuer").arg(issuer);
                cmd.arg("--auth-audience").arg(format!("http://127.0.0.1:{port}/mcp"));
            }
            if opts.stateless {
                cmd.arg("--stateless");
            }
            if opts.json_response {
                cmd.arg("--json-response");
            }
            if opts.websocket {
                cmd.arg("--transport").arg("websocket");
            }
            Ok(cmd)
        };
        let label = format!("py-server-{name}");
        let (proc, port) = match port {
            None => start_on_free_port(&label, build).await?,
            Some(port) => {
                let proc = Spawned::spawn(&label, build(port)?)?;
                wait_for_tcp(localhost(port), START_TIMEOUT).await.with_context(|| proc.describe())?;
                (proc, port)
            }
        };
        Ok(Self { proc, port, name: name.to_owned(), websocket: opts.websocket })
    }

    /// `http://127.0.0.1:<port>/mcp` (`ws://127.0.0.1:<port>/ws` when started with `websocket`).
    pub fn url(&self) -> String {
        if self.websocket {
            return format!("ws://127.0.0.1:{}/ws", self.port);
        }
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Log location and tail.
    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

/// Runs a client CLI to completion; stdout must be one JSON document. Stderr goes to a log file.
pub(crate) async fn run_json(label: &str, mut cmd: Command) -> Result<Value> {
    let log = log_file(label);
    let stderr = std::fs::File::create(&log)?;
    prepare(&mut cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).kill_on_drop(true);
    let shown = format!("{cmd:?}");
    let child = cmd.spawn().with_context(|| format!("spawn {shown}"))?;
    let out = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{label} did not finish within {CLIENT_TIMEOUT:?}: {shown}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context = || {
        format!(
            "{label} ({}): {shown}\nstdout: {stdout}\nstderr log: {}\n{}",
            out.status,
            log.display(),
            crate::process::tail(&log, 30)
        )
    };
    if !out.status.success() {
        bail!("{} failed", context());
    }
    serde_json::from_str(stdout.trim()).with_context(context)
}

/// Runs `tests/peers/py_client.py URL --mode MODE ACTION...` and returns its JSON document.
/// `mode` is `auto`, `legacy` or `2026-07-28`; actions: `["list-tools"]`, `["call", NAME, JSON]`,
/// `["progress", NAME, JSON]`.
pub async fn py_client(url: &str, mode: &str, action: &[&str]) -> Result<Value> {
    py_client_env(url, mode, action, &[]).await
}

/// [`py_client`] with more environment (`SSL_CERT_FILE` to trust a test CA).
pub async fn py_client_env(url: &str, mode: &str, action: &[&str], env: &[(&str, &str)]) -> Result<Value> {
    let mut cmd = Command::new(python()?);
    cmd.arg(require(peers_dir().join("py_client.py"))?).arg(url).arg("--mode").arg(mode).args(action);
    cmd.envs(env.iter().copied());
    run_json("py-client", cmd).await
}

/// Runs `tests/peers/py_oauth_client.py URL --user USER ARGS...`: the Python SDK's OAuth client signs `user`
/// in through the gateway's authorization server and runs the actions (`tools/list`, `call NAME JSON`).
pub async fn py_oauth_client(url: &str, user: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(python()?);
    cmd.arg(require(peers_dir().join("py_oauth_client.py"))?).arg(url).arg("--user").arg(user).args(args);
    run_json("py-oauth-client", cmd).await
}

/// Runs `tests/peers/ts_oauth_client.mjs URL --user USER ARGS...` (the TS SDK's auth provider).
pub async fn ts_oauth_client(url: &str, user: &str, args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new("node");
    cmd.current_dir(peers_dir())
        .arg(require(peers_dir().join("ts_oauth_client.mjs"))?)
        .arg(url)
        .arg("--user")
        .arg(user)
        .args(args);
    run_json("ts-oauth-client", cmd).await
}

/// Runs `tests/peers/oauth_login.py`: the browser part of a sign-in from `authorization_url` as `user`
/// (`--stop-at PREFIX` in `extra` stops at that page). `Ok` holds the redirect's query parameters (or where
/// it stopped); `Err` a flow that broke off, with the hops.
pub async fn browser_login(
    authorization_url: &str,
    redirect_uri: &str,
    user: &str,
    extra: &[&str],
) -> Result<Value> {
    let mut cmd = Command::new(python()?);
    cmd.arg(require(peers_dir().join("oauth_login.py"))?)
        .arg(authorization_url)
        .arg(redirect_uri)
        .arg(user)
        .args(extra);
    run_json("oauth-login", cmd).await
}

/// Runs the FastMCP CLI (`fastmcp ARGS... --json`, e.g. `["list", URL, "--auth", KEY]`) from the peers'
/// venv and returns its JSON output.
pub async fn fastmcp(args: &[&str]) -> Result<Value> {
    let mut cmd = Command::new(require(peers_dir().join(".venv/bin/fastmcp"))?);
    cmd.args(args).arg("--json").env("FASTMCP_CHECK_FOR_UPDATES", "off");
    run_json("fastmcp", cmd).await
}

/// Runs the Inspector CLI v1 (`node cli.js --cli URL --transport http ARGS...`, cwd its `build/`) and
/// returns its JSON output, e.g. `inspector(url, &["--method", "tools/list"])`.
pub async fn inspector(url: &str, args: &[&str]) -> Result<Value> {
    inspector_transport(url, "http", args).await
}

/// [`inspector`] with another `--transport` (`sse` for the deprecated HTTP+SSE transport).
pub async fn inspector_transport(url: &str, transport: &str, args: &[&str]) -> Result<Value> {
    inspector_env(url, transport, args, &[]).await
}

/// [`inspector_transport`] with more environment (`NODE_EXTRA_CA_CERTS` to trust a test CA).
pub async fn inspector_env(url: &str, transport: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Value> {
    let build = require(peers_dir().join("node_modules/@modelcontextprotocol/inspector-cli/build"))?;
    let mut cmd = Command::new("node");
    cmd.current_dir(&build).arg("cli.js").arg("--cli").arg(url).arg("--transport").arg(transport).args(args);
    cmd.envs(env.iter().copied());
    run_json("inspector", cmd).await
}

/// FastMCP's own aggregating proxy (`fastmcp run <mcpServers config>` over HTTP): the behavioural reference
/// `/mcp` is compared with.
pub struct FastMcpProxy {
    proc: Spawned,
    port: u16,
}

impl FastMcpProxy {
    /// Aggregates `servers` (name, Streamable HTTP URL).
    pub async fn start(servers: &[(&str, String)]) -> Result<Self> {
        let config = serde_json::json!({
            "mcpServers": servers
                .iter()
                .map(|(name, url)| ((*name).to_owned(), serde_json::json!({"url": url, "transport": "http"})))
                .collect::<serde_json::Map<String, Value>>(),
        });
        let path = crate::process::log_dir().join("fastmcp-proxy.json");
        std::fs::write(&path, config.to_string())?;
        let program = require(peers_dir().join(".venv/bin/fastmcp"))?;
        let (proc, port) = start_on_free_port("fastmcp-proxy", |port| {
            let mut cmd = Command::new(&program);
            cmd.arg("run").arg(&path).args(["--transport", "http", "--host", "127.0.0.1", "--port"]);
            cmd.arg(port.to_string()).env("FASTMCP_CHECK_FOR_UPDATES", "off");
            Ok(cmd)
        })
        .await?;
        Ok(Self { proc, port })
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}

/// `tests/peers/rmcp-server`: an rmcp 3.9.0 dual-era server with paginated lists (3 items per page),
/// built by `install.sh` as its own cargo project.
pub struct RmcpServer {
    proc: Spawned,
    port: u16,
}

impl RmcpServer {
    /// Starts it on a free port; `name` is what `whoami` returns.
    pub async fn start(name: &str) -> Result<Self> {
        let binary = require(peers_dir().join("rmcp-server/target/debug/mcpgw-rmcp-fixture"))?;
        let (proc, port) = start_on_free_port(&format!("rmcp-{name}"), |port| {
            let mut cmd = Command::new(&binary);
            cmd.arg("--port").arg(port.to_string()).arg("--name").arg(name);
            Ok(cmd)
        })
        .await?;
        Ok(Self { proc, port })
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Log location and tail.
    pub fn describe(&self) -> String {
        self.proc.describe()
    }
}
