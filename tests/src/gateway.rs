//! The whole gateway for one test: a database, a control plane on it, and a proxy fed by it.

use std::time::Duration;

use anyhow::Result;

use crate::{ControlPlane, Proxy, TestDb};

/// Admin bearer token the harness starts control planes with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0001";

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

    /// [`Gateway::start_with`], passing `cp_args` to the control plane too.
    pub async fn start_with_planes(cp_args: &[&str], proxy_args: &[&str]) -> Result<Self> {
        let db = TestDb::new();
        let cp = ControlPlane::start_with(&db, ADMIN_TOKEN, cp_args).await?;
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

/// `--secrets-key` of control planes that keep secrets (upstream credentials, signing keys): 32 bytes, hex.
pub const SECRETS_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The gateway's client id and secret at the company IdP.
pub const IDP_CLIENT: (&str, &str) = ("mcpgw-gateway", "mcpgw-gateway-idp-secret");

/// A gateway whose control plane is the OAuth authorization server, signing users in at a real OpenID
/// provider (`idp.mjs`), with a proxy as deployed (credentials required).
pub struct SignInGateway {
    pub gw: Gateway,
    pub idp: crate::Idp,
}

impl SignInGateway {
    /// Starts the IdP with `users` (Entra ID mode with `entra` as tenant), the control plane with
    /// `--secrets-key`, `--public-url` = the proxy and `--oidc-*` = the IdP, plus `cp_args`, then the proxy.
    pub async fn start(users: serde_json::Value, entra: Option<&str>, cp_args: &[&str]) -> Result<Self> {
        let (http, grpc, listen) = (
            crate::localhost(crate::free_port()?),
            crate::localhost(crate::free_port()?),
            crate::localhost(crate::free_port()?),
        );
        let issuer = format!("http://{http}");
        let login = crate::idp::LoginIdp {
            users,
            client: (IDP_CLIENT.0.to_owned(), IDP_CLIENT.1.to_owned(), format!("{issuer}/oauth/callback")),
            entra: entra.map(str::to_owned),
        };
        let idp = crate::Idp::start_login(&login).await?;
        let db = TestDb::new();
        let public = format!("http://{listen}");
        let idp_issuer = idp.issuer();
        let mut args = vec![
            "--secrets-key",
            SECRETS_KEY,
            "--public-url",
            &public,
            "--oidc-issuer",
            &idp_issuer,
            "--oidc-client-id",
            IDP_CLIENT.0,
            "--oidc-client-secret",
            IDP_CLIENT.1,
        ];
        args.extend_from_slice(cp_args);
        let cp = ControlPlane::start_at(&db, ADMIN_TOKEN, http, grpc, &args).await?;
        let proxy = Proxy::start_closed_at(&cp.grpc_url(), listen, &[]).await?;
        Ok(Self { gw: Gateway { proxy, cp, db }, idp })
    }

    /// The authorization server's issuer (the control plane's REST URL).
    pub fn issuer(&self) -> String {
        self.gw.cp.http_url()
    }
}
