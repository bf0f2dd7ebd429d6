//! The data plane as a real process: `mcpgw-proxy serve` on ports chosen for it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::process::Spawned;
use crate::{binary, free_port, http_client, localhost, poll_until};

/// How long the proxy may take to become ready (first routing table received).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `mcpgw-proxy serve`.
pub struct Proxy {
    proc: Spawned,
    listen: SocketAddr,
    admin: SocketAddr,
    http: reqwest::Client,
}

impl Proxy {
    /// Starts a proxy that lets callers without credentials through (`--anonymous`): for the tests of
    /// forwarding, protocol eras, balancing and sessions, which are not about identity.
    pub async fn start(control_plane: &str, extra_args: &[&str]) -> Result<Self> {
        let mut args = vec!["--anonymous"];
        args.extend_from_slice(extra_args);
        Self::start_closed(control_plane, &args).await
    }

    /// Starts the proxy as deployed (credentials required) against the control plane at `control_plane`
    /// (its gRPC URL) with `extra_args`, and waits for `GET /readyz` = 200. Pingora cannot bind port 0, so
    /// the ports are found free beforehand; a start that loses the race for them is retried with new ones.
    pub async fn start_closed(control_plane: &str, extra_args: &[&str]) -> Result<Self> {
        Self::start_until(control_plane, extra_args, true).await
    }

    /// Starts a proxy as deployed and returns once its admin listener answers `/healthz`, ready or not (for
    /// proxies the control plane is expected to refuse).
    pub async fn start_unready(control_plane: &str, extra_args: &[&str]) -> Result<Self> {
        Self::start_until(control_plane, extra_args, false).await
    }

    /// [`Proxy::start_closed`] listening on `listen` (chosen beforehand because another process must know
    /// the proxy's public URL first); the admin port is found free.
    pub async fn start_closed_at(
        control_plane: &str,
        listen: SocketAddr,
        extra_args: &[&str],
    ) -> Result<Self> {
        let admin = localhost(free_port()?);
        Self::launch(control_plane, extra_args, listen, admin, true).await.map_err(|e| match e {
            LaunchError::Exited(e) | LaunchError::NotReady(e) => e,
        })
    }

    async fn start_until(control_plane: &str, extra_args: &[&str], ready: bool) -> Result<Self> {
        let mut last = None;
        for _ in 0..4 {
            let (listen, admin) = (localhost(free_port()?), localhost(free_port()?));
            if listen == admin {
                continue;
            }
            match Self::launch(control_plane, extra_args, listen, admin, ready).await {
                Ok(proxy) => return Ok(proxy),
                // Exited early: most likely a port taken in between; anything else repeats and is reported.
                Err(LaunchError::Exited(e)) => last = Some(e),
                Err(LaunchError::NotReady(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("could not find free ports for the proxy")))
    }

    async fn launch(
        control_plane: &str,
        extra_args: &[&str],
        listen: SocketAddr,
        admin: SocketAddr,
        wait_ready: bool,
    ) -> Result<Self, LaunchError> {
        let mut cmd = Command::new(binary("mcpgw-proxy").map_err(LaunchError::NotReady)?);
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--control-plane")
            .arg(control_plane)
            .args(extra_args);
        let mut proc = Spawned::spawn("proxy", cmd).map_err(LaunchError::NotReady)?;
        let http = http_client();
        let readyz = format!("http://{admin}/{}", if wait_ready { "readyz" } else { "healthz" });
        let mut exited = false;
        let ready =
            poll_until("proxy GET /readyz = 200 and its MCP listener accepting", READY_TIMEOUT, || {
                let status = proc.exited();
                exited |= status.is_some();
                let (http, readyz) = (http.clone(), readyz.clone());
                async move {
                    if let Some(status) = status {
                        bail!("proxy exited with {status}");
                    }
                    let resp = http.get(&readyz).timeout(Duration::from_secs(2)).send().await?;
                    // Pingora starts its listeners separately: the MCP one must accept too.
                    let accepting = tokio::net::TcpStream::connect(listen).await.is_ok();
                    Ok((resp.status().is_success() && accepting).then_some(()))
                }
            })
            .await;
        match ready {
            Ok(()) => Ok(Self { proc, listen, admin, http }),
            Err(e) if exited => Err(LaunchError::Exited(e.context(proc.describe()))),
            Err(e) => Err(LaunchError::NotReady(e.context(proc.describe()))),
        }
    }

    /// Base URL of the MCP listener, `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// MCP URL of a registered server: `http://127.0.0.1:<port>/mcp/{name}`.
    pub fn url(&self, server: &str) -> String {
        format!("http://{}/mcp/{server}", self.listen)
    }

    /// Admin base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The MCP listener address.
    /// SIGKILL and wait (a replica dying without draining).
    pub async fn kill(&mut self) -> Result<()> {
        self.proc.kill().await
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Log location and tail, for failure messages.
    pub fn describe(&self) -> String {
        self.proc.describe()
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// `GET /routes` on the admin port.
    pub async fn routes(&self) -> Result<Value> {
        let resp = self.http.get(format!("{}/routes", self.admin_url())).send().await?;
        if !resp.status().is_success() {
            bail!("GET /routes: {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// `GET /metrics` on the admin port.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.admin_url())).send().await?.text().await?)
    }

    /// `GET /readyz` status.
    pub async fn readyz(&self) -> Result<u16> {
        Ok(self.http.get(format!("{}/readyz", self.admin_url())).send().await?.status().as_u16())
    }

    /// Whether `/routes` lists `name` with at least one instance.
    pub async fn is_routable(&self, name: &str) -> Result<bool> {
        Ok(routable(&self.routes().await?, name))
    }

    /// Polls `/routes` until `name` has an instance; returns how long that took.
    pub async fn wait_routable(&self, name: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        poll_until(&format!("{name} in the proxy's /routes"), timeout, || async {
            Ok(self.is_routable(name).await?.then_some(()))
        })
        .await
        .with_context(|| self.describe())?;
        Ok(start.elapsed())
    }
}

/// Whether a `/routes` document lists `name` with at least one instance.
pub fn routable(routes: &Value, name: &str) -> bool {
    routes.get("servers").and_then(Value::as_array).is_some_and(|servers| {
        servers.iter().any(|s| {
            s.get("name").and_then(Value::as_str) == Some(name)
                && s.get("instances").and_then(Value::as_array).is_some_and(|i| !i.is_empty())
        })
    })
}

enum LaunchError {
    Exited(anyhow::Error),
    NotReady(anyhow::Error),
}
