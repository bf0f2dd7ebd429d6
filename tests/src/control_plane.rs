//! The control plane as a real process: `mcpgw-control-plane serve` on ports it picks itself.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::db::TestDb;
use crate::process::Spawned;
use crate::{binary, http_client, poll_until};

/// How long a start may take (creating and migrating a database included).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `mcpgw-control-plane serve`.
pub struct ControlPlane {
    proc: Option<Spawned>,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    database_url: String,
    admin_token: String,
    extra_args: Vec<String>,
    /// Environment given on purpose (`start_with_env`).
    env: Vec<(String, String)>,
    http: reqwest::Client,
    /// `https` when started with `--http-tls-cert` (the harness then trusts `tests/tls/ca.pem`).
    scheme: &'static str,
}

impl ControlPlane {
    /// Starts it on ports 0 (it logs the bound `http_addr=` and `grpc_addr=`) and waits for `GET /ready`.
    pub async fn start(db: &TestDb, admin_token: &str) -> Result<Self> {
        Self::start_with(db, admin_token, &[]).await
    }

    /// `start` with more flags for `serve` (e.g. `--health-interval 200ms`, `--replica-id a`).
    pub async fn start_with(db: &TestDb, admin_token: &str, extra_args: &[&str]) -> Result<Self> {
        Self::start_at(db, admin_token, crate::localhost(0), crate::localhost(0), extra_args).await
    }

    /// `start_with` and these environment variables, which the harness leaves as given (it otherwise
    /// clears proxy variables for every child).
    pub async fn start_with_env(
        db: &TestDb,
        admin_token: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cp = Self::new(db.url(), admin_token, crate::localhost(0), crate::localhost(0), extra_args);
        cp.env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        cp.launch().await?;
        Ok(cp)
    }

    /// `start_with` on given addresses (when another process must know them first, e.g. an IdP that
    /// redirects to the REST API).
    pub async fn start_at(
        db: &TestDb,
        admin_token: &str,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::start_on_database(db.url(), admin_token, http_addr, grpc_addr, extra_args).await
    }

    /// `start_at` with the database at `database_url` (e.g. through a relay the test can cut).
    pub async fn start_on_database(
        database_url: &str,
        admin_token: &str,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
        extra_args: &[&str],
    ) -> Result<Self> {
        let mut cp = Self::new(database_url, admin_token, http_addr, grpc_addr, extra_args);
        cp.launch().await?;
        Ok(cp)
    }

    fn new(
        database_url: &str,
        admin_token: &str,
        http_addr: SocketAddr,
        grpc_addr: SocketAddr,
        extra_args: &[&str],
    ) -> Self {
        let tls = extra_args.contains(&"--http-tls-cert");
        Self {
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            proc: None,
            http_addr,
            grpc_addr,
            database_url: database_url.to_owned(),
            admin_token: admin_token.to_owned(),
            http: if tls { crate::tls::client() } else { http_client() },
            scheme: if tls { "https" } else { "http" },
        }
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(binary("mcpgw-control-plane")?);
        cmd.arg("serve")
            .arg("--http-addr")
            .arg(self.http_addr.to_string())
            .arg("--grpc-addr")
            .arg(self.grpc_addr.to_string())
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--admin-token")
            .arg(&self.admin_token)
            .args(&self.extra_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Spawned::spawn("control-plane", cmd)?;
        let addrs = poll_until("control plane to log http_addr= and grpc_addr=", START_TIMEOUT, || {
            let exited = proc.exited();
            let text = proc.log_text();
            async move {
                if let Some(status) = exited {
                    bail!("control plane exited with {status} before binding");
                }
                Ok(logged_addr(&text, "http_addr").zip(logged_addr(&text, "grpc_addr")))
            }
        })
        .await
        .with_context(|| proc.describe())?;
        (self.http_addr, self.grpc_addr) = addrs;
        let ready = format!("{}://{}/ready", self.scheme, self.http_addr);
        let http = self.http.clone();
        poll_until("control plane GET /ready = 200", START_TIMEOUT, || {
            let exited = proc.exited();
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                if let Some(status) = exited {
                    bail!("control plane exited with {status}");
                }
                let status = http.get(&ready).send().await?.status();
                Ok(status.is_success().then_some(()))
            }
        })
        .await
        .with_context(|| proc.describe())?;
        self.proc = Some(proc);
        Ok(())
    }

