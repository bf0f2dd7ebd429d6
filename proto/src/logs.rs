//! The log format both binaries write: text or JSON lines on stderr, filtered by `RUST_LOG` (default
//! `info`), each line written while a request or task is served carrying its trace id (`trace_id`, the
//! W3C id also found in the audit record and, when exported, in the collector).

use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The subscriber a layer beside the log output is added to.
pub type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;

/// Installs the global subscriber with `layer` (an OpenTelemetry layer, or none) beside the log output; a
/// second call (tests) is a no-op.
///
/// `RUST_LOG`'s filter is global, not the log layer's own: its level then caps every callsite (and the
/// `log` records of libraries such as Pingora are not even formatted above it). A per-layer filter
/// leaves the global level at TRACE, and Pingora's debug records cost 100,000 instructions a request.
pub fn init<L>(json: bool, layer: L)
where
    L: tracing_subscriber::Layer<Base> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(layer);
    let _ = if json {
        // The spans only OpenTelemetry needs stay out of the lines.
        let format = Format::default().json().with_current_span(false).with_span_list(false);
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(WithTrace { inner: format, json: true });
        registry.with(fmt).try_init()
    } else {
        // Colour codes would split `http_addr=…` in the text that scripts and tests read.
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .event_format(WithTrace { inner: Format::default(), json: false });
        registry.with(fmt).try_init()
    };
}

/// A log format with the current trace id added: `trace_id=<hex>` at the end of a text line, a
/// `"trace_id"` member first in a JSON one.
struct WithTrace<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTrace<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        with_trace(self.json, writer, |w| self.inner.format_event(ctx, w, event))
    }
}

fn with_trace(
    json: bool,
    mut writer: Writer<'_>,
    format: impl FnOnce(Writer<'_>) -> std::fmt::Result,
) -> std::fmt::Result {
    let Some(trace) = crate::otlp::current() else {
        return format(writer);
    };
    let mut line = String::with_capacity(256);
    format(Writer::new(&mut line))?;
    let body = line.strip_suffix('\n').unwrap_or(&line);
    if json {
        match body.strip_prefix('{') {
            Some(rest) => writeln!(writer, "{{\"trace_id\":\"{trace}\",{rest}"),
            None => writeln!(writer, "{body}"),
        }
    } else {
        writeln!(writer, "{body} trace_id={trace}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(json: bool, trace: Option<&str>) -> String {
        let mut out = String::new();
        let write = |w: Writer<'_>| {
            let mut w = w;
            if json {
                writeln!(w, "{{\"level\":\"INFO\",\"message\":\"hi\"}}")
            } else {
                writeln!(w, "INFO hi")
            }
        };
        match trace {
            None => with_trace(json, Writer::new(&mut out), write).unwrap(),
            Some(hex) => {
                let id = opentelemetry::trace::TraceId::from_hex(hex).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(crate::otlp::in_trace(id, async {
                    with_trace(json, Writer::new(&mut out), write).unwrap();
                }));
            }
        }
        out
    }

    #[test]
    fn lines_carry_the_current_trace_id() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(render(false, None), "INFO hi\n");
        assert_eq!(render(false, Some(id)), format!("INFO hi trace_id={id}\n"));
        assert_eq!(render(true, None), "{\"level\":\"INFO\",\"message\":\"hi\"}\n");
        assert_eq!(
            render(true, Some(id)),
            format!("{{\"trace_id\":\"{id}\",\"level\":\"INFO\",\"message\":\"hi\"}}\n")
        );
    }
}
