//! A real OpenTelemetry trace receiver (`tests/peers/otlp_receiver.py`, the official OTLP protobuf
//! definitions): OTLP/HTTP and OTLP/gRPC on 127.0.0.1, every span it receives readable as JSON.

use tokio::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::peers::{START_TIMEOUT, peers_dir, python};
use crate::process::Spawned;
use crate::{free_port, localhost, poll_until, wait_for_tcp};

pub struct OtlpReceiver {
    proc: Spawned,
    http: u16,
    grpc: u16,
}

impl OtlpReceiver {
    pub async fn start() -> Result<Self> {
        let (http, grpc) = (free_port()?, free_port()?);
        let mut cmd = Command::new(python()?);
        cmd.arg(peers_dir().join("otlp_receiver.py")).args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ]);
        let proc = Spawned::spawn("otlp-receiver", cmd)?;
        for port in [http, grpc] {
            wait_for_tcp(localhost(port), START_TIMEOUT).await.with_context(|| proc.describe())?;
        }
        Ok(Self { proc, http, grpc })
    }

    /// The OTLP/HTTP endpoint (`--otlp-endpoint`; spans go to `<it>/v1/traces`).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// The OTLP/gRPC endpoint (`--otlp-endpoint` with `--otlp-protocol grpc`).
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// Every span received so far, in the receiver's JSON form.
    pub fn spans(&self) -> Vec<Value> {
        self.proc
            .log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the spans received satisfy `check`, and returns them.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        poll_until(what, START_TIMEOUT, || async {
            let spans = self.spans();
            Ok(check(&spans).then_some(spans))
        })
        .await
        .with_context(|| format!("spans received: {:#?}", self.spans()))
    }
}
