//! Assembles the Pingora server: the MCP listener, the admin listener and the routing-sync background
//! service, from a validated [`Config`].

use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::identity::AuthSettings;
use crate::retry::RetryBudget;
use crate::routing::sync::RoutingSync;
use crate::routing::{PeerSettings, Routes};
use crate::session::{SessionKeys, generate_key};
use crate::shared::{Limits, Shared};

/// Retries of requests that reached no upstream: at most this share of traffic…
const RETRY_RATIO: f64 = 0.2;
/// …plus this many per second.
const RETRY_FLOOR: u64 = 10;

/// How long an idle upstream connection stays pooled.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Builds the server and the shutdown signals it must run with: `server.run(run_args)` serves until SIGTERM
/// (graceful: `crate::drain`) or SIGINT.
pub fn build(config: &Config) -> (Server, RunArgs) {
    let conf = ServerConf {
        threads: config.threads,
        // Each worker thread a runtime of its own (Pingora's "no steal" runtimes), as nginx's workers: a
        // connection's tasks stay on the thread that accepted it. tokio's work-stealing scheduler, even with
        // one worker, read the clock twice and took a power for its poll-time average each time it ran its
        // queue, and set its context per task (~1,270 instructions a proxied call, BENCHMARKS.md). The
        // upstream pool keeps each worker's connections apart (`upstream::pool::worker`).
        work_stealing: false,
        // Pingora's grace period starts when its listeners stop (`drain::Signals` says when): it is the
        // in-flight requests' deadline. Then tasks still running are dropped and the runtimes get a second.
        grace_period_seconds: Some(config.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let (signals, draining) = crate::drain::Signals::new(config.grace_period);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let routes = Arc::new(Routes::default());
    let (breakers, breaker_service, passive_health) = crate::breaker::breakers();
    let session_key = config.session_key.unwrap_or_else(|| {
        tracing::warn!(
            "No --session-key given: using a random key. Sessions will not survive a restart and will not \
             continue on another replica. Set MCPGW_SESSION_KEY (openssl rand -base64 32) in production."
        );
        generate_key()
    });
    if config.anonymous {
        tracing::warn!(
            "--anonymous: callers without credentials may use every registered server. This is for local \
             development only; never expose this proxy."
        );
        crate::metrics::METRICS.anonymous.set(1);
    }
    let peer_settings = PeerSettings {
        connect_timeout: config.connect_timeout,
        pool_idle_timeout: POOL_IDLE_TIMEOUT,
        dns_refresh: config.dns_refresh,
        ssrf: config.ssrf.clone(),
    };
    // The flags were validated (the URL parses, the CA is PEM), so this does not fail.
    let control_plane = Arc::new(
        crate::rpc::ControlPlane::new(
            &config.control_plane,
            config.control_plane_ca.as_deref(),
            config.proxy_token.clone(),
        )
        .expect("a validated --control-plane URL and --control-plane-ca make an endpoint"),
    );
    let (auditor, shipper) =
        crate::audit::Auditor::new(&config.audit, control_plane.clone(), config.proxy_id.clone())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, dir = ?config.audit.spill_dir, "Cannot open --audit-spill-dir.");
                std::process::exit(2);
            });
    let bridges: Arc<crate::upstream::bridge::Bridges> = Arc::default();
    let (tracer, otlp_worker) = match &config.otlp {
        Some(settings) => {
            // Validated with the flags: the endpoint makes a target.
            let (exporter, worker) = mcpgw_proto::otlp::Exporter::new(
                &settings.endpoint,
                settings.protocol,
                "mcpgw-proxy",
                &config.proxy_id,
            )
            .expect("a validated --otlp-endpoint makes an exporter");
            crate::metrics::watch_otlp(exporter.stats.clone());
            (Some(Arc::new(crate::trace::Tracer::new(exporter, settings.clone()))), Some(worker))
        }
        None => (None, None),
    };
    let pool = Arc::new(crate::upstream::pool::Pool::new(config.upstream_ca.as_deref()));
    let shared = Shared {
        routes: routes.clone(),
        pool: pool.clone(),
        limits: Limits {
            max_request_body: config.max_request_body,
            request_body_timeout: config.request_body_timeout,
            upstream_timeout: config.upstream_timeout,
            idle_timeout: config.idle_timeout,
            pool_idle_timeout: POOL_IDLE_TIMEOUT,
            connect_timeout: config.connect_timeout,
            bridge_idle_timeout: config.bridge_idle_timeout,
            bridge_lifetime: config.session_ttl,
        },
        sessions: SessionKeys::new(&session_key, &config.session_previous_keys, config.session_ttl),
        breakers,
        retry: RetryBudget::new(RETRY_RATIO, RETRY_FLOOR),
        pending_lists: Default::default(),
        front: config.front.clone(),
        auth: AuthSettings { anonymous: config.anonymous, public_url: config.public_url.clone() },
        exchanger: Arc::new(crate::exchange::Exchanger::new(control_plane.clone())),
        auditor,
        rate_limits: crate::limits::RateLimits::new(control_plane.clone()),
        streams: crate::caps::Caps::new(config.max_streams, config.max_streams_per_principal),
        stdio_programs: config.stdio_programs.clone().into(),
        draining,
        tracer,
    };
    let gateway = Gateway {
        shared,
        bridges: bridges.clone(),
        aggregate: crate::aggregate::State {
            upstreams: Default::default(),
            sse_streams: Default::default(),
            registrar: crate::aggregate::own::Registrar::new(control_plane),
            ended: Default::default(),
        },
    };
    let mcp_app = crate::connections::Listener {
        gateway,
        caps: crate::caps::Caps::new(config.max_connections, config.max_connections_per_client),
        head_timeout: config.request_head_timeout,
        closing: Default::default(),
    };
    match &config.tls {
        Some(cert) => {
            let mut tls = pingora::listeners::tls::TlsSettings::intermediate("", "")
                .expect("TLS settings without files build");
            tls.set_cert_resolver(cert.clone());
            tls.set_alpn(pingora::protocols::ALPN::H1);
            let mut mcp = Service::new("mcp".to_owned(), mcp_app);
            mcp.add_tls_with_settings(&config.listen.to_string(), None, tls);
            server.add_service(mcp);
        }
        // A plain listener is the gateway's own (`connections::PlainListener`): no read buffer in front of
        // the socket (the HTTP/1 codec reads heads and bodies into buffers of its own) and no per-connection
        // future of Pingora's around the connection's. TLS keeps Pingora's listener and its L4 buffer
        // (records are read in small pieces).
        None => match crate::connections::PlainListener::bind(config.listen, mcp_app) {
            Ok(mcp) => {
                server.add_service(mcp);
            }
            Err(e) => {
                tracing::error!(error = %e, listen = %config.listen, "Cannot listen on --listen.");
                std::process::exit(2);
            }
        },
    }

    let mut admin = Service::new("admin".to_owned(), AdminApp { routes: routes.clone() });
    admin.threads = Some(1);
    admin.add_tcp(&config.admin_addr.to_string());

    let sync = RoutingSync {
        routes,
        control_plane: config.control_plane.clone(),
        proxy_id: config.proxy_id.clone(),
        peer_settings,
        passive_health,
        cache: config.table_cache.clone().map(crate::routing::cache::TableCache::new),
        proxy_token: config.proxy_token.clone(),
        control_plane_ca: config.control_plane_ca.clone(),
    };
    server.add_service(background_service("routing-sync", sync));
    server.add_service(background_service("breakers", breaker_service));
    server.add_service(background_service("bridges", BridgesOnShutdown(bridges)));
    server.add_service(background_service("housekeeping", Housekeeping(pool)));
    if let Some(shipper) = shipper {
        server.add_service(background_service("audit", shipper));
    }
    if let Some(cert) = &config.tls {
        server.add_service(background_service("tls-reload", TlsReload(cert.clone())));
    }
    if let Some(worker) = otlp_worker {
        server.add_service(background_service("otlp", OtlpExport(std::sync::Mutex::new(Some(worker)))));
    }
    server.add_service(admin);
    (server, RunArgs { shutdown_signal: Box::new(signals) })
}

