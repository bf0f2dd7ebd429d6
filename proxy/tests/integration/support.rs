//! Builder-style fakes for the proxy's neighbours, and the proxy process under test.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use mcpgw_proto::v1::routing_discovery_server::{RoutingDiscovery, RoutingDiscoveryServer};
use mcpgw_proto::v1::{
    ApiKey, CircuitBreaker, HealthStatus, Instance, InstanceHealth, LoadBalancing, ProxyMessage, Resource,
    RoutingUpdate, Server, Transport, proxy_message, resource::Kind,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

#[path = "../../../tests/src/ports.rs"]
mod ports;

pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

pub fn server(id: &str, name: &str) -> Resource {
    Resource {
        kind: Some(Kind::Server(Server {
            id: id.into(),
            name: name.into(),
            transport: Transport::StreamableHttp as i32,
            ..Default::default()
        })),
    }
}

pub fn instance(id: &str, server_id: &str, url: &str) -> Resource {
    Resource {
        kind: Some(Kind::Instance(Instance {
            id: id.into(),
            server_id: server_id.into(),
            endpoint_url: url.into(),
            weight: 1,
            ..Default::default()
        })),
    }
}

/// Builds routing snapshots with several instances, policies and health.
pub struct Table(RoutingUpdate);

impl Table {
    pub fn new(version: u64) -> Self {
        Self(RoutingUpdate { version, snapshot: true, ..Default::default() })
    }

    pub fn server(mut self, name: &str, transport: Transport, lb: LoadBalancing, hash_key: &str) -> Self {
        self.0.upserts.push(Resource {
            kind: Some(Kind::Server(Server {
                id: format!("id-{name}"),
                name: name.into(),
                transport: transport as i32,
                load_balancing: lb as i32,
                hash_key: hash_key.into(),
                circuit_breaker: Some(CircuitBreaker {
                    consecutive_failures: 3,
                    open_ms: 300,
                    max_open_ms: 300,
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
        self
    }

    pub fn instance(mut self, server: &str, id: &str, url: &str, weight: u32) -> Self {
        self.0.upserts.push(Resource {
            kind: Some(Kind::Instance(Instance {
                id: id.into(),
                server_id: format!("id-{server}"),
                endpoint_url: url.into(),
                weight,
                ..Default::default()
            })),
        });
        self
    }

    /// A stdio instance running `program args…` with exactly `env` (plus PATH).
    pub fn stdio_instance(
        mut self,
        server: &str,
        id: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        self.0.upserts.push(Resource {
            kind: Some(Kind::Instance(Instance {
                id: id.into(),
                server_id: format!("id-{server}"),
                endpoint_url: format!("stdio:{program}"),
                weight: 1,
                command: Some(mcpgw_proto::v1::StdioCommand {
                    program: program.into(),
                    args: args.iter().map(|a| a.to_string()).collect(),
                    env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    working_directory: String::new(),
                }),
                ..Default::default()
            })),
        });
        self
    }

    pub fn health(mut self, instance: &str, status: HealthStatus) -> Self {
        self.0.upserts.push(Resource {
            kind: Some(Kind::InstanceHealth(InstanceHealth {
                instance_id: instance.into(),
                status: status as i32,
            })),
        });
        self
    }

    pub fn build(self) -> RoutingUpdate {
        self.0
    }
}

/// An API key resource for the secret `key` (`mcpgw_…`), in `tenant`, expiring at `expires_at_unix`
/// (0: never).
pub fn api_key(id: &str, key: &str, tenant: &str, expires_at_unix: i64) -> Resource {
    Resource {
        kind: Some(Kind::ApiKey(ApiKey {
            id: id.into(),
            digest: mcpgw_proto::validate::api_key_digest(key).to_vec(),
            name: id.into(),
            tenant_id: tenant.into(),
            roles: vec!["user".into()],
            expires_at_unix,
            ..Default::default()
        })),
    }
}

/// A key the forwarding tests' snapshots accept (see [`snapshot`]).
pub const TEST_KEY: &str = "mcpgw_integration-test-key";

/// A server `name` with one instance at `url`, plus the API key [`TEST_KEY`], as a full snapshot at
/// `version`.
pub fn snapshot(version: u64, routes: &[(&str, &str)]) -> RoutingUpdate {
    let mut upserts = Vec::new();
    for (name, url) in routes {
        upserts.push(server(&format!("id-{name}"), name));
        upserts.push(instance(&format!("inst-{name}"), &format!("id-{name}"), url));
    }
    upserts.push(api_key("test-key", TEST_KEY, "default", 0));
    RoutingUpdate { version, snapshot: true, base_version: 0, upserts, removals: vec![] }
}

type UpdateTx = mpsc::Sender<Result<RoutingUpdate, Status>>;

/// A token exchange a proxy asked for: subject token, audience, scopes.
pub type Exchange = (String, String, Vec<String>);

#[derive(Clone, Default)]
struct Discovery {
    streams: Arc<Mutex<Vec<UpdateTx>>>,
    inbound: Arc<Mutex<Option<mpsc::UnboundedSender<ProxyMessage>>>>,
    connected: Arc<tokio::sync::Notify>,
    /// Token exchanges asked for.
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    /// `RegisterServer` calls: (subject token, server JSON).
    registrations: Arc<Mutex<Vec<(String, String)>>>,
    /// Tokens left in the one shared bucket global rate limits lease from; `None`: leasing fails
    /// (UNAVAILABLE), as when the control plane's Redis is away.
    budget: Arc<Mutex<Option<u32>>>,
    /// Audit records acknowledged, in the order received (a resent one appears again).
    audit: Arc<Mutex<Vec<mcpgw_proto::v1::AuditRecord>>>,
    /// Whether audit streams are refused (UNAVAILABLE), as when the database is away.
    audit_refused: Arc<std::sync::atomic::AtomicBool>,
    audit_arrived: Arc<tokio::sync::Notify>,
}

/// The subject a fake control plane refuses to exchange.
pub const UNEXCHANGEABLE: &str = "mcpgw_unexchangeable-key";

#[tonic::async_trait]
impl RoutingDiscovery for Discovery {
    type StreamRoutesStream = Pin<Box<dyn Stream<Item = Result<RoutingUpdate, Status>> + Send>>;
    type StreamAuditStream = Pin<Box<dyn Stream<Item = Result<mcpgw_proto::v1::AuditAck, Status>> + Send>>;

    /// Acknowledges every batch after keeping its records; refuses while `audit_refused` is set.
    async fn stream_audit(
        &self,
        request: Request<Streaming<mcpgw_proto::v1::AuditBatch>>,
    ) -> Result<Response<Self::StreamAuditStream>, Status> {
        use std::sync::atomic::Ordering;
        if self.audit_refused.load(Ordering::SeqCst) {
            return Err(Status::unavailable("the database is away"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (records, refused, arrived) =
            (self.audit.clone(), self.audit_refused.clone(), self.audit_arrived.clone());
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                if refused.load(Ordering::SeqCst) {
                    let _ = tx.send(Err(Status::unavailable("the database is away"))).await;
                    return;
                }
                let written = batch.records.len() as u32;
                records.lock().unwrap().extend(batch.records);
                arrived.notify_waiters();
                if tx.send(Ok(mcpgw_proto::v1::AuditAck { seq: batch.seq, written })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stream_routes(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::StreamRoutesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let sink = self.inbound.lock().unwrap().clone().expect("inbound channel");
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                let _ = sink.send(msg);
            }
        });
        self.streams.lock().unwrap().push(tx);
        self.connected.notify_waiters();
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Answers `exchanged-<n>-for-<audience>`, valid for an hour; refuses [`UNEXCHANGEABLE`].
    async fn exchange_token(
        &self,
        request: Request<mcpgw_proto::v1::ExchangeRequest>,
    ) -> Result<Response<mcpgw_proto::v1::ExchangeResponse>, Status> {
        let r = request.into_inner();
        if r.subject_token == UNEXCHANGEABLE {
            return Err(Status::permission_denied("not exchangeable"));
        }
        let mut seen = self.exchanges.lock().unwrap();
        seen.push((r.subject_token, r.audience.clone(), r.scopes));
        let expires_at_unix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
                + 3600;
        Ok(Response::new(mcpgw_proto::v1::ExchangeResponse {
            access_token: format!("exchanged-{}-for-{}", seen.len(), r.audience),
            expires_at_unix,
        }))
    }

    /// Records the registration and answers 201 with the body, or 403 for [`UNEXCHANGEABLE`].
    async fn register_server(
        &self,
        request: Request<mcpgw_proto::v1::RegisterServerRequest>,
    ) -> Result<Response<mcpgw_proto::v1::RegisterServerResponse>, Status> {
        let r = request.into_inner();
        let status = if r.subject_token == UNEXCHANGEABLE { 403 } else { 201 };
        self.registrations.lock().unwrap().push((r.subject_token, r.server_json.clone()));
        Ok(Response::new(mcpgw_proto::v1::RegisterServerResponse { status, body_json: r.server_json }))
    }

    /// Grants what is left of the shared budget, up to what was asked.
    async fn lease_budget(
        &self,
        request: Request<mcpgw_proto::v1::LeaseRequest>,
    ) -> Result<Response<mcpgw_proto::v1::LeaseResponse>, Status> {
        let wanted = request.into_inner().tokens;
        let mut budget = self.budget.lock().unwrap();
        let left = budget.as_mut().ok_or_else(|| Status::unavailable("Redis is away"))?;
        let granted = wanted.min(*left);
        *left -= granted;
        Ok(Response::new(mcpgw_proto::v1::LeaseResponse { granted, retry_after_ms: 60_000 }))
    }
}

/// A control plane that pushes whatever the test tells it to and records what proxies answer.
pub struct FakeControlPlane {
    pub addr: SocketAddr,
    discovery: Discovery,
    inbound: mpsc::UnboundedReceiver<ProxyMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeControlPlane {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind fake control plane");
        let addr = listener.local_addr().unwrap();
        let (tx, inbound) = mpsc::unbounded_channel();
        let discovery = Discovery::default();
        *discovery.inbound.lock().unwrap() = Some(tx);
        let svc = RoutingDiscoveryServer::new(discovery.clone());
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self { addr, discovery, inbound, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the tokens left for global rate limits to lease; `None` makes leasing fail.
    pub fn set_budget(&self, tokens: Option<u32>) {
        *self.discovery.budget.lock().unwrap() = tokens;
    }

    /// Audit records received so far.
    pub fn audit_records(&self) -> Vec<mcpgw_proto::v1::AuditRecord> {
        self.discovery.audit.lock().unwrap().clone()
    }

    /// Waits until at least `n` audit records arrived; returns them.
    pub async fn wait_audit(&self, n: usize) -> Vec<mcpgw_proto::v1::AuditRecord> {
        within(&format!("{n} audit records"), async {
            loop {
                let arrived = self.discovery.audit_arrived.notified();
                let records = self.audit_records();
                if records.len() >= n {
                    return records;
                }
                arrived.await;
            }
        })
        .await
    }

    /// Refuses audit streams (and ends open ones at their next batch) while `refused`.
    pub fn refuse_audit(&self, refused: bool) {
        self.discovery.audit_refused.store(refused, std::sync::atomic::Ordering::SeqCst);
    }

    /// The token exchanges proxies asked for so far: (subject token, audience, scopes).
    pub fn registrations(&self) -> Vec<(String, String)> {
        self.discovery.registrations.lock().unwrap().clone()
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.discovery.exchanges.lock().unwrap().clone()
    }

    /// Waits for a proxy stream, then sends `update` on the newest one.
    pub async fn push(&self, update: RoutingUpdate) {
        let tx = within("a proxy to connect", async {
            loop {
                let notified = self.discovery.connected.notified();
                if let Some(tx) = self.discovery.streams.lock().unwrap().last().cloned() {
                    break tx;
                }
                notified.await;
            }
        })
        .await;
        tx.send(Ok(update)).await.expect("proxy stream open");
    }

    /// The next message a proxy sent.
    pub async fn next_message(&mut self) -> proxy_message::Kind {
        within("a message from the proxy", self.inbound.recv())
            .await
            .expect("channel open")
            .kind
            .expect("kind")
    }

    /// Skips messages until an Ack or Nack arrives.
    pub async fn next_reply(&mut self) -> proxy_message::Kind {
        loop {
            match self.next_message().await {
                proxy_message::Kind::Hello(_)
                | proxy_message::Kind::PassiveHealth(_)
                | proxy_message::Kind::Stats(_) => continue,
                other => return other,
            }
        }
    }

    /// Skips messages until a passive-health report satisfying `pred` arrives.
    pub async fn passive_health(
        &mut self,
        pred: impl Fn(&mcpgw_proto::v1::PassiveHealth) -> bool,
    ) -> mcpgw_proto::v1::PassiveHealth {
        loop {
            if let proxy_message::Kind::PassiveHealth(report) = self.next_message().await
                && pred(&report)
            {
                return report;
            }
        }
    }

    /// Stops serving and drops every stream, as a crashed control plane would.
    pub fn stop(self) -> SocketAddr {
        self.task.abort();
        self.discovery.streams.lock().unwrap().clear();
        self.addr
    }
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the fake upstream answers one request.
pub enum Reply {
    /// 200 with this JSON body.
    Json(String),
    /// 200 `text/event-stream`; each `Some(event)` from the channel is written and flushed, `None` ends it.
    Sse(mpsc::Receiver<Option<String>>),
    /// Read the request, never answer.
    Hang,
    /// 401 with a challenge naming the upstream's own authorization server.
    Unauthorized,
    /// This status with an empty body.
    Status(u16),
    /// The reply to the next GET (POSTs and DELETEs skip it).
    ForGet(Box<Reply>),
    /// The default JSON-RPC result, after this long.
    Slow(Duration),
}

/// What the fake upstream saw of a streamed response's end.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The proxy closed the connection while the stream was open.
    ClosedByProxy,
    /// The stream was written to its end.
    Completed,
}

/// A hand-written HTTP/1.1 upstream: records requests, answers from a queue (default: a JSON-RPC result).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// The `Mcp-Session-Id` this upstream hands out (unique per upstream).
    pub session_id: String,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    pub requests: mpsc::UnboundedReceiver<Recorded>,
    pub stream_ends: mpsc::UnboundedReceiver<StreamEnd>,
}

impl FakeUpstream {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let session_id = format!("upstream-{}", addr.port());
        let replies: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (end_tx, stream_ends) = mpsc::unbounded_channel();
        let queue = replies.clone();
        let sid = session_id.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_conn(conn, queue.clone(), req_tx.clone(), end_tx.clone(), sid.clone()));
            }
        });
        Self { addr, session_id, replies, requests, stream_ends }
    }

    pub fn clear_replies(&self) {
        self.replies.lock().unwrap().clear();
    }

    /// Requests received so far that nobody looked at.
    pub fn drain(&mut self) -> Vec<Recorded> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }

    pub fn url(&self) -> String {
        format!("http://{}/upstream/mcp", self.addr)
    }

    pub fn reply(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    pub async fn next_request(&mut self) -> Recorded {
        within("a request at the upstream", self.requests.recv()).await.expect("upstream running")
    }
}

async fn serve_conn(
    conn: TcpStream,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    requests: mpsc::UnboundedSender<Recorded>,
    ends: mpsc::UnboundedSender<StreamEnd>,
    session_id: String,
) {
    let mut conn = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("").to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            conn.read_line(&mut h).await.unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let len = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.unwrap();
        let get = method == "GET";
        let _ = requests.send(Recorded { method, path, headers, body });
        let reply = {
            // A GET takes the first reply queued for GETs, if any; anything else skips those.
            let mut queue = replies.lock().unwrap();
            let for_get = |r: &Reply| matches!(r, Reply::ForGet(_));
            let at = queue
                .iter()
                .position(|r| get && for_get(r))
                .or_else(|| queue.iter().position(|r| !for_get(r)));
            match at.and_then(|i| queue.remove(i)) {
                Some(Reply::ForGet(inner)) => *inner,
                Some(reply) => reply,
                None => Reply::Json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into()),
            }
        };
        let reply = match reply {
            Reply::Slow(after) => {
                tokio::time::sleep(after).await;
                Reply::Json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.into())
            }
            reply => reply,
        };
        match reply {
            Reply::ForGet(_) | Reply::Slow(_) => unreachable!("unwrapped above"),
            Reply::Json(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nmcp-session-id: {session_id}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                conn.get_mut().write_all(head.as_bytes()).await.unwrap();
                conn.get_mut().write_all(body.as_bytes()).await.unwrap();
            }
            Reply::Unauthorized => {
                let body = r#"{"error":"invalid_token"}"#;
                let head = format!(
                    "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer resource_metadata=\"http://upstream.internal/.well-known/oauth-protected-resource\"\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                conn.get_mut().write_all(head.as_bytes()).await.unwrap();
                conn.get_mut().write_all(body.as_bytes()).await.unwrap();
            }
            Reply::Status(status) => {
                let head = format!("HTTP/1.1 {status} Status\r\ncontent-length: 0\r\n\r\n");
                conn.get_mut().write_all(head.as_bytes()).await.unwrap();
            }
            Reply::Hang => {
                let mut rest = Vec::new();
                let _ = conn.read_to_end(&mut rest).await;
                return;
            }
            Reply::Sse(mut events) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                conn.get_mut().write_all(head.as_bytes()).await.unwrap();
                let mut probe = [0u8; 1];
                loop {
                    tokio::select! {
                        next = events.recv() => match next.flatten() {
                            Some(event) => {
                                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                                if conn.get_mut().write_all(chunk.as_bytes()).await.is_err() {
                                    let _ = ends.send(StreamEnd::ClosedByProxy);
                                    return;
                                }
                            }
                            None => {
                                let _ = conn.get_mut().write_all(b"0\r\n\r\n").await;
                                let _ = ends.send(StreamEnd::Completed);
                                break;
                            }
                        },
                        n = conn.get_mut().read(&mut probe) => {
                            if matches!(n, Ok(0) | Err(_)) {
                                let _ = ends.send(StreamEnd::ClosedByProxy);
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The proxy binary, killed on drop; stderr goes to a file named in failures.
pub struct ProxyProcess {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    _child: tokio::process::Child,
    pub log: std::path::PathBuf,
}

/// An address for a proxy listener that no other test process holds (the e2e suite's scheme, one file).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], ports::free_port().expect("a free port")))
}

impl ProxyProcess {
    /// Starts a proxy that lets callers without credentials through (`--anonymous`): for the tests of
    /// forwarding, balancing and sessions, which are not about identity.
    pub async fn start(control_plane: &str, extra: &[&str]) -> Self {
        let mut args = vec!["--anonymous"];
        args.extend_from_slice(extra);
        Self::start_closed(control_plane, &args).await
    }

    /// Starts the proxy as deployed (credentials required) on two free ports and waits until both
    /// listeners accept connections. A port is checked free and reserved among test processes, but a
    /// process outside them can still take it first: then the proxy exits and a new pair is tried.
    pub async fn start_closed(control_plane: &str, extra: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(proxy) = Self::try_start(control_plane, extra).await {
                return proxy;
            }
        }
        panic!("the proxy did not start on five pairs of free ports");
    }

    async fn try_start(control_plane: &str, extra: &[&str]) -> Option<Self> {
        let (listen, admin) = (free_port(), free_port());
        let dir = std::env::temp_dir().join("mcpgw-proxy-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("proxy-{}.log", listen.port()));
        // Quick to stop, unless the test says otherwise.
        let mut stopping = Vec::new();
        for (flag, value) in [("--grace-period", "0s"), ("--shutdown-timeout", "1s")] {
            if !extra.contains(&flag) {
                stopping.extend([flag, value]);
            }
        }
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgw-proxy"))
            .args(["serve", "--listen", &listen.to_string(), "--admin-addr", &admin.to_string()])
            .args(["--control-plane", control_plane])
            .args(stopping)
            .args(extra)
            .env("RUST_LOG", "info")
            // Must never reach a stdio server's process (its environment is its command's only).
            .env("MCPGW_TEST_MARKER", "inherited")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mcpgw-proxy");
        let up = within(&format!("proxy listeners to accept (log: {})", log.display()), async {
            loop {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
                let mcp = TcpStream::connect(listen).await.is_ok();
                if mcp && TcpStream::connect(admin).await.is_ok() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        up.then_some(Self { listen, admin, _child: child, log })
    }

    pub fn pid(&self) -> u32 {
        self._child.id().expect("the proxy runs")
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self._child.wait().await.expect("wait for the proxy")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn mcp_url(&self, server: &str) -> String {
        format!("http://{}/mcp/{server}", self.listen)
    }

    /// Polls the admin `/routes` until `pred` holds for it.
    pub async fn wait_routes(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let client = reqwest::Client::new();
        within(&format!("{what} (proxy log: {})", self.log.display()), async {
            loop {
                if let Ok(r) = client.get(self.admin_url("/routes")).send().await
                    && let Ok(v) = r.json::<serde_json::Value>().await
                    && pred(&v)
                {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}
