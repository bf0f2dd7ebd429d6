//! Harness for the end-to-end tests: the two planes as real processes, real MCP peers, fakes and a raw
//! MCP-over-HTTP client, all on 127.0.0.1.
//!
//! Every process is killed when its handle drops, and writes its output to a log file under
//! `target/e2e-logs/<test>/`; a failing test prints the path and the last lines of every log.
#![forbid(unsafe_code)]

pub mod browser;
pub mod conformance;
pub mod control_plane;
pub mod dataplane;
pub mod db;
pub mod fake;
pub mod gateway;
pub mod idp;
pub mod kube;
pub mod mcp;
pub mod otlp;
pub mod peers;
mod ports;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod relay;
pub mod sse;
pub mod tls;

pub use ports::free_port;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use control_plane::ControlPlane;
pub use db::TestDb;
pub use fake::{RecordingUpstream, SilentUpstream};
pub use gateway::{ADMIN_TOKEN, Gateway, SECRETS_KEY, SignInGateway};
pub use idp::Idp;
pub use mcp::{McpHttp, McpResponse};
pub use peers::{
    EverythingServer, PyServer, PyServerOpts, RmcpServer, browser_login, fastmcp, inspector, py_client,
    py_oauth_client, ts_oauth_client,
};
pub use proxy::Proxy;
pub use redis::Redis;
pub use sse::SseEvent;

/// Path of a workspace binary: `$MCPGW_BIN_DIR/<name>` if set, else next to the test binary's parent
/// (`target/debug/deps/e2e-…` → `target/debug/<name>`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("MCPGW_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("current_exe")?;
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .context("the test binary has no grandparent directory")?
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: run `cargo build --workspace --bins` first (or set MCPGW_BIN_DIR)",
            path.display()
        );
    }
    Ok(path)
}

/// Root of the workspace (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `target/` of the running test binary (`target/debug/deps/e2e-…` → `target`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `127.0.0.1:<port>`.
pub fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `check` until it yields `Some`, or fails after `timeout` naming `what` and the last error.
/// The interval is short: this is a readiness poll, never a sleep that correctness depends on.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow::anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    poll_until(&format!("a listener on {addr}"), timeout, || async move {
        Ok(tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()))
    })
    .await
}

/// A reqwest client for local test traffic: never goes through an `HTTP_PROXY` from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client with static settings builds")
}