/// Serves a renewed certificate of the MCP listener as soon as its files change.
struct TlsReload(Arc<mcpgw_proto::tls::ReloadingCert>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for TlsReload {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        tokio::select! {
            () = self.0.clone().watch() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Sends recorded spans to the collector for as long as the proxy runs.
struct OtlpExport(std::sync::Mutex<Option<mcpgw_proto::otlp::Worker>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for OtlpExport {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let worker = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(worker) = worker {
            tokio::select! {
                () = worker.run() => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// How often the housekeeping runs.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes idle upstream connections that timed out or were closed by their upstream (`Pool::sweep`), and
/// gives freed memory back to the system once a wave of client connections has ended (`memory`).
struct Housekeeping(Arc<crate::upstream::pool::Pool>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trimmer = crate::memory::Trimmer::default();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.0.sweep();
                    if trimmer.due(crate::metrics::METRICS.connections_open.get()) {
                        crate::memory::trim();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Ends every bridged session when the proxy shuts down: their stdio processes are killed then, not
/// left behind (the process exits without running its tasks to their end).
struct BridgesOnShutdown(Arc<crate::upstream::bridge::Bridges>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for BridgesOnShutdown {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let _ = shutdown.changed().await;
        let open = self.0.len();
        self.0.close_all();
        if open > 0 {
            tracing::info!(open, "Ended the bridged sessions (stdio processes killed).");
        }
    }
}
