//! The system under test, started in order: the fixture (and, for scenario t, a second one that closes its
//! keep-alive connections), the control plane (its own database), the proxy (`--threads 1`), the
//! benchmark servers registered through the REST API with the admin token, then nginx. Fixtures, proxy
//! and nginx share the server core; the control plane runs on the load core.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::issuer::Issuer;
use super::nginx;
use super::procs::{Proc, Spec, free_port, free_ports, knows_flag};
use crate::http::Conn;
use crate::requests::Endpoint;

/// Paths of the programs a run starts.
#[derive(Debug, Clone)]
pub struct Bins {
    pub proxy: PathBuf,
    pub control_plane: PathBuf,
    pub fixture: PathBuf,
    pub nginx: Option<PathBuf>,
    /// Another proxy build run beside the measured one (scenario a's `proxy-base`).
    pub base_proxy: Option<PathBuf>,
}

/// Cores: the load generator's (and the control plane's), and the servers' (fixture, proxy, nginx).
#[derive(Debug, Clone, Copy)]
pub struct Pins {
    pub load: Option<usize>,
    pub server: Option<usize>,
}

/// The registered benchmark servers: JSON answers, SSE answers, and one that only routing changes touch.
pub const SERVERS: [(&str, &str); 3] = [("bench", "/mcp"), ("bench-sse", "/mcp-sse"), ("bench-g", "/mcp")];
/// The server of the fixture that closes its keep-alive connections (scenario t), on its `/mcp`.
pub const CLOSING_SERVER: &str = "bench-t";

pub struct Stack {
    pub fixture: Proc,
    pub fixture_addr: SocketAddr,
    /// The fixture closing every keep-alive connection after a number of requests, when asked for.
    pub closing_fixture: Option<(Proc, SocketAddr)>,
    pub control_plane: Proc,
    pub api: SocketAddr,
    pub proxy: Proc,
    pub proxy_addr: SocketAddr,
    pub admin: SocketAddr,
    /// A second proxy, the same but with `--audit off` (idle while the first one is measured): the
    /// audit's cost is the difference (`None` for builds without audit).
    pub unaudited: Option<(Proc, SocketAddr)>,
    /// A third, the same but recording traces for a collector that is down (`--otlp-endpoint` to a closed
    /// port): what tracing costs, and that a dead collector costs nothing more (`None` for builds without).
    pub traced: Option<(Proc, SocketAddr)>,
    /// A proxy of another build (`--base-proxy-bin`) with the same flags, idle while the others are
    /// measured: scenario a compares this build with it in the same passes.
    pub base: Option<(Proc, SocketAddr)>,
    pub nginx: Option<(Proc, SocketAddr)>,
    /// The cores the stack was pinned to.
    pub pins: Pins,
    pub token: String,
    /// Server name → id in the registry.
    pub ids: Vec<(&'static str, String)>,
    /// An API key created at setup, once the proxy accepts it; `None` when the proxy or the control plane
    /// predates API keys (the keyed variants are then skipped).
    pub api_key: Option<String>,
    /// An API key holding a custom role and narrowed by its own permissions (`proxy+policy`).
    pub policy_key: Option<String>,
    /// An EdDSA token of the benchmark's own trusted issuer for `bench`, once the proxy accepts it.
    pub jwt: Option<String>,
    /// Why there is no `jwt` (the control plane cannot register the issuer, or the proxy refuses it).
    pub jwt_skipped: Option<String>,
    /// Serves the issuer's JWKS while the stack runs.
    issuer: Option<Issuer>,
    /// The fixture's path, allowed as a stdio program on both planes (`None` when a plane predates stdio
    /// servers: scenario s is then skipped).
    pub stdio_program: Option<String>,
    /// The measured proxy's program and arguments, to start another one like it ([`Stack::sibling_args`]).
    pub proxy_bin: PathBuf,
    proxy_args: Vec<String>,
    /// Where the run's logs (and other files of its processes) go.
    pub run_dir: PathBuf,
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&format!("{:016x}", RandomState::new().hash_one(out.len())));
    }
    out.truncate(bytes * 2);
    out
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `args` of a proxy, with a listener, admin address and proxy id of its own; and those addresses.
fn sibling_args(args: &[String], proxy_id: &str) -> Result<(Vec<String>, SocketAddr, SocketAddr)> {
    let mut args = args.to_vec();
    let [listen, admin] = free_ports::<2>()?.map(local);
    for (flag, value) in [
        ("--listen", listen.to_string()),
        ("--admin-addr", admin.to_string()),
        ("--proxy-id", proxy_id.to_owned()),
    ] {
        let at = args.iter().position(|a| a == flag).context("the proxy's own flags")? + 1;
        args[at] = value;
    }
    Ok((args, listen, admin))
}

