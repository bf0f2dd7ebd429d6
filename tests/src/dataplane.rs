//! Harness pieces for the data-plane tests: Python instances that can be killed and restarted on their
//! port, servers registered with several instances, proxy replicas sharing a session key, readers for
//! `/routes` and `/metrics`, the TS SDK v2 client, a raw HTTP+SSE (2024-11-05) client, and POSTs whose
//! response can be cut by the client at any moment.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mcp::McpHttp;
use crate::peers::{PyServerOpts, START_TIMEOUT, peers_dir};
use crate::process::Spawned;
use crate::sse::{SseEvent, SseParser};
use crate::{ADMIN_TOKEN, ControlPlane, Proxy, TestDb, free_port, localhost, poll_until, wait_for_tcp};

/// A session key (`--session-key`) shared by the replicas of a test.
pub const SESSION_KEY: &str = "rsShvvmFfZNTnQKWEmsHlWtVWnglv/HxC1vdMDrjHYA=";
/// Another deployment's key: tokens sealed with one must not open with the other.
pub const OTHER_SESSION_KEY: &str = "MzCUQZ1bFIVDFXNCwriu5vDpVa/E7XyHroYvFYZqVoE=";

/// How long a routing change may take to reach a proxy in these tests.
pub const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

fn require(path: PathBuf) -> Result<PathBuf> {
    if !path.exists() {
        bail!("{} is missing: run tests/peers/install.sh (scripts/test.sh does)", path.display());
    }
    Ok(path)
}

/// `tests/peers/py_server.py` on a port it keeps: it can be killed (SIGKILL, like a crash) and started
/// again on the same port, so the registered endpoint comes back.
pub struct PyInstance {
    name: String,
    opts: PyServerOpts,
    port: u16,
    proc: Option<Spawned>,
}

impl PyInstance {
    /// Starts `py_server.py --name <name>` on a free port (another one if it loses the race for it).
    pub async fn start(name: &str, opts: PyServerOpts) -> Result<Self> {
        let mut last = None;
        for _ in 0..4 {
            let mut instance = Self { name: name.to_owned(), opts, port: free_port()?, proc: None };
            match instance.launch().await {
                Ok(()) => return Ok(instance),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("py_server {name} did not start")))
    }

    async fn launch(&mut self) -> Result<()> {
        let python = require(peers_dir().join(".venv").join("bin").join("python"))?;
        let script = require(peers_dir().join("py_server.py"))?;
        let mut cmd = Command::new(python);
        cmd.arg(script).arg("--port").arg(self.port.to_string()).arg("--name").arg(&self.name);
        if self.opts.stateless {
            cmd.arg("--stateless");
        }
        if self.opts.json_response {
            cmd.arg("--json-response");
        }
        let mut proc = Spawned::spawn(&format!("py-server-{}", self.name), cmd)?;
        let up = wait_for_tcp(localhost(self.port), START_TIMEOUT).await;
        if let Some(status) = proc.exited() {
            bail!("py_server {} exited with {status}\n{}", self.name, proc.describe());
        }
        up.with_context(|| proc.describe())?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGKILL: the process dies at once, its connections are reset, its sessions are gone.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut proc) = self.proc.take() {
            proc.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port (after [`Self::kill`]); retries briefly while the port is busy.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
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

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// What its `whoami` tool answers (and its `serverInfo.name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Log location and tail.
    pub fn describe(&self) -> String {
        self.proc
            .as_ref()
            .map(Spawned::describe)
            .unwrap_or_else(|| format!("py_server {}: stopped", self.name))
    }
}

/// A server as the control plane registered it.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Server id.
    pub id: String,
    /// Server name (the `/mcp/{name}` path segment).
    pub name: String,
    /// `(instance id, endpoint URL)` in registration order.
    pub instances: Vec<(String, String)>,
}

impl Registered {
    /// The id of the instance with this endpoint URL.
    pub fn instance_id(&self, endpoint_url: &str) -> Option<&str> {
        self.instances.iter().find(|(_, url)| url == endpoint_url).map(|(id, _)| id.as_str())
    }
}

