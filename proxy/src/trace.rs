//! A request's trace: the W3C trace context continued from the caller's `traceparent` (or a new trace),
//! the `traceparent` each upstream attempt receives, and — when `--otlp-endpoint` is set and the trace is
//! sampled — the spans of the request's phases, handed to the exporter when the request ends.
//!
//! Spans (all in the request's trace; the first is the caller's span's child):
//!
//! | span | kind | from → to |
//! |---|---|---|
//! | `<mcp method> [<target>]` (or `<HTTP method> <path>`) | server | request head → response end |
//! | `authenticate` | internal | body read → principal known |
//! | `authorize` | internal | principal known → admitted (policy, limits) |
//! | `select` | internal | admitted → first upstream attempt (plan, instance choice) |
//! | `upstream <instance>` | client | attempt sent → its answer's head (its id is the upstream's parent) |
//! | `stream` | internal | answer's head → its last byte to the client |
//!
//! Nothing here allocates unless the trace is recorded, except the `traceparent` of a new trace.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use mcpgw_proto::otlp::opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use mcpgw_proto::otlp::opentelemetry::{InstrumentationScope, KeyValue, Value};
use mcpgw_proto::otlp::opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use mcpgw_proto::otlp::{Exporter, Settings, TraceParent, ids};
use pingora::http::RequestHeader;

use crate::headers::Noted;

/// The exporter and what decides which traces it gets.
pub struct Tracer {
    pub exporter: Exporter,
    settings: Settings,
    scope: InstrumentationScope,
}

impl Tracer {
    pub fn new(exporter: Exporter, settings: Settings) -> Self {
        let scope =
            InstrumentationScope::builder("mcpgw-proxy").with_version(env!("CARGO_PKG_VERSION")).build();
        Self { exporter, settings, scope }
    }
}

/// One upstream attempt of a recorded trace.
pub struct Attempt {
    span: SpanId,
    instance: Arc<str>,
    authority: String,
    start: Instant,
    end: Option<Instant>,
    /// The client got the answer's head (the attempt answered).
    answered: Option<Instant>,
}

/// What becomes of a request's spans, decided when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// Not sampled: no spans, no marks.
    Off,
    /// Sampled while the exporter refused spans (the collector failing): none are made; its phases are
    /// marked and its upstream attempts counted, so that the spans it would have had are counted as
    /// dropped when it ends.
    Refused { attempts: u32 },
    /// Spans are made and exported.
    Recorded,
}

/// A request's trace context and, when recorded, the marks its spans are made from.
pub struct Trace {
    pub id: TraceId,
    /// The caller's span, `INVALID` for a trace that starts here.
    parent: SpanId,
    /// The request's span on this proxy.
    span: SpanId,
    sampling: Sampling,
    /// The caller sent a valid `traceparent`.
    continued: bool,
    pub body_read: Option<Instant>,
    pub authenticated: Option<Instant>,
    pub admitted: Option<Instant>,
    attempts: Vec<Attempt>,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            id: TraceId::INVALID,
            parent: SpanId::INVALID,
            span: SpanId::INVALID,
            sampling: Sampling::Off,
            continued: false,
            body_read: None,
            authenticated: None,
            admitted: None,
            attempts: Vec::new(),
        }
    }
}

