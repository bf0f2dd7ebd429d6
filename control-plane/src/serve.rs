//! Running the control plane: prepare the database, bind both listeners, serve until SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::api::{self, AppState, RedisPool};
use crate::config::{Config, GrpcTls};
use crate::db::{self, DbError, bootstrap};
use crate::discovery::Discoverer;
use crate::expiry::{self, SWEEP_INTERVAL};
use crate::grpc::{ProxyAuth, RoutingService};
use crate::health::Checker;
use crate::health::leader::Leader;
use crate::hub::{HubError, POLL_INTERVAL, RoutingHub};
use crate::jwks::{JwksFetcher, Refresher};
use crate::mcp::McpClient;
use crate::oauth::{AuthServer, IdentityProvider, Keys};

/// How long in-flight REST requests and the gRPC server get to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the control plane could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot load the routing table: {0}")]
    Hub(#[from] HubError),
    #[error("cannot bind {what} to {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("invalid --redis-url: {0}")]
    Redis(String),
    #[error("the REST server failed: {0}")]
    Http(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("cannot build the MCP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot read {}", path.display())]
    ReadTls { path: PathBuf, source: std::io::Error },
    #[error("--grpc-tls-cert / --grpc-tls-key do not form a TLS identity")]
    Tls(#[source] tonic::transport::Error),
    #[error("--http-tls-cert: {0}")]
    HttpTls(String),
    #[error("Kubernetes service discovery: {0}")]
    Kubernetes(String),
}

/// The routing stream on `listener`, admitting proxies by `auth`, over TLS when `tls` is given; the
/// returned future serves until `shutdown`, and every proxy session ends with it. A TLS identity that does
/// not load is an error here, before anything is served.
pub fn serve_grpc(
    listener: tokio::net::TcpListener,
    hub: Arc<RoutingHub>,
    auth: ProxyAuth,
    tls: Option<ServerTlsConfig>,
    shutdown: CancellationToken,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, tonic::transport::Error> {
    let service = RoutingService::new(hub, auth, shutdown.clone()).into_server();
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .tcp_nodelay(true)
        // Detects proxies that vanished without closing their stream.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service);
    Ok(router.serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned()))
}

/// Reads the PEM certificate chain and key of `--grpc-tls-cert` / `--grpc-tls-key`.
pub fn load_tls(files: &GrpcTls) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::ReadTls { path: path.clone(), source })
    };
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?)))
}

/// Builds the shared REST state (pools, hub, expected migrations, discovery) for `config`.
pub fn app_state(
    config: &Config,
    pool: db::DbPool,
    hub: Arc<RoutingHub>,
    client: McpClient,
    oauth: Option<Arc<AuthServer>>,
) -> Result<AppState, ServeError> {
    let redis = match &config.redis_url {
        None => None,
        Some(url) => {
            let manager = bb8_redis::RedisConnectionManager::new(url.as_str())
                .map_err(|e| ServeError::Redis(e.to_string()))?;
            let pool: RedisPool = bb8::Pool::builder()
                .max_size(2)
                .connection_timeout(Duration::from_secs(2))
                .build_unchecked(manager);
            hub.set_redis(pool.clone());
            Some(pool)
        }
    };
    Ok(AppState {
        pool: pool.clone(),
        admin_token: config.admin_token.clone(),
        redis,
        migrations: bootstrap::embedded_versions()?,
        body_limit: config.api_body_limit,
        ssrf: Arc::new(config.ssrf.clone()),
        jwks: JwksFetcher::new(client.clone()),
        discoverer: Discoverer { pool, client, hub: hub.clone() },
        replica_id: config.replica_id.clone(),
        is_leader: Arc::default(),
        secrets: config.secrets_key.clone(),
        hub,
        oauth,
        public_url: config.oauth.public_url.clone(),
    })
}

/// The authorization server, when `--secrets-key` lets it keep signing keys: its keys synced (rotated
/// when due) before the first routing table, so proxies get its JWKS with it.
async fn authorization_server(
    config: &Config,
    pool: &db::DbPool,
    hub: &Arc<RoutingHub>,
    client: &McpClient,
    http_addr: SocketAddr,
) -> Result<Option<Arc<AuthServer>>, ServeError> {
    let Some(secrets) = &config.secrets_key else {
        tracing::warn!(
            "The OAuth authorization server is off: it needs --secrets-key (MCPGW_SECRETS_KEY) to keep its \
             signing keys. MCP clients can use API keys and tokens of trusted issuers only."
        );
        return Ok(None);
    };
    let issuer = config.oauth.issuer_for(http_addr, config.http_tls.is_some());
    let keys = Keys::new(
        pool.clone(),
        secrets.clone(),
        config.oauth.signing_key_rotation,
        config.oauth.access_token_ttl,
    );
    if let Err(error) = keys.sync().await {
        tracing::error!(%error, "Cannot load the authorization server's signing keys; retrying in the background.");
    }
    hub.set_own_issuer(issuer.clone());
    let idp_fetcher = JwksFetcher::new(client.clone());
    let flag_idp =
        config.oauth.oidc.as_ref().map(|provider| {
            Arc::new(IdentityProvider::new("default", provider.clone(), idp_fetcher.clone()))
        });
    tracing::info!(issuer, flag_idp = flag_idp.is_some(), "The OAuth authorization server is on.");
    let server = Arc::new(AuthServer {
        issuer,
        public_url: config.oauth.public_url.clone(),
        config: config.oauth.clone(),
        keys,
        flag_idp,
        registered_idps: Default::default(),
        secrets: secrets.clone(),
        idp_fetcher,
        documents: JwksFetcher::new(McpClient::new(Arc::new(config.document_ssrf.clone()))?),
        hub: hub.clone(),
    });
    hub.set_authorization_server(&server);
    Ok(Some(server))
}