/// `POST /api/v1/servers` with `body` (any registration document: `instances`, `load_balancing`,
/// `hash_key`, `circuit_breaker`...); fails unless 201.
pub async fn register(cp: &ControlPlane, body: Value) -> Result<Registered> {
    let (status, resp) = cp.api(reqwest::Method::POST, "/api/v1/servers", Some(body.clone())).await?;
    if status != 201 {
        bail!("register {body}: expected 201, got {status}: {resp}\n{}", cp.describe());
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let instances = resp["instances"]
        .as_array()
        .with_context(|| format!("no instances in {resp}"))?
        .iter()
        .map(|i| Some((text(&i["id"])?, i["endpoint_url"].as_str()?.to_owned())))
        .collect::<Option<Vec<_>>>()
        .with_context(|| format!("instances without id or endpoint_url in {resp}"))?;
    Ok(Registered {
        id: text(&resp["id"]).with_context(|| format!("no id in {resp}"))?,
        name: resp["name"].as_str().context("no name")?.to_owned(),
        instances,
    })
}

/// A registration document for `name` with one instance per `(endpoint_url, weight)`.
pub fn instances_body(name: &str, instances: &[(&str, u32)]) -> Value {
    let list: Vec<Value> =
        instances.iter().map(|(url, weight)| json!({"endpoint_url": url, "weight": weight})).collect();
    json!({"name": name, "instances": list})
}

/// The server `name` in a `/routes` document.
pub fn route<'a>(routes: &'a Value, name: &str) -> Option<&'a Value> {
    routes["servers"].as_array()?.iter().find(|s| s["name"].as_str() == Some(name))
}

/// The instance `id` of server `name` in a `/routes` document.
pub fn route_instance<'a>(routes: &'a Value, name: &str, id: &str) -> Option<&'a Value> {
    route(routes, name)?["instances"].as_array()?.iter().find(|i| i["id"].as_str() == Some(id))
}

/// Polls the proxy's `/routes` until server `name` has exactly `count` instances.
pub async fn wait_instances(proxy: &Proxy, name: &str, count: usize) -> Result<()> {
    poll_until(&format!("{count} instances of {name} in /routes"), PROPAGATION_TIMEOUT, || async {
        let routes = proxy.routes().await?;
        let n = route(&routes, name).and_then(|s| s["instances"].as_array()).map_or(0, Vec::len);
        Ok((n == count).then_some(()))
    })
    .await
    .with_context(|| proxy.describe())
}

/// A control plane, proxy replicas fed by it, and named Python instances. Fields drop in declaration
/// order: proxies, control plane, database, instances.
pub struct Fleet {
    /// The replicas, in the order of their arguments.
    pub proxies: Vec<Proxy>,
    /// The control plane.
    pub cp: ControlPlane,
    /// Its database.
    pub db: TestDb,
    /// `py_server.py` instances, in the order of their names.
    pub instances: Vec<PyInstance>,
}

impl Fleet {
    /// Two replicas sharing [`SESSION_KEY`] and one Python instance per name.
    pub async fn start(names: &[&str]) -> Result<Self> {
        let key: &[&str] = &["--session-key", SESSION_KEY];
        Self::start_with(names, &[key, key]).await
    }

    /// One replica per argument list and one Python instance per name, all started concurrently.
    pub async fn start_with(names: &[&str], replicas: &[&[&str]]) -> Result<Self> {
        let db = TestDb::new();
        let planes = async {
            let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
            let grpc = cp.grpc_url();
            let proxies =
                futures_util::future::try_join_all(replicas.iter().map(|args| Proxy::start(&grpc, args)))
                    .await?;
            anyhow::Ok((cp, proxies))
        };
        let instances = futures_util::future::try_join_all(
            names.iter().map(|name| PyInstance::start(name, PyServerOpts::default())),
        );
        let ((cp, proxies), instances) = tokio::try_join!(planes, instances)?;
        Ok(Self { proxies, cp, db, instances })
    }

    /// The instance named `name`.
    pub fn instance(&self, name: &str) -> &PyInstance {
        self.instances.iter().find(|i| i.name() == name).unwrap_or_else(|| panic!("no instance {name}"))
    }

    /// The instance named `name`, mutable (to kill or restart it).
    pub fn instance_mut(&mut self, name: &str) -> &mut PyInstance {
        self.instances.iter_mut().find(|i| i.name() == name).unwrap_or_else(|| panic!("no instance {name}"))
    }

    /// A registration of `name` with every instance, weighted by `weights` in order (1 when missing).
    pub fn instances_body(&self, name: &str, weights: &[u32]) -> Value {
        let urls: Vec<String> = self.instances.iter().map(PyInstance::url).collect();
        let pairs: Vec<(&str, u32)> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), weights.get(i).copied().unwrap_or(1)))
            .collect();
        instances_body(name, &pairs)
    }

    /// Registers `body` and waits until every replica routes all its instances, healthy.
    pub async fn register(&self, body: Value) -> Result<Registered> {
        let registered = register(&self.cp, body).await?;
        for proxy in &self.proxies {
            wait_instances(proxy, &registered.name, registered.instances.len()).await?;
            wait_healthy(proxy, &registered.name).await?;
        }
        Ok(registered)
    }

    /// `/mcp/{name}` on every replica, in order.
    pub fn urls(&self, name: &str) -> Vec<String> {
        self.proxies.iter().map(|p| p.url(name)).collect()
    }
}

