//! Audit records: one per MCP request whatever its end, with what happened; shipped in acknowledged
//! batches; spilled to disk while the control plane refuses them and replayed once, also after the proxy
//! was killed; `--audit-overflow refuse` refuses requests whose record could not be kept.

use mcpgw_proto::v1::resource::Kind as RKind;
use mcpgw_proto::v1::{AuditArguments, AuditRecord};
use serde_json::json;

use crate::support::*;

async fn post(url: &str, key: Option<&str>, id: u32, tool: &str, extra: &[(&str, &str)]) -> u16 {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "hello", "token": "s3cret"}}});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A counter of the proxy's `/metrics`.
async fn metric(proxy: &ProxyProcess, series: &str) -> u64 {
    let text = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

async fn wait_metric(proxy: &ProxyProcess, series: &str, at_least: u64) {
    within(&format!("{series} ≥ {at_least} (log: {})", proxy.log.display()), async {
        while metric(proxy, series).await < at_least {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn by_request_id<'a>(records: &'a [AuditRecord], id: &str) -> &'a AuditRecord {
    let found: Vec<_> = records.iter().filter(|r| r.request_id == id).collect();
    assert_eq!(found.len(), 1, "one record for request {id}: {records:#?}");
    found[0]
}

async fn routed(cp: &mut FakeControlPlane, upstream: &FakeUpstream, arguments: AuditArguments) {
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    for r in &mut table.upserts {
        if let Some(RKind::Server(s)) = r.kind.as_mut() {
            s.set_audit_arguments(arguments);
        }
    }
    table.upserts.push(api_key("stranger", "mcpgw_stranger-key", "elsewhere", 0));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, mcpgw_proto::v1::proxy_message::Kind::Ack(_)));
}

#[tokio::test]
async fn every_request_leaves_one_record_of_what_happened() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    routed(&mut cp, &upstream, AuditArguments::Hashed).await;
    let url = proxy.mcp_url("alpha");
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let headers = [("traceparent", trace), ("mcp-protocol-version", "2025-06-18")];
    assert_eq!(post(&url, Some(TEST_KEY), 1, "echo", &headers).await, 200);
    upstream.reply(Reply::Json(
        json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "no such method"}})
            .to_string(),
    ));
    assert_eq!(post(&url, Some(TEST_KEY), 2, "echo", &[]).await, 200);
    assert_eq!(post(&url, None, 3, "echo", &[]).await, 401);
    assert_eq!(post(&url, Some("mcpgw_stranger-key"), 4, "echo", &[]).await, 404);

    let records = cp.wait_audit(4).await;
    assert_eq!(records.len(), 4, "{records:#?}");
    let ok = by_request_id(&records, "1");
    assert_eq!(ok.outcome, "ok");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.principal, "api-key:test-key");
    assert_eq!(ok.tenant_id, "default");
    assert_eq!((ok.server.as_str(), ok.instance.as_str()), ("alpha", "inst-alpha"));
    assert_eq!((ok.method.as_str(), ok.target.as_str()), ("tools/call", "echo"));
    assert_eq!(ok.era, "2025-06-18");
    assert_eq!(ok.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok.client_addr, "127.0.0.1");
    assert!(ok.bytes_in > 50 && ok.bytes_out > 20, "{ok:?}");
    assert!(ok.arguments.starts_with("sha256:") && !ok.arguments.contains("s3cret"), "{ok:?}");
    assert_eq!(ok.id.len(), 16);
    assert_eq!(ok.id[6] >> 4, 7, "UUIDv7");
    assert!(!ok.proxy_id.is_empty());
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    assert!((now_us - ok.time_unix_us).abs() < 60_000_000, "{ok:?}");

    let error = by_request_id(&records, "2");
    assert_eq!((error.outcome.as_str(), error.rpc_error_code), ("error", Some(-32601)));
    let unauthenticated = by_request_id(&records, "3");
    assert_eq!((unauthenticated.outcome.as_str(), unauthenticated.status), ("unauthenticated", 401));
    assert_eq!(unauthenticated.principal, "");
    assert_eq!(unauthenticated.instance, "", "never reached an upstream");
    let forbidden = by_request_id(&records, "4");
    assert_eq!((forbidden.outcome.as_str(), forbidden.status), ("forbidden", 404));
    assert_eq!(
        (forbidden.principal.as_str(), forbidden.tenant_id.as_str()),
        ("api-key:stranger", "elsewhere")
    );
    // The control plane keeps a batch before it acknowledges it: the proxy counts it once the ack is in.
    wait_metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"acked\"}", 4).await;
    assert_eq!(metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"acked\"}").await, 4);
}