impl Stack {
    /// The processes pinned to the server core: the fixtures, the proxies and nginx (the control plane and
    /// the load generator run on the load core).
    pub fn server_procs(&self) -> impl Iterator<Item = &Proc> {
        let extra = [&self.closing_fixture, &self.unaudited, &self.traced, &self.base, &self.nginx];
        [&self.fixture, &self.proxy].into_iter().chain(extra.into_iter().flatten().map(|(proc, _)| proc))
    }

    /// Starts everything; with `close_after`, also the fixture of `CLOSING_SERVER`, closing each
    /// keep-alive connection after that many requests.
    pub async fn start(
        bins: &Bins,
        pins: Pins,
        run_dir: &Path,
        database_url: &str,
        max_files: u64,
        close_after: Option<NonZeroU64>,
    ) -> Result<Self> {
        let quiet = || vec![("RUST_LOG", "warn".to_owned())];
        let start_fixture = |name: &'static str, extra: Vec<String>| -> Result<(Proc, SocketAddr)> {
            let addr = local(free_port()?);
            let mut args = vec!["--listen".into(), addr.to_string(), "--threads".into(), "1".into()];
            args.extend(extra);
            let proc = Proc::start(
                Spec { name, program: &bins.fixture, args, env: vec![], cpu: pins.server },
                run_dir,
            )?;
            Ok((proc, addr))
        };
        let (mut fixture, fixture_addr) = start_fixture("fixture", vec![])?;
        fixture.wait_ready(fixture_addr, "", Duration::from_secs(10)).await?;
        let closing_fixture = match close_after {
            Some(n) => {
                let (mut proc, addr) =
                    start_fixture("fixture-t", vec!["--close-after".into(), n.to_string()])?;
                proc.wait_ready(addr, "", Duration::from_secs(10)).await?;
                Some((proc, addr))
            }
            None => None,
        };

        let token = random_hex(24);
        let [api, grpc] = free_ports::<2>()?.map(local);
        let mut cp_args: Vec<String> = vec![
            "serve".into(),
            "--http-addr".into(),
            api.to_string(),
            "--grpc-addr".into(),
            grpc.to_string(),
            "--database-url".into(),
            database_url.into(),
            "--admin-token".into(),
            token.clone(),
            "--discovery-interval".into(),
            "0s".into(),
        ];
        // Scenario s runs the fixture as a stdio server: both planes must allow it.
        let fixture_path = std::fs::canonicalize(&bins.fixture)?.to_string_lossy().into_owned();
        let stdio_program = (knows_flag(&bins.control_plane, "serve", "--stdio-programs").await
            && knows_flag(&bins.proxy, "serve", "--stdio-programs").await)
            .then_some(fixture_path);
        if let Some(program) = &stdio_program {
            cp_args.extend(["--stdio-programs".into(), program.clone()]);
        }
        if knows_flag(&bins.control_plane, "serve", "--ssrf-allow").await {
            // The benchmark's trusted issuer serves its JWKS on 127.0.0.1.
            cp_args.extend(["--ssrf-allow".into(), "loopback".into()]);
        }
        let mut control_plane = Proc::start(
            Spec {
                name: "control-plane",
                program: &bins.control_plane,
                args: cp_args,
                env: quiet(),
                cpu: pins.load,
            },
            run_dir,
        )?;
        control_plane.wait_ready(api, "/ready", Duration::from_secs(60)).await?;

