//! Test fixtures: a throwaway database, the REST app over it, a gRPC server on port 0, and a proxy client.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use actix_web::web;
use mcpgw_control_plane::api::{self, AppState};
use mcpgw_control_plane::auth::SecretToken;
use mcpgw_control_plane::config::DatabaseUrl;
use mcpgw_control_plane::db::{self, DbPool, bootstrap, store};
use mcpgw_control_plane::discovery::Discoverer;
use mcpgw_control_plane::grpc::ProxyAuth;
use mcpgw_control_plane::hub::RoutingHub;
use mcpgw_control_plane::jwks::JwksFetcher;
use mcpgw_control_plane::mcp::McpClient;
use mcpgw_control_plane::secrets::SecretsKey;
use mcpgw_control_plane::serve::serve_grpc;
use mcpgw_control_plane::ssrf::SsrfPolicy;
use mcpgw_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use mcpgw_proto::v1::{Ack, Hello, Nack, ProxyMessage, RoutingUpdate, proxy_message::Kind};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

/// The admin token every test app accepts.
pub const TOKEN: &str = "integration-admin-token";

/// The `--secrets-key` of test apps (`TestApp::without_secrets` has none).
pub const SECRETS_KEY: &str = "6d6370677720696e746567726174696f6e207465737420736563726574732121";

/// How long any awaited event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The PostgreSQL server tests create their databases on (`MCPGW_TEST_PG`, default the local one).
fn server_url() -> String {
    std::env::var("MCPGW_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database named `mcpgw_test_<uuid>`, dropped (WITH FORCE) when this value is dropped, even on panic.
pub struct TestDb {
    pub url: DatabaseUrl,
}

impl TestDb {
    /// A fresh database, not created yet.
    pub fn unique() -> Self {
        let name = format!("mcpgw_test_{}", uuid::Uuid::new_v4().simple());
        let base = DatabaseUrl::parse(&format!("{}/postgres", server_url())).expect("MCPGW_TEST_PG is a URL");
        Self { url: base.with_name(&name).expect("valid test database name") }
    }

    /// A fresh database, created and migrated by the crate's bootstrap.
    pub async fn migrated() -> Self {
        let db = Self::unique();
        db::prepare(&db.url).await.expect("create and migrate the test database");
        db
    }

    pub fn pool(&self) -> DbPool {
        db::pool(self.url.as_str(), 4)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = self.url.clone();
        // Async cleanup from Drop: a private runtime on its own thread, so it also runs during a panic.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(db::drop_database(&url)).ok()
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("warning: could not drop test database {}", self.url.name());
        }
    }
}

/// The REST app over a migrated test database, with a hub.
pub struct TestApp {
    pub hub: Arc<RoutingHub>,
    pub pool: DbPool,
    state: web::Data<AppState>,
    // Held for its Drop, which removes the database; last, so it goes after the pool's users.
    _db: TestDb,
}

/// A response as the tests inspect it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error `code` of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<no code>")
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::with(Some(TOKEN), 1_048_576, None).await
    }

    pub async fn with(token: Option<&str>, body_limit: usize, redis: Option<api::RedisPool>) -> Self {
        Self::on(TestDb::migrated().await, token, body_limit, redis).await
    }

    pub async fn on(
        db: TestDb,
        token: Option<&str>,
        body_limit: usize,
        redis: Option<api::RedisPool>,
    ) -> Self {
        let app = Self::unrefreshed(db, token, body_limit, redis);
        app.hub.refresh().await.expect("initial refresh");
        app
    }

    /// An app started without `--secrets-key`.
    pub async fn without_secrets() -> Self {
        let app = Self::build(TestDb::migrated().await, Some(TOKEN), 1_048_576, None, None);
        app.hub.refresh().await.expect("initial refresh");
        app
    }

    /// The test `--secrets-key`.
    pub fn secrets_key() -> SecretsKey {
        SecretsKey::parse(SECRETS_KEY).expect("a valid test key")
    }

    /// The app without the initial hub refresh (for a database that is not migrated).
    pub fn unrefreshed(
        db: TestDb,
        token: Option<&str>,
        body_limit: usize,
        redis: Option<api::RedisPool>,
    ) -> Self {
        Self::build(db, token, body_limit, redis, Some(Self::secrets_key()))
    }

    fn build(
        db: TestDb,
        token: Option<&str>,
        body_limit: usize,
        redis: Option<api::RedisPool>,
        secrets: Option<SecretsKey>,
    ) -> Self {
        let pool = db.pool();
        let hub = RoutingHub::new(pool.clone(), secrets.clone());
        let ssrf = Arc::new(SsrfPolicy::default());
        let client = McpClient::new(ssrf.clone()).expect("client");
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            hub: hub.clone(),
            admin_token: token.map(SecretToken::new),
            redis,
            migrations: bootstrap::embedded_versions().expect("embedded migrations"),
            body_limit,
            ssrf,
            jwks: JwksFetcher::new(client.clone()),
            discoverer: Discoverer { pool: pool.clone(), client, hub: hub.clone() },
            replica_id: "test-replica".into(),
            is_leader: Default::default(),
            secrets,
            oauth: None,
            public_url: "http://127.0.0.1:8080".into(),
        });
        Self { hub, pool, state, _db: db }
    }

    /// This app with the authorization server on (registering identity providers needs it).
    pub fn with_authorization_server(self) -> Self {
        use std::time::Duration;

        use mcpgw_control_plane::config::OauthConfig;
        use mcpgw_control_plane::oauth::{AuthServer, Keys};
        let Self { hub, pool, state, _db } = self;
        let mut shared = state.into_inner();
        let state = Arc::get_mut(&mut shared).expect("the state is not shared yet");
        let hour = Duration::from_secs(3600);
        let config = OauthConfig {
            issuer: Some("http://127.0.0.1:8080".into()),
            public_url: "http://127.0.0.1:8000".into(),
            oidc: None,
            admin_roles: vec![],
            dcr: false,
            access_token_ttl: hour,
            refresh_token_ttl: hour,
            signing_key_rotation: 24 * hour,
        };
        state.oauth = Some(Arc::new(AuthServer {
            issuer: "http://127.0.0.1:8080".into(),
            public_url: config.public_url.clone(),
            keys: Keys::new(pool.clone(), Self::secrets_key(), 24 * hour, hour),
            config,
            flag_idp: None,
            registered_idps: Default::default(),
            secrets: Self::secrets_key(),
            idp_fetcher: state.jwks.clone(),
            documents: state.jwks.clone(),
            hub: hub.clone(),
        }));
        Self { hub, pool, state: web::Data::from(shared), _db }
    }

    /// This app allowed to run the stdio servers of `programs` (`--stdio-programs`), at registration and
    /// in discovery.
    pub fn with_stdio_programs(self, programs: &[&str]) -> Self {
        use mcpgw_control_plane::mcp::StdioPrograms;
        let Self { hub, pool, state, _db } = self;
        let mut shared = state.into_inner();
        let state = Arc::get_mut(&mut shared).expect("the state is not shared yet");
        let programs = StdioPrograms::new(programs.iter().map(|p| (*p).to_owned()));
        state.discoverer.client = state.discoverer.client.clone().with_stdio_programs(programs);
        Self { hub, pool, state: web::Data::from(shared), _db }
    }

    /// URL of the test database.
    pub fn db_url(&self) -> String {
        self._db.url.as_str().to_owned()
    }

    /// The shared state, for building apps directly.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Sends `req` through the full app (routes, extractor configs, fallbacks).
    pub async fn call(&self, req: TestRequest) -> Reply {
        let state = self.state.clone();
        let app = test::init_service(api::app(state)).await;
        let response = test::call_service(&app, req.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = test::read_body(response).await;
        // A non-JSON body (the YAML export) is kept as a JSON string; errors are always JSON.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, headers, body }
    }

    /// POST /api/v1/servers with the admin token.
    pub async fn create(&self, body: Value) -> Reply {
        self.call(admin(TestRequest::post().uri("/api/v1/servers")).set_json(body)).await
    }

    /// The routing version and every server with its instances, straight from the database.
    pub async fn table(&self) -> (i64, Vec<store::ServerWithInstances>) {
        let mut conn = self.pool.get().await.expect("connection");
        let mut snapshot = store::routing_snapshot(&mut conn, &Default::default()).await.expect("snapshot");
        let servers = snapshot
            .servers
            .into_iter()
            .map(|s| {
                let instances = snapshot.instances.remove(&s.id).unwrap_or_default();
                (s, instances)
            })
            .collect();
        (snapshot.version, servers)
    }
}