/// A legacy (initialize) session used through several replicas: one raw client per replica URL, all
/// sending the same `Mcp-Session-Id` token.
pub struct ReplicatedSession {
    /// One client per replica, in the order of the URLs.
    pub clients: Vec<McpHttp>,
    /// The instance holding the session: `serverInfo.name` of the `initialize` result.
    pub instance: String,
    /// The sealed `Mcp-Session-Id` the proxy gave the client.
    pub token: String,
}

impl ReplicatedSession {
    /// Initializes through `urls[first]` (with `headers` on every request) and prepares a client for
    /// every other URL with the same session.
    pub async fn open(urls: &[String], first: usize, headers: &[(String, String)]) -> Result<Self> {
        let mut clients: Vec<McpHttp> = urls
            .iter()
            .map(|u| {
                let mut c = McpHttp::new(u);
                c.extra_headers = headers.to_vec();
                c
            })
            .collect();
        let init = clients[first]
            .initialize()
            .await
            .with_context(|| format!("initialize through {}", urls[first]))?;
        let token =
            init.session_id.clone().with_context(|| format!("no Mcp-Session-Id from {}", urls[first]))?;
        let instance = init.result["serverInfo"]["name"]
            .as_str()
            .with_context(|| format!("no serverInfo.name in {}", init.result))?
            .to_owned();
        for c in &mut clients {
            c.session_id = Some(token.clone());
            c.protocol_version = Some(init.protocol_version.clone());
        }
        Ok(Self { clients, instance, token })
    }

    /// Initializes a new session through `urls[replica]` (after a 404), replacing this one.
    pub async fn reinitialize(&mut self, replica: usize) -> Result<()> {
        let urls: Vec<String> = self.clients.iter().map(|c| c.url().to_owned()).collect();
        let headers = self.clients[replica].extra_headers.clone();
        *self = Self::open(&urls, replica, &headers).await?;
        Ok(())
    }

    /// `tools/call whoami` through replica `replica`: the HTTP status and the JSON-RPC message (result or
    /// error) answering it.
    pub async fn whoami(&self, replica: usize) -> Result<(StatusCode, Value)> {
        let client = &self.clients[replica];
        let id = client.next_id();
        let resp = client
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                           "params": {"name": "whoami", "arguments": {}}}))
            .await?;
        let message = resp.response_for(&id).unwrap_or_else(|| json!({"body": resp.text()}));
        Ok((resp.status, message))
    }

    /// `whoami` through replica `replica`, which must succeed; returns the instance name it reports.
    pub async fn instance_via(&self, replica: usize) -> Result<String> {
        let (status, message) = self.whoami(replica).await?;
        match message.pointer("/result/content/0/text").and_then(Value::as_str) {
            Some(name) if status == StatusCode::OK => Ok(name.to_owned()),
            _ => bail!("whoami through {}: status {status}: {message}", self.clients[replica].url()),
        }
    }
}

/// Whether a `Mcp-Session-Id` looks like a proxy token rather than a Python SDK session id (32 hex
/// digits) or a UUID: base64url, visible ASCII, longer than either.
pub fn looks_sealed(token: &str) -> bool {
    token.len() > 40
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Polls the proxy's `/routes` until every instance of server `name` is `healthy`: the control plane's
/// first active checks have been applied, so no health update rebuilds the table (and restarts the
/// balancing rotation) in the middle of a measurement.
pub async fn wait_healthy(proxy: &Proxy, name: &str) -> Result<()> {
    poll_until(&format!("every instance of {name} healthy in /routes"), HEALTH_TIMEOUT, || async {
        let routes = proxy.routes().await?;
        let healthy = route(&routes, name).and_then(|s| s["instances"].as_array()).is_some_and(|list| {
            !list.is_empty() && list.iter().all(|i| i["health"].as_str() == Some("healthy"))
        });
        Ok(healthy.then_some(()))
    })
    .await
    .with_context(|| proxy.describe())
}

/// How long the control plane's first health checks may take to reach a proxy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Value of the Prometheus sample `name{labels...}` (every given label must match) in `/metrics` text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric_name != name {
            return None;
        }
        let body = rest.strip_suffix('}')?;
        let matches = labels.iter().all(|(k, v)| body.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        if matches { value.parse().ok() } else { None }
    })
}