fn spill_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter(|e| e.is_ok()).count())
}

#[tokio::test]
async fn spilled_records_survive_a_kill_and_arrive_once() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let spill = std::env::temp_dir().join(format!("mcpgw-audit-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spill);
    let spill_arg = spill.to_str().unwrap().to_owned();
    cp.refuse_audit(true);
    let proxy = ProxyProcess::start(&cp.url(), &["--audit-spill-dir", &spill_arg]).await;
    routed(&mut cp, &upstream, AuditArguments::None).await;
    const CALLS: u32 = 30;
    for id in 0..CALLS {
        assert_eq!(post(&proxy.mcp_url("alpha"), None, id, "echo", &[]).await, 200);
    }
    wait_metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"spilled\"}", u64::from(CALLS)).await;
    assert!(spill_files(&spill) > 0);
    assert!(cp.audit_records().is_empty(), "the control plane refused every batch");
    drop(proxy); // SIGKILL

    cp.refuse_audit(false);
    let proxy = ProxyProcess::start(&cp.url(), &["--audit-spill-dir", &spill_arg]).await;
    let records = cp.wait_audit(CALLS as usize).await;
    wait_metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"replayed\"}", u64::from(CALLS)).await;
    within("the spill to empty", async {
        while spill_files(&spill) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Nothing is left to send, so nothing can arrive twice later.
    let records_now = cp.audit_records();
    assert_eq!(records_now.len(), records.len());
    let mut ids: Vec<String> = records_now.iter().map(|r| r.request_id.clone()).collect();
    ids.sort_by_key(|id| id.parse::<u32>().unwrap());
    assert_eq!(ids, (0..CALLS).map(|i| i.to_string()).collect::<Vec<_>>(), "each call once, none lost");
    let _ = std::fs::remove_dir_all(&spill);
}

#[tokio::test]
async fn records_wait_in_memory_while_the_control_plane_refuses_them() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    cp.refuse_audit(true);
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    routed(&mut cp, &upstream, AuditArguments::None).await;
    for id in 0..5 {
        assert_eq!(post(&proxy.mcp_url("alpha"), None, id, "echo", &[]).await, 200);
    }
    cp.refuse_audit(false);
    let records = cp.wait_audit(5).await;
    wait_metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"acked\"}", 5).await;
    assert_eq!(cp.audit_records().len(), 5, "{records:#?}");
}

/// With `refuse`, a request is served only when its record has a place: with the spill full and the
/// control plane away, requests get 503 `audit_unavailable` until the stream is back.
#[tokio::test]
async fn a_full_queue_refuses_new_requests_under_refuse() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let spill = std::env::temp_dir().join(format!("mcpgw-audit-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spill);
    cp.refuse_audit(true);
    let args = ["--audit-spill-dir", spill.to_str().unwrap(), "--audit-spill-max", "1", "--audit-queue", "1"];
    let proxy = ProxyProcess::start(&cp.url(), &[&args[..], &["--audit-overflow", "refuse"]].concat()).await;
    routed(&mut cp, &upstream, AuditArguments::None).await;
    let url = proxy.mcp_url("alpha");
    let mut served = 0;
    let refused = within("a request refused for want of an audit place", async {
        loop {
            match post(&url, None, served, "echo", &[]).await {
                200 => served += 1,
                status => return status,
            }
        }
    })
    .await;
    assert_eq!(refused, 503);
    assert!(metric(&proxy, "mcpgw_proxy_audit_records_total{result=\"refused\"}").await >= 1);
    cp.refuse_audit(false);
    let records = cp.wait_audit(served as usize).await;
    assert_eq!(records.len(), served as usize, "every served request has its record");
    within("requests served again", async {
        while post(&url, None, 1000, "echo", &[]).await != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&spill);
}