/// Adds the admin bearer token.
pub fn admin(req: TestRequest) -> TestRequest {
    bearer(req, TOKEN)
}

/// Adds `Authorization: Bearer <token>`.
pub fn bearer(req: TestRequest, token: &str) -> TestRequest {
    req.insert_header(("Authorization", format!("Bearer {token}")))
}

/// GET `uri` with the admin bearer token.
pub fn get(uri: &str) -> TestRequest {
    admin(TestRequest::get().uri(uri))
}

/// A gRPC routing server on 127.0.0.1:0 over `hub`, stopped on drop.
pub struct TestGrpc {
    pub url: String,
    /// The CA clients trust when the server speaks TLS.
    tls_ca: Option<Certificate>,
    shutdown: CancellationToken,
}

/// Test-only TLS files (a CA, and a `localhost` / 127.0.0.1 certificate it signed, valid until 2126),
/// made with openssl.
pub mod tls {
    pub const CA: &str = include_str!("tls/ca.pem");
    pub const CERT: &str = include_str!("tls/server.pem");
    pub const KEY: &str = include_str!("tls/server.key");
}

impl TestGrpc {
    /// Without a proxy token: loopback peers only, as the tests are.
    pub async fn start(hub: Arc<RoutingHub>) -> Self {
        Self::with(hub, ProxyAuth::LoopbackOnly).await
    }

    pub async fn with(hub: Arc<RoutingHub>, auth: ProxyAuth) -> Self {
        Self::serve(hub, auth, false).await
    }