/// Runs `tests/peers/ts_client.mjs URL --mode MODE ACTION...` (the TS SDK v2 client) and returns its JSON
/// document. `mode`: `legacy` (the SDK default), `auto`, a pin such as `2026-07-28`, or `sse` (HTTP+SSE);
/// actions: `["list-tools"]`, `["call", NAME, JSON]`.
pub async fn ts_client(url: &str, mode: &str, action: &[&str]) -> Result<Value> {
    let dir = peers_dir();
    require(dir.join("node_modules/@modelcontextprotocol/client/package.json"))?;
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg(require(dir.join("ts_client.mjs"))?)
        .arg(url)
        .arg("--mode")
        .arg(mode)
        .args(action);
    crate::peers::run_json("ts-client", cmd).await
}

/// What a [`CuttablePost`] has seen so far.
#[derive(Debug)]
pub enum PostEvent {
    /// Response headers.
    Head(StatusCode, HeaderMap),
    /// One SSE event of a `text/event-stream` body.
    Event(SseEvent),
    /// The whole body of any other response.
    Body(Bytes),
    /// The response ended (or failed: the text says how).
    End(Option<String>),
}

/// A POST running in the background whose response the client can abandon at any moment (closing the
/// connection, as a client that goes away does), even before the response headers arrived.
pub struct CuttablePost {
    rx: mpsc::UnboundedReceiver<PostEvent>,
    task: Option<JoinHandle<()>>,
}

