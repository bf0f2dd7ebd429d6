//! Logs and traces. Logs: text or JSON lines on stderr, filtered by RUST_LOG (default `info`), each one
//! written for a REST request, health check or discovery run carrying its trace id. Traces (with
//! `--otlp-endpoint`): this crate's `tracing` spans — REST requests (continuing the caller's
//! `traceparent`), database queries, health checks, discovery runs — become OpenTelemetry spans, handed to
//! the shared exporter (`mcpgw_proto::otlp`) without waiting.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use mcpgw_proto::otlp::opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use mcpgw_proto::otlp::opentelemetry_sdk::error::OTelSdkResult;
use mcpgw_proto::otlp::opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanProcessor};
use mcpgw_proto::otlp::{self, Exporter, Settings, TraceParent, Worker};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};

use crate::config::LogFormat;

/// Set when spans are exported.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are exported: without, no span is made at all (`tracing::Span::none()`), so requests
/// pay nothing for them and log lines carry no span context.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Installs the global subscriber (a second call, in tests, is a no-op). With `otlp`, also the span
/// export: the returned worker must run on the server's runtime (`Worker::run`).
pub fn init(format: LogFormat, otlp: Option<&Settings>, instance: &str) -> Option<Worker> {
    let json = matches!(format, LogFormat::Json);
    let Some(settings) = otlp else {
        mcpgw_proto::logs::init(json, tracing_subscriber::layer::Identity::new());
        return None;
    };
    let (exporter, worker) =
        match Exporter::new(&settings.endpoint, settings.protocol, "mcpgw-control-plane", instance) {
            Ok(pair) => pair,
            Err(error) => {
                // Validated with the flags, so not expected; the logs must work regardless.
                mcpgw_proto::logs::init(json, tracing_subscriber::layer::Identity::new());
                tracing::error!(%error, "Traces will not be exported.");
                return None;
            }
        };
    crate::metrics::watch_otlp(exporter.stats.clone());
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue(exporter))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
        .build();
    let tracer = provider.tracer("mcpgw-control-plane");
    if let Err(error) = diesel::connection::set_default_instrumentation(query_spans) {
        eprintln!("mcpgw-control-plane: database queries will not be traced: {error}");
    }
    // Only this crate's spans: libraries' own (HTTP/2, gRPC, pool internals) would flood the collector.
    let spans = Targets::new().with_target("mcpgw_control_plane", LevelFilter::INFO);
    let _ = PROVIDER.set(provider);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(spans);
    mcpgw_proto::logs::init(json, layer);
    Some(worker)
}

/// Hands finished spans to the exporter's queue (never waits).
#[derive(Debug)]
struct Queue(Exporter);

impl SpanProcessor for Queue {
    fn on_start(
        &self,
        _span: &mut mcpgw_proto::otlp::opentelemetry_sdk::trace::Span,
        _cx: &opentelemetry::Context,
    ) {
    }

    fn on_end(&self, span: SpanData) {
        self.0.submit(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

use mcpgw_proto::otlp::opentelemetry;

/// Runs `work` in `span`: its logs carry the span's trace id, and, when spans are exported, it is recorded
/// with `parent` (a caller's `traceparent`) as its parent. Without export the trace id is the caller's or
/// a new one, so logs and audit records still correlate.
pub async fn traced<F: Future>(span: tracing::Span, parent: Option<TraceParent>, work: F) -> F::Output {
    let trace_id = if PROVIDER.get().is_some() {
        if let Some(parent) = parent {
            let context = opentelemetry::trace::SpanContext::new(
                parent.trace_id,
                parent.span_id,
                if parent.sampled {
                    opentelemetry::trace::TraceFlags::SAMPLED
                } else {
                    opentelemetry::trace::TraceFlags::default()
                },
                true,
                opentelemetry::trace::TraceState::NONE,
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
        }
        let id = span.context().span().span_context().trace_id();
        if id == TraceId::INVALID { new_id(parent) } else { id }
    } else {
        new_id(parent)
    };
    otlp::in_trace(trace_id, work.instrument(span)).await
}

/// Without export: the caller's trace, else the enclosing work's (a discovery run a REST request started),
/// else a new one.
fn new_id(parent: Option<TraceParent>) -> TraceId {
    match parent {
        Some(p) => p.trace_id,
        None => otlp::current().unwrap_or_else(otlp::ids::trace_id),
    }
}

/// Database queries as spans (children of the work that runs them): installed on every new connection
/// when spans are exported.
#[derive(Default)]
struct QuerySpans {
    /// Queries started and not yet finished, oldest first (a pipelined connection runs several).
    open: std::collections::VecDeque<tracing::Span>,
}

impl diesel::connection::Instrumentation for QuerySpans {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        use diesel::connection::InstrumentationEvent;
        match event {
            InstrumentationEvent::StartQuery { .. } if tracing::Span::current().is_none() => {
                // Queries outside any traced work (pollers, migrations) would each be a trace of their own.
                self.open.push_back(tracing::Span::none());
            }
            InstrumentationEvent::StartQuery { query, .. } => {
                let text = query.to_string();
                // Only the statement: bound values may be secrets.
                let sql = text.split(" -- binds:").next().unwrap_or_default();
                self.open.push_back(tracing::info_span!(
                    "db.query",
                    otel.name = %sql.split_whitespace().next().unwrap_or("query"),
                    otel.kind = "client",
                    db.system.name = "postgresql",
                    db.query.text = %sql,
                    otel.status_code = tracing::field::Empty,
                ));
            }
            InstrumentationEvent::FinishQuery { error, .. } => {
                if let Some(span) = self.open.pop_front()
                    && error.is_some()
                {
                    span.record("otel.status_code", "error");
                }
            }
            _ => {}
        }
    }
}

fn query_spans() -> Option<Box<dyn diesel::connection::Instrumentation>> {
    Some(Box::new(QuerySpans::default()))
}
