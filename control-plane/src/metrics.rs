//! Prometheus metrics of the control plane, in a registry of its own, served at `GET /metrics` on the REST
//! listener (public, like `/health`: counts only, no label from a request — a REST route is labelled by
//! its pattern, never its path, and proxies are counted, not named).
//!
//! Counted as they happen: REST requests, audit ingest, health checks, discovery runs, routing tables
//! published. Read when scraped: the database pool, the routing version, connected proxies and how far
//! behind the newest table they are, and whether this replica leads the health checks.

use std::sync::atomic::Ordering;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::api::AppState;
use crate::db::store::audit::Inserted;

/// Seconds: from a millisecond to ten seconds, for REST handlers, health probes and discovery runs.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: Registry,
    /// Audit records received from proxies: `written`, `duplicate` (sent again, already stored),
    /// `expired` (older than `--audit-retention`, not written).
    pub audit_records: IntCounterVec,
    /// Audit batches: `ok` (committed and acknowledged), `error` (the stream ended; the proxy resends).
    pub audit_batches: IntCounterVec,
    /// REST requests by method, route pattern and status.
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Active health probes by outcome (`healthy`, `unhealthy`), and their latency.
    health_checks: IntCounterVec,
    health_duration: HistogramVec,
    /// Discovery runs by outcome (`found`, `failed`: no instance answered, `error`: not run), and their
    /// duration.
    discovery_runs: IntCounterVec,
    discovery_duration: HistogramVec,
    /// Routing tables this replica published.
    routing_publishes: IntCounter,
    // Read when scraped.
    routing_version: IntGauge,
    proxies_connected: IntGauge,
    proxies_lagging: IntGauge,
    proxy_lag_max: IntGauge,
    proxy_nacks: IntGauge,
    leader: IntGauge,
    db_connections: IntGaugeVec,
    db_max: IntGauge,
    db_gets: IntGaugeVec,
    db_wait_seconds: prometheus::Gauge,
    /// Trace spans by outcome (`exported`, `dropped`, `failed`), read from the exporter.
    otlp_spans: IntCounterVec,
    /// One scrape at a time sets the scrape-time values.
    scrape: Mutex<()>,
}

/// The exporter's counters, when spans are exported.
static OTLP: std::sync::OnceLock<std::sync::Arc<mcpgw_proto::otlp::Stats>> = std::sync::OnceLock::new();

/// Makes `/metrics` report the exporter's counters.
pub fn watch_otlp(stats: std::sync::Arc<mcpgw_proto::otlp::Stats>) {
    let _ = OTLP.set(stats);
}

impl Metrics {
    /// Counts a committed batch.
    pub fn audit_batch_ok(&self, inserted: &Inserted) {
        self.audit_batches.with_label_values(&["ok"]).inc();
        for (result, n) in
            [("written", inserted.written), ("duplicate", inserted.duplicate), ("expired", inserted.expired)]
        {
            self.audit_records.with_label_values(&[result]).inc_by(n);
        }
    }

    pub fn audit_batch_error(&self) {
        self.audit_batches.with_label_values(&["error"]).inc();
    }

    /// Counts one active health probe.
    pub fn health_check(&self, healthy: bool, latency: Duration) {
        let outcome = if healthy { "healthy" } else { "unhealthy" };
        self.health_checks.with_label_values(&[outcome]).inc();
        self.health_duration.with_label_values(&[outcome]).observe(latency.as_secs_f64());
    }

    /// Counts one discovery run: `found`, `failed` or `error`.
    pub fn discovery(&self, outcome: &'static str, duration: Duration) {
        self.discovery_runs.with_label_values(&[outcome]).inc();
        self.discovery_duration.with_label_values(&[outcome]).observe(duration.as_secs_f64());
    }

    /// The database pool's size limit (set where the pool is built: bb8 does not tell it).
    pub fn db_pool_built(&self, max_size: u32) {
        self.db_max.set(i64::from(max_size));
    }