        let [proxy_addr, admin] = free_ports::<2>()?.map(local);
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            proxy_addr.to_string(),
            "--admin-addr".into(),
            admin.to_string(),
            "--control-plane".into(),
            format!("http://{grpc}"),
            "--threads".into(),
            "1".into(),
            "--proxy-id".into(),
            "mcpgw-bench".into(),
            // The anonymous path is the baseline the authenticated variants are measured against.
            "--anonymous".into(),
            // Scenario f holds 10,000 streams of one caller, on as many connections from one address.
            "--max-streams".into(),
            "100000".into(),
            "--max-streams-per-principal".into(),
            "100000".into(),
            "--max-connections".into(),
            "100000".into(),
            "--max-connections-per-client".into(),
            "100000".into(),
            "--session-key".into(),
            random_hex(32),
        ];
        if let Some(program) = &stdio_program {
            args.extend(["--stdio-programs".into(), program.clone()]);
        }
        let authenticates = knows_flag(&bins.proxy, "serve", "--anonymous").await;
        if !authenticates {
            // A build from before callers authenticate (`--proxy-bin`) lets every caller through anyway.
            args.retain(|a| a != "--anonymous");
        }
        // Builds from before the caps (`--proxy-bin`) have none to raise.
        for (flag, known) in [
            ("--max-streams", knows_flag(&bins.proxy, "serve", "--max-streams").await),
            ("--max-connections", knows_flag(&bins.proxy, "serve", "--max-connections").await),
        ] {
            if !known {
                while let Some(at) = args.iter().position(|a| a.starts_with(flag)) {
                    args.drain(at..at + 2);
                }
            }
        }
        let proxy_args = args.clone();
        let mut proxy = Proc::start(
            Spec { name: "proxy", program: &bins.proxy, args, env: quiet(), cpu: pins.server },
            run_dir,
        )?;
        proxy.wait_ready(admin, "/readyz", Duration::from_secs(30)).await?;
        // Idle proxies beside the measured one, measured in the same passes by scenario a.
        let sibling = |name: &'static str, program: PathBuf, extra: &'static [&'static str]| {
            let proxy_args = &proxy_args;
            async move {
                let (mut args, listen, admin) = sibling_args(proxy_args, &format!("mcpgw-bench-{name}"))?;
                args.extend(extra.iter().map(|a| (*a).to_owned()));
                let mut proc = Proc::start(
                    Spec { name, program: &program, args, env: quiet(), cpu: pins.server },
                    run_dir,
                )?;
                proc.wait_ready(admin, "/readyz", Duration::from_secs(30)).await?;
                anyhow::Ok((proc, listen))
            }
        };
        let unaudited = if knows_flag(&bins.proxy, "serve", "--audit").await {
            Some(sibling("proxy-unaudited", bins.proxy.clone(), &["--audit", "off"]).await?)
        } else {
            None
        };
        let traced = if knows_flag(&bins.proxy, "serve", "--otlp-endpoint").await {
            // Port 1 on loopback: nothing listens, every export is refused at once.
            Some(
                sibling("proxy-otlp-down", bins.proxy.clone(), &["--otlp-endpoint", "http://127.0.0.1:1"])
                    .await?,
            )
        } else {
            None
        };
        let base = match &bins.base_proxy {
            Some(program) => Some(sibling("proxy-base", program.clone(), &[]).await?),
            None => None,
        };

        let mut stack = Self {
            fixture,
            fixture_addr,
            closing_fixture,
            control_plane,
            api,
            proxy,
            proxy_addr,
            admin,
            unaudited,
            traced,
            base,
            nginx: None,
            pins,
            token,
            ids: Vec::new(),
            api_key: None,
            policy_key: None,
            jwt: None,
            jwt_skipped: None,
            issuer: None,
            stdio_program,
            proxy_bin: bins.proxy.clone(),
            proxy_args,
            run_dir: run_dir.to_owned(),
        };
        stack.register().await?;
        if authenticates {
            stack.api_key = stack.create_api_key().await?;
            stack.policy_key = stack.create_policy_key().await?;
            match stack.trust_issuer().await {
                Ok((issuer, jwt)) => {
                    stack.issuer = Some(issuer);
                    stack.jwt = Some(jwt);
                }
                Err(e) => {
                    eprintln!("mcpgw-bench: no JWT variant: {e:#}");
                    stack.jwt_skipped = Some(format!("{e:#}"));
                }
            }
        } else {
            stack.jwt_skipped = Some("the proxy does not authenticate callers".to_owned());
        }
        if let Some(program) = &bins.nginx {
            let addr = local(free_port()?);
            std::fs::create_dir_all(run_dir.join("nginx-tmp"))?;
            let conf = run_dir.join("nginx.conf");
            std::fs::write(&conf, nginx::config(addr, fixture_addr, run_dir, max_files))?;
            let mut proc = Proc::start(
                Spec {
                    name: "nginx",
                    program,
                    args: vec![
                        "-p".into(),
                        run_dir.display().to_string(),
                        "-e".into(),
                        run_dir.join("nginx-error.log").display().to_string(),
                        "-c".into(),
                        conf.display().to_string(),
                    ],
                    env: vec![],
                    cpu: pins.server,
                },
                run_dir,
            )?;
            proc.wait_ready(addr, "", Duration::from_secs(10)).await?;
            stack.nginx = Some((proc, addr));
        }
        Ok(stack)
    }

    /// Arguments for another proxy like the measured one (same control plane, same flags): its own
    /// listener, admin address and proxy id.
    pub fn sibling_args(&self, proxy_id: &str) -> Result<(Vec<String>, SocketAddr, SocketAddr)> {
        sibling_args(&self.proxy_args, proxy_id)
    }

    /// The registered servers: name, the fixture serving it and the path there.
    fn servers(&self) -> Vec<(&'static str, SocketAddr, &'static str)> {
        let mut out: Vec<_> = SERVERS.iter().map(|(name, path)| (*name, self.fixture_addr, *path)).collect();
        if let Some((_, addr)) = &self.closing_fixture {
            out.push((CLOSING_SERVER, *addr, "/mcp"));
        }
        out
    }

    /// Registers the benchmark servers and waits until the proxy routes all of them.
    async fn register(&mut self) -> Result<()> {
        let servers = self.servers();
        for &(name, upstream, path) in &servers {
            let body = json!({
                "name": name,
                "endpoint_url": format!("http://{upstream}{path}"),
                "transport_type": "streamable_http",
                "description": "mcpgw-bench fixture",
                "health_check": {"enabled": false},
            });
            let (mut status, mut reply) = self.rest("POST", "/api/v1/servers", &body).await?;
            if status == 409 {
                // A database kept from an earlier run: point the server at this run's fixture.
                let (_, list) = self.rest("GET", "/api/v1/servers", &Value::Null).await?;
                let id = list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["name"] == name)
                    .and_then(|s| s["id"].as_str())
                    .context("409 for a server the list does not have")?
                    .to_owned();
                (status, reply) = self.rest("PUT", &format!("/api/v1/servers/{id}"), &body).await?;
                status = if status == 200 { 201 } else { status };
            }
            if status != 201 {
                bail!("registering {name}: HTTP {status}: {reply}");
            }
            let id = reply["id"].as_str().context("registration reply without id")?.to_owned();
            self.ids.push((name, id));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let routes = get_json(self.admin, "/routes").await?;
            let names: Vec<&str> = routes["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["name"].as_str())
                .collect();
            if servers.iter().all(|(n, _, _)| names.contains(n)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the proxy does not route the benchmark servers: {routes}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates an API key through REST and waits until the proxy accepts it. `None` when the control
    /// plane has no API keys (404).
    async fn create_api_key(&self) -> Result<Option<String>> {
        let (status, reply) = self.rest("POST", "/api/v1/api-keys", &json!({"name": "mcpgw-bench"})).await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 201 {
            bail!("creating an API key: HTTP {status}: {reply}");
        }
        let key = reply["key"].as_str().context("API key reply without key")?.to_owned();
        self.wait_accepted("API key", &key).await?;
        Ok(Some(key))
    }

    /// The full policy path: a custom role (one rule), an API key holding it and narrowed by its own
    /// permissions to `bench`'s `echo`, and a local rate limit on every API key's calls to `bench` far above
    /// what the benchmark reaches (so it is checked on each call and never refuses one). The anonymous
    /// baseline is not an API key, so the limit does not touch it. `None` when the control plane has no
    /// roles or rate limits (404).
    async fn create_policy_key(&self) -> Result<Option<String>> {
        let role =
            json!({"name": "bench-caller", "rules": [{"server": "bench*", "tools": ["echo", "stream"]}]});
        let limit =
            json!({"scope": "api_key", "match": {"server": "bench"}, "requests": 1_000_000, "per": "1s"});
        for (path, body) in [("/api/v1/roles", role), ("/api/v1/rate-limits", limit)] {
            let (status, reply) = self.rest("POST", path, &body).await?;
            if status == 404 {
                return Ok(None);
            }
            if status != 201 {
                bail!("POST {path}: HTTP {status}: {reply}");
            }
        }
        let key = json!({"name": "mcpgw-bench-policy", "role": "bench-caller",
            "permissions": [{"server": "bench", "tools": ["echo"]}]});
        let (status, reply) = self.rest("POST", "/api/v1/api-keys", &key).await?;
        if status != 201 {
            bail!("creating the policy API key: HTTP {status}: {reply}");
        }
        let key = reply["key"].as_str().context("API key reply without key")?.to_owned();
        self.wait_accepted("policy API key", &key).await?;
        Ok(Some(key))
    }

    /// Starts the benchmark's own issuer, registers it as trusted through REST, signs a token for
    /// `bench` (audience: the proxy's resource URL, by default `http://<--listen>/mcp/bench`) and waits
    /// until the proxy accepts it.
    async fn trust_issuer(&self) -> Result<(Issuer, String)> {
        let mut seed = [0u8; 32];
        let hex = random_hex(32);
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
        }
        let issuer = Issuer::start(seed).await?;
        let body = json!({"issuer": issuer.url, "jwks_uri": issuer.jwks_uri, "algorithms": ["EdDSA"]});
        let (status, reply) = self.rest("POST", "/api/v1/trusted-issuers", &body).await?;
        if status != 201 {
            bail!("registering a trusted issuer: HTTP {status}: {reply}");
        }
        let jwt = issuer.token(&format!("http://{}/mcp/bench", self.proxy_addr))?;
        self.wait_accepted("JWT", &jwt).await?;
        Ok((issuer, jwt))
    }

    /// Waits until a stateless call to `bench` with `credential` as its bearer token succeeds through the
    /// proxy (a credential the proxy does not know yet is refused, never taken as anonymous).
    async fn wait_accepted(&self, what: &str, credential: &str) -> Result<()> {
        let ep = Endpoint::new(self.proxy_addr, "/mcp/bench").with_bearer(credential);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut conn = Conn::connect(self.proxy_addr).await?;
            let resp = conn.request(&ep.stateless_echo()).await?;
            if (200..300).contains(&resp.head.status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the proxy does not accept the {what}: HTTP {}: {}",
                    resp.head.status,
                    String::from_utf8_lossy(&resp.body)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A REST call to the control plane with the admin token.
    pub async fn rest(&self, method: &str, path: &str, body: &Value) -> Result<(u16, Value)> {
        let mut conn = Conn::connect(self.api).await?;
        rest_on(&mut conn, self.api, &self.token, method, path, body).await
    }

    pub fn id(&self, name: &str) -> Option<&str> {
        self.ids.iter().find(|(n, _)| *n == name).map(|(_, id)| id.as_str())
    }

    /// The fixture endpoint of `server` reached directly, through the proxy, and through nginx (which
    /// only proxies the main fixture's servers).
    pub fn endpoints(&self, server: &str) -> Vec<(Via, Endpoint)> {
        let servers = self.servers();
        let (upstream, path) = servers
            .iter()
            .find(|(n, _, _)| *n == server)
            .map_or((self.fixture_addr, "/mcp"), |(_, a, p)| (*a, *p));
        let mut out = vec![
            (Via::Direct, Endpoint::new(upstream, path)),
            (Via::Proxy, Endpoint::new(self.proxy_addr, format!("/mcp/{server}"))),
        ];
        if let Some((_, addr)) = &self.nginx
            && upstream == self.fixture_addr
        {
            out.push((Via::Nginx, Endpoint::new(*addr, format!("/mcp/{server}"))));
        }
        out
    }

    /// Fails when a child has died.
    pub fn check_alive(&mut self) -> Result<()> {
        self.fixture.check_alive()?;
        if let Some((fixture, _)) = &mut self.closing_fixture {
            fixture.check_alive()?;
        }
        self.control_plane.check_alive()?;
        self.proxy.check_alive()?;
        for (proxy, _) in [&mut self.unaudited, &mut self.traced, &mut self.base].into_iter().flatten() {
            proxy.check_alive()?;
        }
        if let Some((nginx, _)) = &mut self.nginx {
            nginx.check_alive()?;
        }
        Ok(())
    }

    pub async fn stop(self) {
        if let Some((nginx, _)) = self.nginx {
            nginx.stop().await;
        }
        self.proxy.stop().await;
        for (proxy, _) in [self.unaudited, self.traced, self.base].into_iter().flatten() {
            proxy.stop().await;
        }
        self.control_plane.stop().await;
        self.fixture.stop().await;
        if let Some((fixture, _)) = self.closing_fixture {
            fixture.stop().await;
        }
    }
}

/// How a request reaches the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Direct,
    Proxy,
    Nginx,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Proxy => "proxy",
            Self::Nginx => "nginx",
        }
    }
}

