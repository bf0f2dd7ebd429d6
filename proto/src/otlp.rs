//! OpenTelemetry trace export shared by both binaries: spans are handed to a bounded queue that never
//! blocks (a full queue drops the span and counts it), and one background task sends them in batches to an
//! OTLP collector over HTTP/protobuf (`<endpoint>/v1/traces`, the default) or gRPC. A collector that is
//! down or slow costs the request path nothing but the `dropped` counter; a failed batch is counted and
//! not retried (traces are evidence, not data that must not be lost).
//!
//! W3C trace context (`traceparent`) is parsed and written here too, and the trace id of the work under way
//! is set around every poll of its future (`InTrace`), so that every log line written for it carries it
//! (`logs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

pub use opentelemetry;
pub use opentelemetry_sdk;

/// Spans waiting for export; more are dropped (and counted) rather than held.
pub const QUEUE: usize = 8192;
/// Largest batch sent at once.
const BATCH: usize = 512;
/// How long spans wait for a batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest time one export may take before its batch is counted as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed export, spans are refused (and counted as dropped) for this long, doubling up to
/// `MAX_BACKOFF` while the collector keeps failing: a dead collector costs a sampled request an atomic
/// load, its phases' clock reads and a counter, not the building and encoding of spans nobody receives.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest collector status line read back.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies, `POST <endpoint>/v1/traces`.
    #[value(name = "http/protobuf", alias = "http")]
    HttpProtobuf,
    /// OTLP/gRPC, `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
    Grpc,
}

/// The tracing flags both binaries take.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// OpenTelemetry collector to send traces to (`http://collector:4318`; with `--otlp-protocol grpc`
    /// usually `http://collector:4317`). Unset: no traces are exported (trace ids still reach logs, audit
    /// records and upstreams).
    #[arg(long, env = "MCPGW_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// `http/protobuf` (`POST <endpoint>/v1/traces`) or `grpc`.
    #[arg(long, env = "MCPGW_OTLP_PROTOCOL", value_enum, default_value = "http/protobuf", global = true)]
    pub otlp_protocol: Protocol,

    /// Share of new traces recorded (0 to 1); a trace continued from a caller's `traceparent` follows the
    /// caller's sampled flag.
    #[arg(long, env = "MCPGW_OTLP_SAMPLE_RATIO", default_value_t = 1.0, global = true)]
    pub otlp_sample_ratio: f64,
}

/// Validated tracing settings: where to export, and how much of it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: url::Url,
    pub protocol: Protocol,
    pub sample_ratio: f64,
}

impl Args {
    /// `None` when no endpoint is set; `Err((flag, reason))` for a setting that cannot be used.
    pub fn validate(&self) -> Result<Option<Settings>, (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.otlp_sample_ratio) {
            return Err(("otlp-sample-ratio", "must be between 0 and 1".into()));
        }
        let Some(raw) = self.otlp_endpoint.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let endpoint = url::Url::parse(raw).map_err(|e| ("otlp-endpoint", format!("{raw:?}: {e}")))?;
        Target::new(&endpoint, self.otlp_protocol).map_err(|e| ("otlp-endpoint", e))?;
        Ok(Some(Settings { endpoint, protocol: self.otlp_protocol, sample_ratio: self.otlp_sample_ratio }))
    }
}

impl Settings {
    /// Whether a new trace is recorded.
    pub fn sample_new(&self) -> bool {
        self.sample_ratio >= 1.0 || ((ids::next_u64() >> 11) as f64 / (1u64 << 53) as f64) < self.sample_ratio
    }
}

/// Export counters, read by each binary's `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (the collector is down or slow), or not built while
    /// the exporter was closed after a failure.
    pub dropped: AtomicU64,
    /// Spans in batches the collector refused or that could not be sent.
    pub failed: AtomicU64,
}

/// The handle spans are submitted to; cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: mpsc::Sender<SpanData>,
    pub stats: Arc<Stats>,
    /// False while the collector is failing (backing off): spans are not even built.
    open: Arc<AtomicBool>,
}