impl Trace {
    /// The trace of a request with header `req`: the caller's (its sampled flag decides recording) or a
    /// new one (sampled per `--otlp-sample-ratio`). A sampled trace is not recorded while the exporter
    /// refuses spans: it costs the request its marks' clock reads, not the spans' building.
    pub fn start(req: &RequestHeader, noted: Noted, tracer: Option<&Tracer>) -> Self {
        let caller = noted
            .get(&req.headers, &crate::headers::TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_bytes()));
        let (id, parent, sampled) = match caller {
            Some(c) => (c.trace_id, c.span_id, c.sampled),
            None => (ids::trace_id(), SpanId::INVALID, tracer.is_some_and(|t| t.settings.sample_new())),
        };
        let sampling = match tracer {
            Some(t) if sampled && t.exporter.is_open() => Sampling::Recorded,
            Some(_) if sampled => Sampling::Refused { attempts: 0 },
            _ => Sampling::Off,
        };
        Self { id, parent, span: ids::span_id(), sampling, continued: caller.is_some(), ..Self::default() }
    }

    /// Whether spans are made and exported.
    pub fn recorded(&self) -> bool {
        self.sampling == Sampling::Recorded
    }

    /// Whether phases are marked: the trace is sampled (recorded, or refused and counted).
    pub fn marks(&self) -> bool {
        self.sampling != Sampling::Off
    }

    /// Marks `at` on `slot` when the trace is sampled ([`Self::marks`]).
    pub fn mark(marks: bool, slot: &mut Option<Instant>) {
        if marks && slot.is_none() {
            *slot = Some(Instant::now());
        }
    }

    /// The `traceparent` of an upstream attempt to `instance`: a child of this request's span when the
    /// trace is recorded; the caller's own header (`None`: forwarded as it came) when it is not; for a new
    /// unrecorded trace, its id and this request's span, so the upstream's logs still carry the id this
    /// proxy logs and audits — with the sampled flag on when the trace was sampled but refused by a closed
    /// exporter (the upstream's own spans may still reach a collector), off otherwise.
    pub fn upstream(&mut self, instance: &Arc<str>, authority: &str) -> Option<[u8; 55]> {
        if let Sampling::Refused { attempts } = &mut self.sampling {
            *attempts += 1;
        }
        let span = if self.recorded() {
            let span = ids::span_id();
            self.attempts.push(Attempt {
                span,
                instance: instance.clone(),
                authority: authority.to_owned(),
                start: Instant::now(),
                end: None,
                answered: None,
            });
            span
        } else if self.continued {
            return None;
        } else {
            self.span
        };
        Some(TraceParent { trace_id: self.id, span_id: span, sampled: self.marks() }.header_bytes())
    }

    /// The current attempt ended (`answered`: its answer's head reached the client at that instant).
    pub fn attempt_ended(&mut self, answered: Option<Instant>) {
        if let Some(attempt) = self.attempts.last_mut().filter(|a| a.end.is_none()) {
            attempt.end = Some(Instant::now());
            attempt.answered = answered.filter(|at| *at >= attempt.start);
        }
    }

    /// Counts the spans of a trace refused at its start as dropped (its own, its phases', two an attempt's).
    pub fn count_refused(&self, tracer: &Tracer) {
        if let Sampling::Refused { attempts } = self.sampling {
            tracer.exporter.refused(self.spans(attempts as usize));
        }
    }

    /// The spans of a request that made `attempts` upstream attempts: its own, one a phase marked, two
    /// an attempt (its head, its stream).
    fn spans(&self, attempts: usize) -> u64 {
        let phases = [self.body_read, self.authenticated, self.admitted].iter().flatten().count();
        (1 + phases + 2 * attempts) as u64
    }

    /// Hands the request's spans to the exporter. `started` is when the request's head arrived.
    pub fn export(&mut self, tracer: &Tracer, started: Instant, root: Root<'_>) {
        if !self.recorded() {
            return;
        }
        if !tracer.exporter.is_open() {
            // The collector failed while the request ran: the spans are counted, not built.
            tracer.exporter.refused(self.spans(self.attempts.len()));
            return;
        }
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let wall = |at: Instant| wall_now - now.saturating_duration_since(at);
        let mut attributes = Vec::with_capacity(12);
        attributes.push(KeyValue::new("http.request.method", root.http_method.to_owned()));
        attributes.push(KeyValue::new("url.path", root.path.to_owned()));
        attributes.push(KeyValue::new("http.response.status_code", i64::from(root.status)));
        if let Some(method) = root.mcp_method {
            attributes.push(KeyValue::new("mcp.method.name", method.to_owned()));
        }
        if let Some(target) = root.target {
            let key = match root.mcp_method {
                Some("tools/call") => "gen_ai.tool.name",
                Some("prompts/get") => "gen_ai.prompt.name",
                Some("resources/read") => "mcp.resource.uri",
                _ => "mcpgw.target",
            };
            attributes.push(KeyValue::new(key, target.to_owned()));
        }
        if let Some(id) = root.request_id {
            attributes.push(KeyValue::new("jsonrpc.request.id", id.to_owned()));
        }
        if let Some(version) = root.protocol_version.filter(|v| !v.is_empty()) {
            attributes.push(KeyValue::new("mcp.protocol.version", version.to_owned()));
        }
        if let Some(server) = root.server {
            attributes.push(KeyValue::new("mcpgw.server", Value::String(server.clone().into())));
        }
        if let Some(instance) = root.instance {
            attributes.push(KeyValue::new("mcpgw.instance", Value::String(instance.clone().into())));
        }
        attributes.push(KeyValue::new("mcpgw.outcome", root.outcome.to_owned()));
        let name = match (root.mcp_method, root.target) {
            (Some(method), Some(target)) => format!("{method} {target}"),
            (Some(method), None) => method.to_owned(),
            (None, _) => format!("{} {}", root.http_method, root.path),
        };
        let failed = root.status == 0 || root.status >= 500;
        let status = if failed { Status::error(root.outcome.to_owned()) } else { Status::Unset };
        let parent = (self.parent, self.continued);
        self.emit(
            tracer,
            self.span,
            parent,
            SpanKind::Server,
            name.into(),
            (wall(started), wall_now),
            attributes,
            status,
        );

        let me = (self.span, false);
        let phases = [
            ("authenticate", self.body_read, self.authenticated),
            ("authorize", self.authenticated, self.admitted),
            ("select", self.admitted, self.attempts.first().map(|a| a.start)),
        ];
        for (name, from, to) in phases {
            if let (Some(from), Some(to)) = (from, to) {
                self.emit(
                    tracer,
                    ids::span_id(),
                    me,
                    SpanKind::Internal,
                    name.into(),
                    (wall(from), wall(to)),
                    Vec::new(),
                    Status::Unset,
                );
            }
        }
        let attempts = std::mem::take(&mut self.attempts);
        let last = attempts.len().saturating_sub(1);
        for (i, attempt) in attempts.into_iter().enumerate() {
            let end = attempt.end.unwrap_or(now);
            let head = attempt.answered.unwrap_or(end);
            let ok = attempt.answered.is_some() && (i < last || !failed);
            let attributes = vec![
                KeyValue::new("mcpgw.instance", Value::String(attempt.instance.clone().into())),
                KeyValue::new("server.address", attempt.authority),
            ];
            let status = if ok { Status::Unset } else { Status::error("no answer") };
            let name = format!("upstream {}", attempt.instance);
            self.emit(
                tracer,
                attempt.span,
                me,
                SpanKind::Client,
                name.into(),
                (wall(attempt.start), wall(head)),
                attributes,
                status,
            );
            if attempt.answered.is_some() {
                self.emit(
                    tracer,
                    ids::span_id(),
                    me,
                    SpanKind::Internal,
                    "stream".into(),
                    (wall(head), wall(end)),
                    Vec::new(),
                    Status::Unset,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        tracer: &Tracer,
        span: SpanId,
        (parent, remote): (SpanId, bool),
        kind: SpanKind,
        name: Cow<'static, str>,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) {
        tracer.exporter.submit(SpanData {
            span_context: SpanContext::new(self.id, span, TraceFlags::SAMPLED, false, TraceState::NONE),
            parent_span_id: parent,
            parent_span_is_remote: remote,
            span_kind: kind,
            name,
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracer.scope.clone(),
        });
    }
}

/// What the request span says of the request, gathered when it ends.
pub struct Root<'a> {
    pub http_method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub mcp_method: Option<&'a str>,
    pub target: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
    pub server: Option<&'a Arc<str>>,
    pub instance: Option<&'a Arc<str>>,
    pub outcome: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(traceparent: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        if let Some(tp) = traceparent {
            req.insert_header("traceparent", tp).unwrap();
        }
        req
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn an_unrecorded_callers_trace_goes_upstream_unchanged() {
        let mut trace = Trace::start(&request(Some(CALLER)), Noted::ANY, None);
        assert_eq!(trace.id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!trace.recorded());
        let name: Arc<str> = Arc::from("i");
        assert_eq!(trace.upstream(&name, "h:1"), None);
    }

    #[test]
    fn a_new_unrecorded_trace_still_reaches_the_upstream() {
        let mut trace = Trace::start(&request(Some("garbage")), Noted::ANY, None);
        assert_ne!(trace.id, TraceId::INVALID);
        let name: Arc<str> = Arc::from("i");
        let header = trace.upstream(&name, "h:1").unwrap();
        let sent = TraceParent::parse(&header).unwrap();
        assert_eq!(sent.trace_id, trace.id);
        assert!(!sent.sampled);
    }

    fn root() -> Root<'static> {
        Root {
            http_method: "POST",
            path: "/mcp/a",
            status: 200,
            mcp_method: Some("tools/call"),
            target: Some("echo"),
            request_id: Some("1"),
            protocol_version: None,
            server: None,
            instance: None,
            outcome: "ok",
        }
    }

    /// Paused clock: the exporter's backoff (1 s) cannot end while the test looks.
    #[tokio::test(start_paused = true)]
    async fn a_trace_sampled_while_the_collector_fails_is_counted_not_built() {
        use mcpgw_proto::otlp::Protocol;
        let endpoint = url::Url::parse("http://127.0.0.1:1").unwrap();
        let settings =
            Settings { endpoint: endpoint.clone(), protocol: Protocol::HttpProtobuf, sample_ratio: 1.0 };
        let (exporter, worker) = Exporter::new(&endpoint, settings.protocol, "mcpgw-proxy", "test").unwrap();
        let tracer = Tracer::new(exporter, settings);
        let stats = tracer.exporter.stats.clone();
        // A recorded request's spans go to a collector that refuses the connection: the exporter closes.
        let mut first = Trace::start(&request(None), Noted::ANY, Some(&tracer));
        assert!(first.recorded());
        first.export(&tracer, Instant::now(), root());
        tokio::spawn(worker.run());
        let mut waited = 0;
        while tracer.exporter.is_open() {
            assert!(waited < 100_000, "the exporter never closed");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            waited += 1;
        }
        assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 1);

        // Sampled now: marked and counted, nothing built; the upstream still gets a sampled traceparent.
        let mut trace = Trace::start(&request(None), Noted::ANY, Some(&tracer));
        assert!(!trace.recorded() && trace.marks());
        for slot in [&mut trace.body_read, &mut trace.authenticated] {
            Trace::mark(true, slot);
        }
        let name: Arc<str> = Arc::from("i");
        let sent = TraceParent::parse(&trace.upstream(&name, "h:1").unwrap()).unwrap();
        assert!(sent.sampled && sent.trace_id == trace.id && sent.span_id == trace.span);
        assert!(trace.attempts.is_empty(), "no attempt is kept for spans that are not built");
        trace.count_refused(&tracer);
        let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(dropped, 1 + 2 + 2, "its own span, two phases marked, one attempt's two");

        // A trace not sampled is neither marked nor counted.
        let unsampled = Trace::start(
            &request(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")),
            Noted::ANY,
            Some(&tracer),
        );
        assert!(!unsampled.marks());
        unsampled.count_refused(&tracer);
        assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), dropped);
    }
}