/// Runs the control plane until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), ServeError> {
    if config.admin_token.is_none() {
        tracing::warn!(
            "NO ADMIN TOKEN CONFIGURED: every /api/v1 request without an admin API key will be refused \
             with 401. Set --admin-token or MCPGW_ADMIN_TOKEN to manage the control plane."
        );
    }
    if config.proxy_token.is_none() {
        tracing::warn!(
            "NO PROXY TOKEN CONFIGURED: only proxies connecting from loopback may stream routes. \
             Set --proxy-token or MCPGW_PROXY_TOKEN here and on every proxy."
        );
    }
    let tls = config.grpc_tls.as_ref().map(load_tls).transpose()?;
    let applied = db::prepare(&config.database).await?;
    if !applied.is_empty() {
        tracing::info!(applied = applied.join(","), "Applied database migrations.");
    }
    let pool = db::pool(config.database.as_str(), config.db_pool_size);
    let hub = RoutingHub::new(pool.clone(), config.secrets_key.clone());
    hub.audit().set_retention(config.audit_retention);
    hub.audit().set_pool_size(config.db_pool_size);
    let bind_err = |what, addr| move |source| ServeError::Bind { what, addr, source };
    // Bound first: the issuer defaults to its address.
    let http_listener =
        std::net::TcpListener::bind(config.http_addr).map_err(bind_err("the REST API", config.http_addr))?;
    let http_addr = http_listener.local_addr().map_err(bind_err("the REST API", config.http_addr))?;
    hub.set_rest_addr(http_addr);
    let client = McpClient::with_extra_roots(Arc::new(config.ssrf.clone()), config.upstream_ca.as_deref())?
        .with_stdio_programs(config.stdio_programs.clone());
    let oauth = authorization_server(&config, &pool, &hub, &client, http_addr).await?;
    let version = hub.refresh().await?;
    tracing::info!(version, resources = hub.current().len(), "Loaded the routing table.");
    if config.secrets_key.is_none() {
        warn_sealed_credentials(&pool).await;
    }
    let keys = oauth.as_ref().map(|o| o.keys.clone());
    let state = web::Data::new(app_state(&config, pool.clone(), hub.clone(), client.clone(), oauth)?);
    let shutdown = CancellationToken::new();
    let leader = Leader {
        database_url: config.database.as_str().to_owned(),
        checker: Checker {
            pool: pool.clone(),
            client: client.clone(),
            defaults: config.health,
            replica_id: config.replica_id.clone(),
            hub: hub.clone(),
        },
        discoverer: state.discoverer.clone(),
        discovery_interval: config.discovery_interval,
        jwks: Refresher {
            pool: pool.clone(),
            hub: hub.clone(),
            fetcher: state.jwks.clone(),
            interval: config.jwks_refresh,
        },
        is_leader: state.is_leader.clone(),
        kubernetes: match &config.kubernetes {
            Some(settings) => Some(
                crate::kube::KubeSync::new(
                    settings.clone(),
                    pool.clone(),
                    hub.clone(),
                    state.discoverer.clone(),
                    state.ssrf.clone(),
                )
                .map_err(ServeError::Kubernetes)?,
            ),
            None => None,
        },
    };
    let leading = tokio::spawn(leader.run(shutdown.clone()));
    let listener = tokio::spawn(crate::notify::listen(
        config.database.as_str().to_owned(),
        hub.clone(),
        shutdown.clone(),
    ));

    let rotation = keys.map(|keys| tokio::spawn(keys.run(hub.clone(), shutdown.clone())));
    let upstream_tokens = config.secrets_key.clone().map(|secrets| {
        tokio::spawn(crate::upstream_tokens::run(
            pool.clone(),
            hub.clone(),
            secrets,
            state.jwks.clone(),
            state.is_leader.clone(),
            shutdown.clone(),
        ))
    });
    let audit =
        tokio::spawn(audit_partitions(pool.clone(), hub.clone(), state.is_leader.clone(), shutdown.clone()));
    let http = HttpServer::new(move || api::app(state.clone()))
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs());
    let http = match &config.http_tls {
        Some(cert) => {
            let tls = cert.server_config(&[b"h2", b"http/1.1"]).map_err(ServeError::HttpTls)?;
            tokio::spawn(cert.clone().watch());
            http.listen_rustls_0_23(http_listener, tls)
        }
        None => http.listen(http_listener),
    }
    .map_err(bind_err("the REST API", config.http_addr))?
    .run();
    tracing::info!(http_addr = %http_addr, tls = config.http_tls.is_some(), "The REST API is listening.");

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .map_err(bind_err("the gRPC routing stream", config.grpc_addr))?;
    let grpc_addr =
        grpc_listener.local_addr().map_err(bind_err("the gRPC routing stream", config.grpc_addr))?;
    let tls_on = tls.is_some();
    let auth = ProxyAuth::new(config.proxy_token.clone());
    let grpc_server =
        serve_grpc(grpc_listener, hub.clone(), auth, tls, shutdown.clone()).map_err(ServeError::Tls)?;
    let grpc = tokio::spawn(grpc_server);
    tracing::info!(grpc_addr = %grpc_addr, tls = tls_on, "The gRPC routing stream is listening.");

    let sweeper = tokio::spawn(expiry::sweep(pool.clone(), hub.clone(), SWEEP_INTERVAL, shutdown.clone()));
    let poller = tokio::spawn(hub.poll(POLL_INTERVAL, shutdown.clone()));
    let http_handle = http.handle();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutting down: draining requests and closing proxy streams.");
        on_signal.cancel();
        http_handle.stop(true).await;
    });

    let http_result = http.await.map_err(ServeError::Http);
    shutdown.cancel();
    let grpc_result = match tokio::time::timeout(SHUTDOWN_GRACE, grpc).await {
        Ok(Ok(result)) => result.map_err(ServeError::from),
        Ok(Err(join)) => {
            tracing::error!(error = %join, "The gRPC server task failed.");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("The gRPC server did not stop in time.");
            Ok(())
        }
    };
    poller.abort();
    sweeper.abort();
    audit.abort();
    for task in [rotation, upstream_tokens].into_iter().flatten() {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), leading).await;
    listener.abort();
    tracing::info!("The control plane stopped.");
    http_result.and(grpc_result)
}

