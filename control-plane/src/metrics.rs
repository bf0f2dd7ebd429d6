//! Prometheus metrics of the control plane, in a registry of its own, served at `GET /metrics` on the REST
//! listener (public, like `/health`: counts only, no label from a request).

use std::sync::LazyLock;

use actix_web::HttpResponse;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

use crate::db::store::audit::Inserted;

pub struct Metrics {
    registry: Registry,
    /// Audit records received from proxies: `written`, `duplicate` (sent again, already stored),
    /// `expired` (older than `--audit-retention`, not written).
    pub audit_records: IntCounterVec,
    /// Audit batches: `ok` (committed and acknowledged), `error` (the stream ended; the proxy resends).
    pub audit_batches: IntCounterVec,
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

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    Metrics {
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
pub async fn serve() -> HttpResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&METRICS.registry.gather(), &mut body) {
        Ok(()) => HttpResponse::Ok().content_type(encoder.format_type()).body(body),
        Err(error) => {
            tracing::error!(%error, "Cannot encode the metrics.");
            HttpResponse::InternalServerError().finish()
        }
    }
}
