//! Prometheus metrics of the data plane, registered once in the default registry (which Pingora's own
//! metrics share) and served on the admin listener.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder, register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec,
};

/// Buckets (seconds) for request latency: sub-millisecond proxying up to long tool calls.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

pub struct Metrics {
    /// Requests by server name, MCP method and HTTP status.
    pub requests: IntCounterVec,
    /// Time from request start until the upstream's response headers reached the client.
    pub response_latency: HistogramVec,
    /// Time from request start until the response ended (streams included).
    pub request_duration: HistogramVec,
    pub routing_table_version: IntGauge,
    pub routing_updates: IntCounterVec,
    pub control_plane_connected: IntGauge,
    /// SSE responses being streamed right now.
    pub open_streams: IntGauge,
    /// Breaker position per instance: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    /// 1 when the proxy runs with `--anonymous` (callers without credentials allowed everything).
    pub anonymous: IntGauge,
    /// Requests refused by a rate limit, by limit id (bounded: the limits of the routing table).
    pub rate_limited: IntCounterVec,
    /// Requests of global limits decided while no budget could be leased, by limit id and fail mode.
    pub rate_limit_unavailable: IntCounterVec,
    /// Client connections open on the MCP listener.
    pub connections_open: IntGauge,
    /// Connections refused over a cap, by cap (`per_client`, `total`).
    pub connections_refused: IntCounterVec,
    /// Connections closed because a request head did not arrive within --request-head-timeout.
    pub request_head_timeouts: IntCounter,
    /// Audit records by what happened to them: `queued`, `acked` (committed by the control plane),
    /// `spilled`, `replayed` (acknowledged from the spill), `dropped`, `refused`.
    pub audit_records: IntCounterVec,
    /// Bytes of audit batches spilled to disk.
    pub audit_spill_bytes: IntGauge,
    /// 1 while the audit stream to the control plane is up.
    pub audit_stream_connected: IntGauge,
    /// Spans by what became of them: `exported`, `dropped` (queue full), `failed` (the collector refused
    /// or could not be reached). Read from the exporter at scrape time.
    pub otlp_spans: IntCounterVec,
}

/// The exporter's counters, when spans are exported.
static OTLP: std::sync::OnceLock<std::sync::Arc<mcpgw_proto::otlp::Stats>> = std::sync::OnceLock::new();

/// Makes `/metrics` report the exporter's counters.
pub fn watch_otlp(stats: std::sync::Arc<mcpgw_proto::otlp::Stats>) {
    let _ = OTLP.set(stats);
}

/// Servers whose request-metric handles a thread keeps.
const HANDLES_KEPT: usize = 16;
/// (method, status) counters kept per server; other pairs are looked up each time.
const COUNTERS_KEPT: usize = 32;

/// A server's request-metric handles, resolved once: `with_label_values` hashes every label and takes
/// the family's lock (three lookups, ~900 instructions a request; BENCHMARKS.md, "Performance work").
struct ServerHandles {
    /// `None`: requests that matched no server (label `-`).
    server: Option<Arc<str>>,
    response_latency: Histogram,
    request_duration: Histogram,
    requests: Vec<(&'static str, &'static str, IntCounter)>,
}

thread_local! {
    static HANDLES: RefCell<Vec<ServerHandles>> = const { RefCell::new(Vec::new()) };
}