/// How often a replica looks whether it leads and its audit partition pass is due.
const AUDIT_CHECK: Duration = Duration::from_secs(5);
/// How often the leader makes the coming days' audit partitions and drops the expired ones.
const AUDIT_MAINTENANCE: Duration = Duration::from_secs(3600);
/// How soon a failed pass is tried again.
const AUDIT_RETRY: Duration = Duration::from_secs(60);

/// Runs on every replica and works while it leads: at once when it takes the lead, then hourly, makes the
/// audit partitions from yesterday to the day after tomorrow (writes make missing ones too; these are
/// made ahead so writes do not wait on DDL) and drops those older than `--audit-retention`.
async fn audit_partitions(
    pool: db::DbPool,
    hub: Arc<RoutingHub>,
    is_leader: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(AUDIT_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !is_leader.load(std::sync::atomic::Ordering::Relaxed) {
            // A replica that takes the lead later passes at once.
            due = tokio::time::Instant::now();
            continue;
        }
        if tokio::time::Instant::now() < due {
            continue;
        }
        let retention = humantime::format_duration(hub.audit().retention()).to_string();
        let pass = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            hub.audit().maintain(&mut conn).await.map_err(|e| e.to_string())
        };
        match pass.await {
            Ok(done) => {
                due = tokio::time::Instant::now() + AUDIT_MAINTENANCE;
                let (created, dropped) = (days(&done.created), days(&done.dropped));
                if done.created.is_empty() && done.dropped.is_empty() {
                    tracing::debug!(%retention, "The audit partitions are in place.");
                } else {
                    tracing::info!(%created, %dropped, %retention,
                        "Made the coming days' audit partitions and dropped the expired ones.");
                }
            }
            Err(error) => {
                due = tokio::time::Instant::now() + AUDIT_RETRY;
                tracing::warn!(%error, "Cannot maintain the audit partitions; trying again in a minute.");
            }
        }
    }
}

fn days(days: &[chrono::NaiveDate]) -> String {
    days.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// Without `--secrets-key`, stored upstream credentials cannot be opened: their upstreams are reached
/// without them (and refuse). Said once at start, loudly.
async fn warn_sealed_credentials(pool: &db::DbPool) {
    let Ok(mut conn) = pool.get().await else { return };
    let Ok(stored) = crate::db::store::upstream_auth::all(&mut conn).await else { return };
    let count = stored.servers.len() + stored.instances.len();
    if count > 0 {
        tracing::error!(
            credentials = count,
            "NO SECRETS KEY CONFIGURED, but upstream credentials are stored: they cannot be opened, so those \
             upstreams are reached without them. Start with the --secrets-key (MCPGW_SECRETS_KEY) they were \
             sealed with."
        );
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only SIGINT stops the control plane.");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