impl Exporter {
    /// The handle and the task that exports (run it on a Tokio runtime: `Worker::run`). `endpoint` is the
    /// collector's base URL (`http(s)://host:port[/prefix]`); `service` names this process in the traces.
    pub fn new(
        endpoint: &url::Url,
        protocol: Protocol,
        service: &'static str,
        instance: &str,
    ) -> Result<(Self, Worker), String> {
        let target = Target::new(endpoint, protocol)?;
        let resource = Resource::builder_empty()
            .with_attributes([
                opentelemetry::KeyValue::new("service.name", service),
                opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                opentelemetry::KeyValue::new("service.instance.id", instance.to_owned()),
            ])
            .build();
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let open = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            rx,
            target,
            resource: ResourceAttributesWithSchema::from(&resource),
            stats: stats.clone(),
            open: open.clone(),
        };
        Ok((Self { queue, stats, open }, worker))
    }

    /// Whether spans are taken now; while the collector fails they are not (build none, and count them
    /// with [`Self::refused`]).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts `spans` not built because the exporter is closed.
    pub fn refused(&self, spans: u64) {
        self.stats.dropped.fetch_add(spans, Ordering::Relaxed);
    }

    /// Queues `span` for export; never waits.
    pub fn submit(&self, span: SpanData) {
        if !self.is_open() || self.queue.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where batches go.
enum Target {
    Http {
        url: url::Url,
        tls: Option<tokio_rustls::TlsConnector>,
    },
    Grpc {
        endpoint: Box<tonic::transport::Endpoint>,
        client: Option<TraceServiceClient<tonic::transport::Channel>>,
    },
}

impl Target {
    fn new(endpoint: &url::Url, protocol: Protocol) -> Result<Self, String> {
        let https = match endpoint.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("the OTLP endpoint must be http:// or https://, not {other}://")),
        };
        if endpoint.host_str().is_none() {
            return Err("the OTLP endpoint has no host".into());
        }
        match protocol {
            Protocol::HttpProtobuf => {
                let base = endpoint.as_str().trim_end_matches('/');
                let url = url::Url::parse(&format!("{base}/v1/traces")).map_err(|e| e.to_string())?;
                let tls = https.then(|| crate::tls::client_connector(crate::tls::web_roots()));
                Ok(Self::Http { url, tls })
            }
            Protocol::Grpc => {
                let mut ep = tonic::transport::Endpoint::from_shared(endpoint.as_str().to_owned())
                    .map_err(|e| e.to_string())?
                    .connect_timeout(EXPORT_TIMEOUT)
                    .timeout(EXPORT_TIMEOUT);
                if https {
                    ep = ep
                        .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| e.to_string())?;
                }
                Ok(Self::Grpc { endpoint: Box::new(ep), client: None })
            }
        }
    }

    async fn send(&mut self, request: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Self::Http { url, tls } => {
                let status = post(url, tls.as_ref(), request.encode_to_vec()).await?;
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("the collector answered {status}"))
                }
            }
            Self::Grpc { endpoint, client } => {
                let client = match client {
                    Some(client) => client,
                    None => client.insert(TraceServiceClient::new(endpoint.connect_lazy())),
                };
                client.export(request).await.map(drop).map_err(|s| format!("{}: {}", s.code(), s.message()))
            }
        }
    }
}

/// The export task: batches what the queue holds and sends it, until every `Exporter` is dropped.
pub struct Worker {
    rx: mpsc::Receiver<SpanData>,
    target: Target,
    resource: ResourceAttributesWithSchema,
    stats: Arc<Stats>,
    open: Arc<AtomicBool>,
}

impl Worker {
    pub async fn run(self) {
        let Self { mut rx, mut target, resource, stats, open } = self;
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_warning: Option<tokio::time::Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        loop {
            // Wait for a first span, then up to FLUSH_EVERY for the batch to fill.
            match rx.recv().await {
                Some(span) => batch.push(span),
                None => return,
            }
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(span)) => batch.push(span),
                    Ok(None) | Err(_) => break,
                }
            }
            let count = batch.len() as u64;
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let request = ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans, &resource),
            };
            let outcome = tokio::time::timeout(EXPORT_TIMEOUT, target.send(request))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {EXPORT_TIMEOUT:?}")));
            match outcome {
                Ok(()) => {
                    stats.exported.fetch_add(count, Ordering::Relaxed);
                    backoff = FIRST_BACKOFF;
                }
                Err(error) => {
                    stats.failed.fetch_add(count, Ordering::Relaxed);
                    // Closed for the backoff: what is queued meanwhile is dropped unread, then one batch
                    // tries the collector again.
                    open.store(false, Ordering::Relaxed);
                    let until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if let Target::Grpc { client, .. } = &mut target {
                        *client = None;
                    }
                    // One warning a minute: a collector that is down must not flood the logs.
                    let now = tokio::time::Instant::now();
                    if last_warning.is_none_or(|at| now - at >= Duration::from_secs(60)) {
                        last_warning = Some(now);
                        tracing::warn!(%error, spans = count, "Could not export traces to the OTLP collector.");
                    }
                    loop {
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(_)) => {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                    open.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One HTTP/1.1 POST of an OTLP protobuf body; the status code the collector answered.
async fn post(
    url: &url::Url,
    tls: Option<&tokio_rustls::TlsConnector>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().ok_or("no port")?;
    let tcp = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nUser-Agent: mcpgw/{}\r\nConnection: close\r\n\r\n",
        url.path(),
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    match tls {
        None => exchange(tcp, head, body).await,
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(
                host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            )
            .map_err(|e| e.to_string())?;
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(stream, head, body).await
        }
    }
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    head: String,
    body: Vec<u8>,
) -> Result<u16, String> {
    let mut message = head.into_bytes();
    message.extend_from_slice(&body);
    stream.write_all(&message).await.map_err(|e| format!("sending: {e}"))?;
    stream.flush().await.map_err(|e| format!("sending: {e}"))?;
    let mut read = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        if let Some(end) = read.windows(2).position(|w| w == b"\r\n") {
            return status_code(&read[..end]).ok_or_else(|| "the collector's answer is not HTTP".into());
        }
        if read.len() > MAX_STATUS_LINE {
            return Err("the collector's status line is too long".into());
        }
        let n = stream.read(&mut buf).await.map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the collector closed the connection without answering".into());
        }
        read.extend_from_slice(&buf[..n]);
    }
}