fn same_server(kept: &mut Option<Arc<str>>, server: Option<&Arc<str>>) -> bool {
    match (kept.as_ref(), server) {
        (None, None) => true,
        (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
        (Some(a), Some(b)) if a == b => {
            // The same name from a newer routing table: its pointer matches from now on.
            *kept = Some(b.clone());
            true
        }
        _ => false,
    }
}

/// Counts a request that ended on `server` (`None`: it matched none) with its MCP method and status
/// labels, its time to the answer's head and its whole duration.
pub fn observe_request(
    server: Option<&Arc<str>>,
    method: &'static str,
    status: &'static str,
    response_latency: Option<Duration>,
    duration: Duration,
) {
    HANDLES.with_borrow_mut(|kept| {
        let at = match kept.iter_mut().position(|h| same_server(&mut h.server, server)) {
            Some(at) => at,
            None => {
                let label = server.map_or("-", |s| &**s);
                if kept.len() == HANDLES_KEPT {
                    kept.pop();
                }
                kept.insert(
                    0,
                    ServerHandles {
                        server: server.cloned(),
                        response_latency: METRICS.response_latency.with_label_values(&[label]),
                        request_duration: METRICS.request_duration.with_label_values(&[label]),
                        requests: Vec::new(),
                    },
                );
                0
            }
        };
        let h = &mut kept[at];
        match h.requests.iter().find(|(m, s, _)| *m == method && *s == status) {
            Some((_, _, counter)) => counter.inc(),
            None => {
                let label = h.server.as_deref().unwrap_or("-");
                let counter = METRICS.requests.with_label_values(&[label, method, status]);
                counter.inc();
                if h.requests.len() < COUNTERS_KEPT {
                    h.requests.push((method, status, counter));
                }
            }
        }
        if let Some(latency) = response_latency {
            h.response_latency.observe(latency.as_secs_f64());
        }
        h.request_duration.observe(duration.as_secs_f64());
    });
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    Metrics {
    requests: register_int_counter_vec!(
        Opts::new("mcpgw_proxy_requests_total", "MCP requests handled, by server, method and HTTP status."),
        &["server", "method", "status"]
    )
    .expect("metric registers once"),
    response_latency: register_histogram_vec!(
        HistogramOpts::new(
            "mcpgw_proxy_response_latency_seconds",
            "Time until the response headers were sent to the client."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["server"]
    )
    .expect("metric registers once"),
    request_duration: register_histogram_vec!(
        HistogramOpts::new(
            "mcpgw_proxy_request_duration_seconds",
            "Time until the response ended, streams included."
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["server"]
    )
    .expect("metric registers once"),
    routing_table_version: register_int_gauge!(
        "mcpgw_routing_table_version",
        "Version of the routing table being served (0 = none yet)."
    )
    .expect("metric registers once"),
    routing_updates: register_int_counter_vec!(
        Opts::new("mcpgw_routing_updates_total", "Routing updates received, by result (applied, rejected)."),
        &["result"]
    )
    .expect("metric registers once"),
    control_plane_connected: register_int_gauge!(
        "mcpgw_control_plane_connected",
        "1 while the routing stream to the control plane is up."
    )
    .expect("metric registers once"),
    open_streams: register_int_gauge!("mcpgw_proxy_open_streams", "SSE responses being streamed to clients.")
        .expect("metric registers once"),
    breaker_state: register_int_gauge_vec!(
        Opts::new(
            "mcpgw_proxy_breaker_state",
            "Circuit breaker per instance: 0 closed, 1 open, 2 half-open."
        ),
        &["server", "instance"]
    )
    .expect("metric registers once"),
    breaker_transitions: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_breaker_transitions_total",
            "Circuit breaker transitions by server and new state."
        ),
        &["server", "to"]
    )
    .expect("metric registers once"),
    anonymous: register_int_gauge!(
        "mcpgw_proxy_anonymous_mode",
        "1 when callers without credentials are let through (--anonymous, development only)."
    )
    .expect("metric registers once"),
    rate_limited: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_rate_limited_total",
            "Requests refused with 429 by a rate limit, by limit id."
        ),
        &["limit"]
    )
    .expect("metric registers once"),
    rate_limit_unavailable: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_rate_limit_unavailable_total",
            "Requests of global rate limits decided while no budget could be leased (Redis or the control plane \
             away), by limit id and fail mode: open ones were checked against the proxy's own bucket, closed \
             ones refused with 503."
        ),
        &["limit", "mode"]
    )
    .expect("metric registers once"),
    connections_open: register_int_gauge!(
        "mcpgw_proxy_connections_open",
        "Client connections open on the MCP listener."
    )
    .expect("metric registers once"),
    connections_refused: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_connections_refused_total",
            "Client connections refused over --max-connections-per-client (per_client) or --max-connections (total)."
        ),
        &["cap"]
    )
    .expect("metric registers once"),
    request_head_timeouts: register_int_counter!(
        "mcpgw_proxy_request_head_timeouts_total",
        "Connections closed because a request head did not arrive within --request-head-timeout."
    )
    .expect("metric registers once"),
    audit_records: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_audit_records_total",
            "Audit records by result: queued, acked (committed by the control plane), spilled (written to \
             --audit-spill-dir), replayed (acknowledged from the spill), dropped (queue full, --audit-overflow \
             drop), refused (requests refused with 503, --audit-overflow refuse)."
        ),
        &["result"]
    )
    .expect("metric registers once"),
    audit_spill_bytes: register_int_gauge!(
        "mcpgw_proxy_audit_spill_bytes",
        "Bytes of audit batches waiting in --audit-spill-dir."
    )
    .expect("metric registers once"),
    audit_stream_connected: register_int_gauge!(
        "mcpgw_proxy_audit_stream_connected",
        "1 while the audit stream to the control plane is up."
    )
    .expect("metric registers once"),
    otlp_spans: register_int_counter_vec!(
        Opts::new(
            "mcpgw_proxy_otlp_spans_total",
            "Trace spans by outcome: exported, dropped (export queue full: the collector is down or slow), \
             failed (the collector refused the batch or could not be reached)."
        ),
        &["outcome"]
    )
    .expect("metric registers once"),
}
});

/// The default registry in the Prometheus text format.
pub fn render() -> Vec<u8> {
    LazyLock::force(&METRICS);
    if let Some(stats) = OTLP.get() {
        use std::sync::atomic::Ordering::Relaxed;
        for (outcome, value) in
            [("exported", &stats.exported), ("dropped", &stats.dropped), ("failed", &stats.failed)]
        {
            let counter = METRICS.otlp_spans.with_label_values(&[outcome]);
            counter.inc_by(value.load(Relaxed).saturating_sub(counter.get()));
        }
    }
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
    out
}

/// What the proxy reports to the control plane every few seconds: its request counters summed over servers
/// and methods, split by status class, and its open streams and connections.
pub fn stats() -> mcpgw_proto::v1::ProxyStats {
    use prometheus::core::Collector;
    let mut stats = mcpgw_proto::v1::ProxyStats::default();
    for family in METRICS.requests.collect() {
        for metric in family.get_metric() {
            let count = metric.get_counter().get_value() as u64;
            let status = metric.get_label().iter().find(|l| l.get_name() == "status").map(|l| l.get_value());
            stats.requests += count;
            match status.and_then(|s| s.as_bytes().first()) {
                Some(b'4') => stats.client_errors += count,
                Some(b'5') => stats.server_errors += count,
                _ => {}
            }
        }
    }
    stats.open_streams = METRICS.open_streams.get().max(0) as u64;
    stats.open_connections = METRICS.connections_open.get().max(0) as u64;
    stats
}