    /// REST base URL, `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme, self.http_addr)
    }

    /// gRPC URL for `mcpgw-proxy --control-plane`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The bound REST address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Spawned::pid)
    }

    /// Everything the process has logged so far.
    pub fn log_text(&self) -> String {
        self.proc.as_ref().map(Spawned::log_text).unwrap_or_default()
    }

    /// Runs the binary's CLI (`export`, `import FILE ...`) against this control plane's REST API; returns
    /// its exit success, stdout and stderr.
    pub async fn cli(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = Command::new(binary("mcpgw-control-plane")?)
            .args(args)
            .arg("--api-url")
            .arg(self.http_url())
            .arg("--admin-token")
            .arg(&self.admin_token)
            .env_remove("MCPGW_DATABASE_URL")
            .output()
            .await
            .context("run the control plane CLI")?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((out.status.success(), text(&out.stdout), text(&out.stderr)))
    }

    /// A GET of `path` with the admin token (every `/api/v1` route needs it; public ones ignore it);
    /// returns the status and the body as text.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let resp =
            self.http.get(format!("{}{path}", self.http_url())).bearer_auth(&self.admin_token).send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Log location and tail, for failure messages.
    pub fn describe(&self) -> String {
        self.proc.as_ref().map(Spawned::describe).unwrap_or_else(|| "control plane: stopped".to_owned())
    }

    /// An authenticated REST request; returns status and JSON body (Null when empty or not JSON).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.api_as(&self.admin_token, method, path, body).await
    }

    /// [`ControlPlane::api`] with another bearer credential (an API key or an access token).
    pub async fn api_as(
        &self,
        bearer: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.http_url())).bearer_auth(bearer);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("control plane {path}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// `POST /api/v1/servers`; returns the new server's id. `transport` is `streamable_http` or `sse`.
    pub async fn register(&self, name: &str, endpoint_url: &str, transport: &str) -> Result<String> {
        let body = json!({"name": name, "endpoint_url": endpoint_url, "transport_type": transport});
        let (status, resp) = self.api(reqwest::Method::POST, "/api/v1/servers", Some(body)).await?;
        if status != 201 {
            bail!("register {name}: expected 201, got {status}: {resp}\n{}", self.describe());
        }
        match resp.get("id") {
            Some(Value::String(id)) => Ok(id.clone()),
            Some(Value::Number(id)) => Ok(id.to_string()),
            _ => bail!("register {name}: no id in {resp}"),
        }
    }

    /// `POST /api/v1/api-keys` with `body` (at least `name`); returns the key's id and its secret.
    pub async fn create_api_key(&self, body: Value) -> Result<(String, String)> {
        let (status, resp) = self.api(reqwest::Method::POST, "/api/v1/api-keys", Some(body)).await?;
        if status != 201 {
            bail!("create api key: expected 201, got {status}: {resp}");
        }
        match (resp["id"].as_str(), resp["key"].as_str()) {
            (Some(id), Some(key)) => Ok((id.to_owned(), key.to_owned())),
            _ => bail!("create api key: no id or key in {resp}"),
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after 5 s) and waits for it.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate(Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    /// Kills the process at once (no graceful shutdown).
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await?;
        }
        Ok(())
    }

    /// Stops it if running and starts it again on the same ports and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        // The old sockets are closed once the process has exited; the listener sets SO_REUSEADDR, but a
        // port grabbed by someone else in between cannot be helped, so retry briefly.
        let mut last = None;
        for _ in 0..5 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }
}

/// The last `key=IP:PORT` with a non-zero port in a text log (`key="IP:PORT"` too).
fn logged_addr(log: &str, key: &str) -> Option<SocketAddr> {
    let needle = format!("{key}=");
    let needle = needle.as_str();
    log.lines()
        .flat_map(|line| line.match_indices(needle).map(move |(i, _)| &line[i + needle.len()..]))
        .filter_map(|rest| {
            let value: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            value.trim_end_matches([',', '}']).parse::<SocketAddr>().ok()
        })
        .filter(|addr| addr.port() != 0)
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_logged_addresses() {
        let log = "INFO starting http_addr=127.0.0.1:0\n\
                   2026 INFO mcpgw: listening http_addr=127.0.0.1:4242 grpc_addr=\"127.0.0.1:4343\"\n";
        assert_eq!(logged_addr(log, "http_addr"), Some(crate::localhost(4242)));
        assert_eq!(logged_addr(log, "grpc_addr"), Some(crate::localhost(4343)));
        assert_eq!(logged_addr("x", "grpc_addr"), None);
    }
}
