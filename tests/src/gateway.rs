//! The whole gateway for one test: a database, a control plane on it, and a proxy fed by it.

use std::time::Duration;

use anyhow::Result;

use crate::{ControlPlane, Proxy, TestDb};

/// Admin bearer token the harness starts control planes with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// How long a registration may take to reach the proxy in tests that do not measure it.
pub const ROUTABLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Database + control plane + proxy. Fields drop in declaration order: proxy, control plane, database.
pub struct Gateway {
    /// The data plane.
    pub proxy: Proxy,
    /// The control plane.
    pub cp: ControlPlane,
    /// The control plane's database.
    pub db: TestDb,
}

impl Gateway {
    /// Starts everything with default proxy settings.
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts everything, passing `proxy_args` to `mcpgw-proxy serve`.
    pub async fn start_with(proxy_args: &[&str]) -> Result<Self> {
        let db = TestDb::new();
        let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
        let proxy = Proxy::start(&cp.grpc_url(), proxy_args).await?;
        Ok(Self { proxy, cp, db })
    }

    /// Starts everything with the proxy as deployed: callers need credentials (no `--anonymous`).
    pub async fn start_closed(proxy_args: &[&str]) -> Result<Self> {
        Self::start_closed_with(&[], proxy_args).await
    }

    /// [`Gateway::start_closed`] with more flags for the control plane (`--secrets-key`, `--jwks-refresh`).
    pub async fn start_closed_with(cp_args: &[&str], proxy_args: &[&str]) -> Result<Self> {
        let db = TestDb::new();
        let cp = ControlPlane::start_with(&db, ADMIN_TOKEN, cp_args).await?;
        let proxy = Proxy::start_closed(&cp.grpc_url(), proxy_args).await?;
        Ok(Self { proxy, cp, db })
    }

    /// Registers a server and waits until the proxy routes it; returns its MCP URL through the proxy.
    pub async fn add_server(&self, name: &str, endpoint_url: &str, transport: &str) -> Result<String> {
        self.cp.register(name, endpoint_url, transport).await?;
        self.proxy.wait_routable(name, ROUTABLE_TIMEOUT).await?;
        Ok(self.proxy.url(name))
    }
}