    /// Counts a published routing table.
    pub fn routing_published(&self) {
        self.routing_publishes.inc();
    }

    /// Sets the values read at scrape time from the shared state.
    fn read(&self, state: &AppState) {
        let version = state.hub.current().version();
        self.routing_version.set(gauge(version));
        let proxies = state.hub.proxies().list();
        let lags: Vec<u64> =
            proxies.iter().map(|p| version.saturating_sub(p.acked_version.unwrap_or(0))).collect();
        self.proxies_connected.set(gauge(proxies.len() as u64));
        self.proxies_lagging.set(gauge(lags.iter().filter(|lag| **lag > 0).count() as u64));
        self.proxy_lag_max.set(gauge(lags.iter().copied().max().unwrap_or(0)));
        self.proxy_nacks.set(gauge(proxies.iter().filter(|p| p.last_nack.is_some()).count() as u64));
        self.leader.set(i64::from(state.is_leader.load(Ordering::Relaxed)));
        let pool = state.pool.state();
        let idle = pool.idle_connections;
        self.db_connections.with_label_values(&["idle"]).set(i64::from(idle));
        self.db_connections
            .with_label_values(&["in_use"])
            .set(i64::from(pool.connections.saturating_sub(idle)));
        let stats = pool.statistics;
        for (how, n) in
            [("direct", stats.get_direct), ("waited", stats.get_waited), ("timed_out", stats.get_timed_out)]
        {
            self.db_gets.with_label_values(&[how]).set(gauge(n));
        }
        self.db_wait_seconds.set(stats.get_wait_time.as_secs_f64());
        if let Some(stats) = OTLP.get() {
            for (outcome, value) in
                [("exported", &stats.exported), ("dropped", &stats.dropped), ("failed", &stats.failed)]
            {
                let counter = self.otlp_spans.with_label_values(&[outcome]);
                counter.inc_by(value.load(Ordering::Relaxed).saturating_sub(counter.get()));
            }
        }
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric registers once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, label: &str, values: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid metric");
    registry.register(Box::new(counter.clone())).expect("metric registers once");
    // Every series shows from the start, at 0.
    for value in values {
        counter.with_label_values(&[value]);
    }
    counter
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, labels).expect("a valid metric"))
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("a valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, label: &str, values: &[&str]) -> IntGaugeVec {
    let vec = register(registry, IntGaugeVec::new(Opts::new(name, help), &[label]).expect("a valid metric"));
    for value in values {
        vec.with_label_values(&[value]);
    }
    vec
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let http_requests = register(
        &registry,
        IntCounterVec::new(
            Opts::new("mcpgw_cp_http_requests_total", "REST requests by method, route pattern and status."),
            &["method", "route", "status"],
        )
        .expect("a valid metric"),
    );
    Metrics {
        http_requests,
        http_duration: histogram(
            &registry,
            "mcpgw_cp_http_request_duration_seconds",
            "REST request latency by method and route pattern.",
            &["method", "route"],
        ),
        health_checks: counter(
            &registry,
            "mcpgw_cp_health_checks_total",
            "Active MCP health probes run by this replica, by outcome (healthy, unhealthy).",
            "outcome",
            &["healthy", "unhealthy"],
        ),
        health_duration: histogram(
            &registry,
            "mcpgw_cp_health_check_duration_seconds",
            "Active MCP health probe latency, by outcome.",
            &["outcome"],
        ),
        discovery_runs: counter(
            &registry,
            "mcpgw_cp_discovery_runs_total",
            "Capability discovery runs, by outcome (found; failed: no instance answered; error: not run).",
            "outcome",
            &["found", "failed", "error"],
        ),
        discovery_duration: histogram(
            &registry,
            "mcpgw_cp_discovery_duration_seconds",
            "Capability discovery run duration, by outcome.",
            &["outcome"],
        ),
        routing_publishes: register(
            &registry,
            IntCounter::new("mcpgw_cp_routing_publishes_total", "Routing tables this replica published.")
                .expect("a valid metric"),
        ),
        routing_version: int_gauge(
            &registry,
            "mcpgw_cp_routing_version",
            "Version of the routing table this replica serves to proxies.",
        ),
        proxies_connected: int_gauge(
            &registry,
            "mcpgw_cp_proxies_connected",
            "Proxy routing streams connected to this replica.",
        ),
        proxies_lagging: int_gauge(
            &registry,
            "mcpgw_cp_proxies_lagging",
            "Connected proxies that have not applied this replica's routing version.",
        ),
        proxy_lag_max: int_gauge(
            &registry,
            "mcpgw_cp_proxy_lag_versions_max",
            "Largest gap between this replica's routing version and a connected proxy's applied one.",
        ),
        proxy_nacks: int_gauge(
            &registry,
            "mcpgw_cp_proxies_refusing",
            "Connected proxies whose last answer to an update was a refusal (see GET /api/v1/proxies).",
        ),
        leader: int_gauge(
            &registry,
            "mcpgw_cp_leader",
            "1 while this replica runs health checks and discovery.",
        ),
        db_connections: gauge_vec(
            &registry,
            "mcpgw_cp_db_pool_connections",
            "Database pool connections by state (idle, in_use).",
            "state",
            &["idle", "in_use"],
        ),
        db_max: int_gauge(&registry, "mcpgw_cp_db_pool_max_connections", "Database pool size limit."),
        db_gets: gauge_vec(
            &registry,
            "mcpgw_cp_db_pool_gets",
            "Connections taken from the database pool since start, by how (direct, waited, timed_out).",
            "how",
            &["direct", "waited", "timed_out"],
        ),
        db_wait_seconds: register(
            &registry,
            prometheus::Gauge::new(
                "mcpgw_cp_db_pool_wait_seconds",
                "Time spent waiting for a database connection since start.",
            )
            .expect("a valid metric"),
        ),
        scrape: Mutex::new(()),
        otlp_spans: counter(
            &registry,
            "mcpgw_cp_otlp_spans_total",
            "Trace spans by outcome: exported, dropped (export queue full: the collector is down or slow), \
             failed (the collector refused the batch or could not be reached).",
            "outcome",
            &["exported", "dropped", "failed"],
        ),
        audit_records: counter(
            &registry,
            "mcpgw_cp_audit_records_total",
            "Audit records received from proxies, by result (written, duplicate, expired).",
            "result",
            &["written", "duplicate", "expired"],
        ),
        audit_batches: counter(
            &registry,
            "mcpgw_cp_audit_batches_total",
            "Audit batches received from proxies, by result (ok: committed and acknowledged; error).",
            "result",
            &["ok", "error"],
        ),
        registry,
    }
});