/// A REST call on an open connection.
pub async fn rest_on(
    conn: &mut Conn,
    api: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    // Every `/api/v1` route, reads included, needs the admin credential; a GET carries no body.
    let body = if method == "GET" { String::new() } else { body.to_string() };
    let request = Endpoint::json(api, method, path, token, &body);
    let resp = conn.request(&request).await?;
    let value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    Ok((resp.head.status, value))
}

/// `GET path` on `addr` as JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<Value> {
    let mut conn = Conn::connect(addr).await?;
    let resp = conn.request(&Endpoint::get(addr, path)).await?;
    serde_json::from_slice(&resp.body).with_context(|| format!("GET {path}: not JSON"))
}

/// The routing table version the proxy serves (`/readyz`), on an open admin connection.
pub async fn proxy_version(conn: &mut Conn, admin: SocketAddr) -> Result<u64> {
    let resp = conn.request(&Endpoint::get(admin, "/readyz")).await?;
    let value: Value = serde_json::from_slice(&resp.body)?;
    value["version"].as_u64().context("readyz without a version")
}

/// The value of an unlabelled gauge on the proxy's `/metrics`.
pub async fn proxy_gauge(admin: SocketAddr, name: &str) -> Result<f64> {
    let mut conn = Conn::connect(admin).await?;
    let resp = conn.request(&Endpoint::get(admin, "/metrics")).await?;
    let text = String::from_utf8_lossy(&resp.body);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}
