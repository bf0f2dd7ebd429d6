//! One MCP-level probe of an instance: open a conversation in its era (discover or initialize) and run a
//! cheap list, within the timeout. The era that worked is remembered to skip the detection next time. A
//! stdio instance's probe starts its process, runs `initialize` and `ping`, and kills it: a process per
//! probe (see the README on its cost).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::mcp::{Era, McpClient};
use crate::model::TransportType;

/// Outcome of a probe: latency, and the error when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub latency: Duration,
    pub error: Option<String>,
    /// The era the instance answered in (kept as the next probe's hint).
    pub era: Option<Era>,
}

/// Probes `url` once.
pub async fn probe(
    client: &McpClient,
    url: &str,
    transport: TransportType,
    hint: Option<Era>,
    timeout: Duration,
) -> ProbeResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, async {
        let mut conn = client.connect_hinted(url, transport, hint).await.map_err(|e| e.to_string())?;
        let era = conn.era();
        let caps = conn.hello().capabilities.clone();
        let has = |name: &str| caps.as_ref().is_some_and(|c| c.get(name).is_some_and(|v| !v.is_null()));
        let cheap = if transport == TransportType::Stdio {
            Some("ping")
        } else if has("tools") {
            Some("tools/list")
        } else if has("resources") {
            Some("resources/list")
        } else if has("prompts") {
            Some("prompts/list")
        } else if era != Era::Modern {
            Some("ping")
        } else {
            None
        };
        let listed = match cheap {
            Some(method) => conn.request(method, json!({})).await.map(drop).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        conn.close().await;
        listed.map(|()| era)
    })
    .await;
    let latency = started.elapsed();
    match outcome {
        Ok(Ok(era)) => ProbeResult { latency, error: None, era: Some(era) },
        Ok(Err(error)) => ProbeResult { latency, error: Some(error), era: None },
        Err(_) => ProbeResult { latency, error: Some(format!("no answer within {timeout:?}")), era: None },
    }
}