/// `GET /metrics`: the Prometheus text format.
pub async fn serve(state: web::Data<AppState>) -> HttpResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    let families = {
        let _one = METRICS.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        METRICS.read(&state);
        METRICS.registry.gather()
    };
    match encoder.encode(&families, &mut body) {
        Ok(()) => HttpResponse::Ok().content_type(encoder.format_type()).body(body),
        Err(error) => {
            tracing::error!(%error, "Cannot encode the metrics.");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Middleware around every route: counts the request by method, route pattern (`unmatched` when no route
/// took it) and status, and observes its latency.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    // Resolved from the route table before routing (so a request refused by a middleware counts too).
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    // The request's span (a child of the caller's `traceparent`), current for everything it does.
    let span = if crate::telemetry::exporting() {
        tracing::info_span!(
            "http.request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    let parent =
        req.headers().get("traceparent").and_then(|v| mcpgw_proto::otlp::TraceParent::parse(v.as_bytes()));
    let answered = crate::telemetry::traced(span.clone(), parent, next.call(req)).await;
    let status = match &answered {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    METRICS.http_requests.with_label_values(&[method.as_str(), &route, status.as_str()]).inc();
    METRICS
        .http_duration
        .with_label_values(&[method.as_str(), &route])
        .observe(started.elapsed().as_secs_f64());
    answered
}