    /// Over TLS with the test certificate; clients trust the test CA and name `localhost`.
    pub async fn with_tls(hub: Arc<RoutingHub>, auth: ProxyAuth) -> Self {
        Self::serve(hub, auth, true).await
    }

    async fn serve(hub: Arc<RoutingHub>, auth: ProxyAuth, tls: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let port = listener.local_addr().expect("local addr").port();
        let shutdown = CancellationToken::new();
        let server_tls =
            tls.then(|| ServerTlsConfig::new().identity(Identity::from_pem(tls::CERT, tls::KEY)));
        let server =
            serve_grpc(listener, hub, auth, server_tls, shutdown.clone()).expect("the gRPC server builds");
        tokio::spawn(server);
        let (url, tls_ca) = if tls {
            (format!("https://localhost:{port}"), Some(Certificate::from_pem(tls::CA)))
        } else {
            (format!("http://127.0.0.1:{port}"), None)
        };
        Self { url, tls_ca, shutdown }
    }

    pub async fn client(&self) -> RoutingDiscoveryClient<Channel> {
        self.try_client().await.expect("connect to the routing server")
    }

    /// A client, or why it could not connect.
    pub async fn try_client(&self) -> Result<RoutingDiscoveryClient<Channel>, tonic::transport::Error> {
        let mut endpoint = Channel::from_shared(self.url.clone()).expect("a valid URL");
        if let Some(ca) = &self.tls_ca {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("localhost"))?;
        }
        Ok(RoutingDiscoveryClient::new(endpoint.connect().await?))
    }
}

impl Drop for TestGrpc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A proxy's side of one routing stream.
pub struct FakeProxy {
    pub tx: mpsc::Sender<ProxyMessage>,
    pub updates: Streaming<RoutingUpdate>,
}

pub fn hello(proxy_id: &str) -> ProxyMessage {
    let hello = Hello { proxy_id: proxy_id.into(), applied_version: 0, build_version: "test".into() };
    ProxyMessage { kind: Some(Kind::Hello(hello)) }
}

impl FakeProxy {
    /// Opens a stream whose first message is `first`.
    pub async fn open(grpc: &TestGrpc, first: ProxyMessage) -> Result<Self, tonic::Status> {
        Self::open_with(grpc, first, None).await
    }

    /// Opens a stream presenting `authorization` metadata (the whole value, `Bearer …`).
    pub async fn open_with(
        grpc: &TestGrpc,
        first: ProxyMessage,
        authorization: Option<&str>,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(first).await.expect("queue the first message");
        let mut client = grpc.client().await;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().expect("ASCII metadata"));
        }
        let response = tokio::time::timeout(WAIT, client.stream_routes(request))
            .await
            .expect("the server answers the stream in time")?;
        Ok(Self { tx, updates: response.into_inner() })
    }

    /// The next update, failing the test after `within`.
    pub async fn next_within(&mut self, within: Duration) -> RoutingUpdate {
        tokio::time::timeout(within, self.updates.message())
            .await
            .expect("an update arrives in time")
            .expect("the stream is healthy")
            .expect("the stream is open")
    }

    pub async fn ack(&self, version: u64) {
        self.tx.send(ProxyMessage { kind: Some(Kind::Ack(Ack { version })) }).await.expect("send Ack");
    }

    pub async fn nack(&self, version: u64, reason: &str) {
        let nack = Nack { version, reason: reason.into() };
        self.tx.send(ProxyMessage { kind: Some(Kind::Nack(nack)) }).await.expect("send Nack");
    }
}

/// Polls `check` until it holds, failing the test after `WAIT` (a readiness poll, not a sleep for correctness).
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let outcome = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "timed out waiting for {what}");
}

/// The value of one series in a Prometheus text exposition: the line of metric `name` carrying every
/// `label="value"` pair of `labels` (in any order); `None` when no line matches.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let pairs: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
        let has_all = labels.iter().all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()));
        (metric == name && has_all).then(|| value.parse().ok()).flatten()
    })
}

impl TestApp {
    /// The control plane's `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let reply = self.call(TestRequest::get().uri("/metrics")).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body.as_str().expect("the text format").to_owned()
    }
}

/// A validated registration of one instance at `endpoint_url`, every other field at its default (for
/// writes through the store, which take a validated spec).
pub fn spec(
    name: &str,
    transport: mcpgw_control_plane::model::TransportType,
    endpoint_url: &str,
    description: Option<&str>,
) -> mcpgw_control_plane::model::ServerSpec {
    mcpgw_control_plane::model::ServerSpec {
        name: name.into(),
        transport,
        description: description.map(str::to_owned),
        tags: vec![],
        instances: vec![mcpgw_control_plane::model::InstanceSpec {
            endpoint_url: endpoint_url.into(),
            command: None,
            weight: 1,
            metadata: Default::default(),
            upstream_auth: Default::default(),
        }],
        load_balancing: Default::default(),
        hash_key: None,
        circuit_breaker: None,
        tenant_id: None,
        version: None,
        capabilities: Default::default(),
        auto_discover: false,
        health_check: Default::default(),
        upstream_auth: Default::default(),
        audit_arguments: Default::default(),
        name_prefix: Default::default(),
        priority: 0,
    }
}
