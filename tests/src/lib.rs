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
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod relay;
pub mod sse;
pub mod tls;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
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

/// A port that was free a moment ago on 127.0.0.1 (bound to port 0, then released). For processes that
/// cannot bind port 0 themselves; callers retry when they lose the race.
/// A free port for a server a test restarts at the same address: below the kernel's ephemeral range, so no
/// client socket of any test can take it while the server is down (one did: a killed instance could not
/// come back, its port held by an outgoing connection). Chosen at random, checked by binding it.
pub fn restartable_port() -> Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.max(10_001));
    for _ in 0..256 {
        let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into()?);
        let port = from + random % (to - from);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    free_port()
}

pub fn free_port() -> Result<u16> {
    // The kernel may hand a just-released port out again: never give one port to two processes of the
    // same test (a proxy's admin port and a Python instance collided that way).
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..64 {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port that this test has not used already")
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