impl CuttablePost {
    /// Sends `body` to `url` with the MCP `Accept` and `Content-Type` headers plus `headers`.
    pub fn send(url: &str, headers: &[(String, String)], body: &Value) -> Self {
        let mut req = crate::http_client()
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    let _ = tx.send(PostEvent::End(Some(format!("send: {e}"))));
                    return;
                }
            };
            let sse = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let _ = tx.send(PostEvent::Head(resp.status(), resp.headers().clone()));
            let mut parser = SseParser::default();
            let mut body = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) if sse => {
                        for event in parser.feed(&chunk, Instant::now()) {
                            let _ = tx.send(PostEvent::Event(event));
                        }
                    }
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) => {
                        if !sse {
                            let _ = tx.send(PostEvent::Body(Bytes::from(body)));
                        }
                        let _ = tx.send(PostEvent::End(None));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(PostEvent::End(Some(format!("read: {e}"))));
                        return;
                    }
                }
            }
        });
        Self { rx, task: Some(task) }
    }

    /// The next thing seen, or `None` if nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<PostEvent> {
        tokio::time::timeout(timeout, self.rx.recv()).await.ok().flatten()
    }

    /// Closes the connection from the client side (also done on drop).
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for CuttablePost {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A raw client of the deprecated HTTP+SSE transport (2024-11-05): `GET` the SSE endpoint, read the
/// `endpoint` event, `POST` every message there, read every answer from the stream.
pub struct LegacySseClient {
    http: reqwest::Client,
    /// Absolute URL the `endpoint` event named.
    pub endpoint: String,
    /// The `endpoint` event's data as sent.
    pub endpoint_data: String,
    rx: mpsc::UnboundedReceiver<SseEvent>,
    reader: JoinHandle<()>,
    next_id: i64,
    /// `Authorization: Bearer` of every request, when given.
    bearer: Option<String>,
}

/// How long the raw clients wait for one answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

impl LegacySseClient {
    /// Opens the SSE stream at `sse_url` and waits for its `endpoint` event.
    pub async fn connect(sse_url: &str) -> Result<Self> {
        Self::connect_as(sse_url, None).await
    }

    /// [`LegacySseClient::connect`] presenting `bearer` (an API key or a token) on every request.
    pub async fn connect_as(sse_url: &str, bearer: Option<&str>) -> Result<Self> {
        let http = crate::http_client();
        let mut get = http.get(sse_url).header("Accept", "text/event-stream");
        if let Some(bearer) = bearer {
            get = get.bearer_auth(bearer);
        }
        let resp = get.send().await.with_context(|| format!("GET {sse_url}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = resp.text().await.unwrap_or_default();
            bail!("GET {sse_url}: status {status}: {body}");
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut resp = resp;
            let mut parser = SseParser::default();
            while let Ok(Some(chunk)) = resp.chunk().await {
                for event in parser.feed(&chunk, Instant::now()) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        let first = tokio::time::timeout(ANSWER_TIMEOUT, rx.recv())
            .await
            .with_context(|| format!("no event on {sse_url} within {ANSWER_TIMEOUT:?}"))?
            .with_context(|| format!("{sse_url} ended before its endpoint event"))?;
        if first.event.as_deref() != Some("endpoint") {
            bail!("first event on {sse_url} is not `endpoint`: {first:?}");
        }
        let endpoint = reqwest::Url::parse(sse_url)?.join(&first.data)?.to_string();
        let bearer = bearer.map(str::to_owned);
        Ok(Self { http, endpoint, endpoint_data: first.data, rx, reader, next_id: 1, bearer })
    }

    /// POSTs one message to the endpoint; returns the status and body of the POST itself.
    pub async fn post(&self, message: &Value) -> Result<(StatusCode, String)> {
        self.post_to(&self.endpoint, message).await
    }

    /// POSTs one message to another message URL (for forged session ids).
    pub async fn post_to(&self, url: &str, message: &Value) -> Result<(StatusCode, String)> {
        let resp = tokio::time::timeout(ANSWER_TIMEOUT, {
            let post = self.http.post(url).header("Content-Type", "application/json");
            match &self.bearer {
                Some(bearer) => post.bearer_auth(bearer),
                None => post,
            }
            .body(message.to_string())
            .send()
        })
        .await
        .with_context(|| format!("POST {url}: no answer within {ANSWER_TIMEOUT:?}"))??;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// A request: POST it, then wait for the JSON-RPC response with its id on the stream.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = json!(self.next_id);
        self.next_id += 1;
        let (status, body) =
            self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        if !status.is_success() {
            bail!("POST {method} to {}: status {status}: {body}", self.endpoint);
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, self.rx.recv())
                .await
                .with_context(|| {
                    format!("{method}: no response on the SSE stream within {ANSWER_TIMEOUT:?}")
                })?
                .with_context(|| format!("{method}: the SSE stream ended"))?;
            if let Some(message) = event.json()
                && message.get("id") == Some(&id)
            {
                return Ok(message);
            }
        }
    }

    /// `initialize` (2024-11-05) and `notifications/initialized`; returns the initialize result.
    pub async fn initialize(&mut self) -> Result<Value> {
        let response = self
            .request(
                "initialize",
                json!({"protocolVersion": "2024-11-05", "capabilities": {},
                       "clientInfo": {"name": "mcpgw-e2e-sse", "version": "0.0.0"}}),
            )
            .await?;
        let result = response.get("result").cloned().with_context(|| format!("initialize: {response}"))?;
        let (status, body) =
            self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        if !status.is_success() {
            bail!("notifications/initialized: status {status}: {body}");
        }
        Ok(result)
    }

    /// `tools/call`; returns the result or fails with the JSON-RPC error.
    pub async fn call_tool(&mut self, name: &str, arguments: Value) -> Result<Value> {
        let response = self.request("tools/call", json!({"name": name, "arguments": arguments})).await?;
        response.get("result").cloned().with_context(|| format!("tools/call {name}: {response}"))
    }
}

impl Drop for LegacySseClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A deterministic pseudo-random ASCII text of `len` bytes (letters, digits, punctuation and spaces), so
/// that lost, duplicated or reordered chunks of a large body cannot go unnoticed.
pub fn pseudo_random_text(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,;:-_!?()[]{}<>/|+=*&%$#@~";
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_samples() {
        let text = "# HELP x y\nmcpgw_proxy_breaker_state{server=\"s\",instance=\"i1\"} 1\n\
                    mcpgw_proxy_breaker_state{server=\"s\",instance=\"i2\"} 0\nplain 7\n";
        assert_eq!(metric(text, "mcpgw_proxy_breaker_state", &[("instance", "i1")]), Some(1.0));
        assert_eq!(
            metric(text, "mcpgw_proxy_breaker_state", &[("server", "s"), ("instance", "i2")]),
            Some(0.0)
        );
        assert_eq!(metric(text, "mcpgw_proxy_breaker_state", &[("instance", "i3")]), None);
        assert_eq!(metric(text, "plain", &[]), Some(7.0));
    }

    #[test]
    fn pseudo_random_text_is_stable_ascii() {
        let a = pseudo_random_text(1000, 7);
        assert_eq!(a, pseudo_random_text(1000, 7));
        assert_ne!(a, pseudo_random_text(1000, 8));
        assert!(a.is_ascii() && a.len() == 1000);
    }
}