/// The status code of an HTTP/1.x status line.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A W3C trace context: the `traceparent` header (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (a later version's extra fields are ignored, as the
    /// specification asks); `None` when malformed or when either id is all zeros.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 || (bytes.len() > 55 && bytes[55] != b'-') {
            return None;
        }
        let (version, rest) = value.split_at(2);
        if version == "ff" || !is_lower_hex(version) || (version == "00" && bytes.len() != 55) {
            return None;
        }
        let (trace, span, flags) = (&rest[1..33], &rest[34..50], &rest[51..53]);
        if rest.as_bytes()[0] != b'-' || rest.as_bytes()[33] != b'-' || rest.as_bytes()[50] != b'-' {
            return None;
        }
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
        let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The header value.
    pub fn header(&self) -> String {
        String::from_utf8_lossy(&self.header_bytes()).into_owned()
    }

    /// The header value, without allocating.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id.to_bytes(), &mut out[3..35]);
        hex_into(&self.span_id.to_bytes(), &mut out[36..52]);
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

/// A trace id as 32 lowercase hex digits, without allocating.
pub fn trace_hex(id: TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_into(&id.to_bytes(), &mut out);
    out
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Random trace and span ids from a per-thread generator (xoshiro256++ seeded from the OS): unique, not
/// secret, and a few nanoseconds each.
pub mod ids {
    use std::cell::Cell;

    use opentelemetry::trace::{SpanId, TraceId};

    thread_local! {
        static STATE: Cell<[u64; 4]> = Cell::new(seed());
    }

    fn seed() -> [u64; 4] {
        let mut bytes = [0u8; 32];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: the clock and the thread still make ids unique enough for tracing.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes[..16].copy_from_slice(&now.as_nanos().to_le_bytes());
        }
        let mut state = [0u64; 4];
        for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        }
        if state == [0; 4] {
            state[0] = 0x9e37_79b9_7f4a_7c15;
        }
        state
    }

    /// The next 64 random bits of this thread's generator.
    pub fn next_u64() -> u64 {
        STATE.with(|cell| {
            let mut s = cell.get();
            let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            cell.set(s);
            result
        })
    }

    pub fn trace_id() -> TraceId {
        loop {
            let id = (u128::from(next_u64()) << 64) | u128::from(next_u64());
            if id != 0 {
                return TraceId::from(id);
            }
        }
    }

    pub fn span_id() -> SpanId {
        loop {
            let id = next_u64();
            if id != 0 {
                return SpanId::from(id);
            }
        }
    }
}

thread_local! {
    /// The trace of the request or task being polled on this thread, for log lines (`logs`).
    static CURRENT: std::cell::Cell<Option<TraceId>> = const { std::cell::Cell::new(None) };
}

/// A future polled with `id` as the current trace of the log lines it writes. It holds the future by
/// pinned reference: a request's future (tens of KiB) is not moved into it, which would cost a copy.
pub struct InTrace<'a, F> {
    id: TraceId,
    inner: std::pin::Pin<&'a mut F>,
}

impl<'a, F> InTrace<'a, F> {
    pub fn new(id: TraceId, inner: std::pin::Pin<&'a mut F>) -> Self {
        Self { id, inner }
    }
}

impl<F: std::future::Future> std::future::Future for InTrace<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let previous = CURRENT.replace(Some(self.id));
        let outcome = self.inner.as_mut().poll(cx);
        CURRENT.set(previous);
        outcome
    }
}

/// Runs `work` with `trace` as the current trace of its log lines.
pub async fn in_trace<F: std::future::Future>(trace: TraceId, work: F) -> F::Output {
    let work = std::pin::pin!(work);
    InTrace::new(trace, work).await
}

/// The trace of the work being polled on this thread, if it runs in one.
pub fn current() -> Option<TraceId> {
    CURRENT.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_refuses_malformed_values() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).unwrap();
        assert_eq!(parsed.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parsed.sampled);
        assert_eq!(parsed.header().as_bytes(), header);
        assert_eq!(&trace_hex(parsed.trace_id), b"4bf92f3577b34da6a3ce929d0e0e4736");
        let unsampled =
            TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // A later version may append fields.
        assert!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some()
        );
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ids_are_never_zero_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids::trace_id();
            assert_ne!(id, TraceId::INVALID);
            assert!(seen.insert(id));
            assert_ne!(ids::span_id(), SpanId::INVALID);
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH"), None);
    }
}
