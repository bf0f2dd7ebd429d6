//! OpenTelemetry: a real OTLP receiver gets one trace spanning client → proxy → upstream (over OTLP/gRPC
//! from the proxy, OTLP/HTTP from the control plane), the upstream receives that trace with the proxy's
//! span as its parent, and the trace id is in the audit record and the log line of the request; with the
//! collector down, requests are served as before and the lost spans are counted.

use anyhow::Result;
use mcpgw_e2e::otlp::OtlpReceiver;
use mcpgw_e2e::{Gateway, McpHttp, PyServer, PyServerOpts, free_port, poll_until};
use serde_json::{Value, json};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

fn is_query(span: &Value) -> bool {
    span["attributes"]["db.system.name"] == "postgresql"
}

fn find(spans: &[Value], check: impl Fn(&Value) -> bool) -> Option<&Value> {
    spans.iter().find(|s| check(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_client_proxy_and_upstream() -> Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let (http, grpc) = (receiver.http_url(), receiver.grpc_url());
    let gw = Gateway::start_with_planes(
        &["--otlp-endpoint", &http],
        &["--otlp-endpoint", &grpc, "--otlp-protocol", "grpc", "--log-format", "json"],
    )
    .await?;
    let upstream = PyServer::start("traced", PyServerOpts::default()).await?;
    let url = gw.add_server("traced", &upstream.url(), "streamable_http").await?;

    // The client is in a trace already: the gateway continues it.
    let mut client = McpHttp::new(&url);
    client.extra_headers = vec![("traceparent".into(), format!("00-{TRACE}-{CLIENT_SPAN}-01"))];
    client.initialize().await?;
    let result = client.call_tool("request_header", json!({"name": "traceparent"})).await?;
    let received = crate::first_text(&result).unwrap_or_default().to_owned();
    let parts: Vec<&str> = received.split('-').collect();
    assert_eq!(parts.len(), 4, "the upstream got no traceparent: {result}");
    assert_eq!(parts[1], TRACE, "the upstream is in the client's trace");
    assert_ne!(parts[2], CLIENT_SPAN, "the proxy's span is the upstream's parent, not the client's");
    assert_eq!(parts[3], "01");
    let upstream_parent = parts[2].to_owned();

    let spans = receiver
        .wait_for("the proxy's spans of the tools/call", |spans| {
            find(spans, |s| s["span_id"] == upstream_parent.as_str()).is_some()
                && find(spans, |s| s["name"] == "tools/call request_header" && s["end_ns"].as_u64().is_some())
                    .is_some()
        })
        .await?;
    let server = find(&spans, |s| s["name"] == "tools/call request_header").expect("the request span");
    assert_eq!(server["service"], "mcpgw-proxy");
    assert_eq!(server["protocol"], "grpc");
    assert_eq!(server["kind"], "SERVER");
    assert_eq!(server["trace_id"], TRACE);
    assert_eq!(server["parent_span_id"], CLIENT_SPAN, "a child of the client's span");
    let attributes = &server["attributes"];
    assert_eq!(attributes["mcp.method.name"], "tools/call", "{server}");
    assert_eq!(attributes["gen_ai.tool.name"], "request_header", "{server}");
    assert_eq!(attributes["mcpgw.server"], "traced", "{server}");
    assert_eq!(attributes["mcpgw.outcome"], "ok", "{server}");
    assert_eq!(attributes["http.response.status_code"], 200, "{server}");
    let exchange = find(&spans, |s| s["span_id"] == upstream_parent.as_str()).expect("the upstream span");
    assert_eq!(exchange["kind"], "CLIENT", "{exchange}");
    assert_eq!(exchange["trace_id"], TRACE);
    assert_eq!(exchange["parent_span_id"], server["span_id"], "{exchange}");
    assert!(exchange["name"].as_str().is_some_and(|n| n.starts_with("upstream ")), "{exchange}");
    for phase in ["authenticate", "authorize", "select", "stream"] {
        let span = find(&spans, |s| {
            s["name"] == phase && s["trace_id"] == TRACE && s["parent_span_id"] == server["span_id"]
        });
        assert!(span.is_some(), "no {phase} span under the request span: {spans:#?}");
    }
    let (start, end) = (server["start_ns"].as_u64().unwrap_or(0), server["end_ns"].as_u64().unwrap_or(0));
    let inner = (exchange["start_ns"].as_u64().unwrap_or(0), exchange["end_ns"].as_u64().unwrap_or(0));
    assert!(start <= inner.0 && inner.1 <= end && start < end, "the exchange lies within the request");

    // The audit record of the call carries the same trace id.
    let record = poll_until("the call's audit record", std::time::Duration::from_secs(10), || async {
        let (status, body) =
            gw.cp.api(reqwest::Method::GET, "/api/v1/audit?tool=request_header&server=traced", None).await?;
        anyhow::ensure!(status == 200, "{status} {body}");
        Ok(body["items"].as_array().and_then(|items| items.first().cloned()))
    })
    .await?;
    assert_eq!(record["trace_id"], TRACE, "{record}");

    // The control plane continues a REST caller's trace, and its database queries are spans of it.
    let rest_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let rest_parent = "00f067aa0ba902b7";
    let resp = mcpgw_e2e::http_client()
        .get(format!("{}/api/v1/servers", gw.cp.http_url()))
        .bearer_auth(mcpgw_e2e::ADMIN_TOKEN)
        .header("traceparent", format!("00-{rest_trace}-{rest_parent}-01"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let spans = receiver
        .wait_for("the control plane's spans of GET /api/v1/servers", |spans| {
            find(spans, |s| s["trace_id"] == rest_trace && s["kind"] == "SERVER").is_some()
                && find(spans, |s| s["trace_id"] == rest_trace && is_query(s)).is_some()
        })
        .await?;
    let rest = find(&spans, |s| s["trace_id"] == rest_trace && s["kind"] == "SERVER").expect("REST span");
    assert_eq!(rest["service"], "mcpgw-control-plane");
    assert_eq!(rest["protocol"], "http");
    assert_eq!(rest["name"], "GET /api/v1/servers", "{rest}");
    assert_eq!(rest["parent_span_id"], rest_parent);
    assert_eq!(rest["attributes"]["http.response.status_code"], 200, "{rest}");
    let query = find(&spans, |s| s["trace_id"] == rest_trace && is_query(s)).expect("query");
    assert_eq!(query["kind"], "CLIENT");
    assert_eq!(query["parent_span_id"], rest["span_id"], "{query}");
    let statement = query["attributes"]["db.query.text"].as_str().unwrap_or_default();
    assert!(statement.contains("SELECT") && !statement.contains("binds"), "{query}");
    assert!(
        spans.iter().filter(|s| is_query(s)).all(|s| s["parent_span_id"] != ""),
        "a query outside any traced work is no trace of its own"
    );
    // The registration's discovery run is traced too.
    receiver
        .wait_for("a discovery span", |spans| {
            find(spans, |s| s["name"] == "discovery" && s["attributes"]["mcpgw.outcome"] == "found").is_some()
        })
        .await?;

    // A request that fails logs its trace id (the line a reader looks for next to the audit record).
    let dead = format!("http://127.0.0.1:{}/mcp", free_port()?);
    let dead_url = gw.add_server("gone", &dead, "streamable_http").await?;
    let failing_trace = "5c0e6a2b1d4f4e8a9b7c6d5e4f3a2b1c";
    let mut failing = McpHttp::new(&dead_url);
    failing.extra_headers = vec![("traceparent".into(), format!("00-{failing_trace}-{CLIENT_SPAN}-01"))];
    let (_, resp) = failing.modern("tools/list", json!({})).await?;
    assert_eq!(resp.status.as_u16(), 502, "{}", resp.text());
    poll_until("the failure's log line", std::time::Duration::from_secs(5), || async {
        Ok(gw
            .proxy
            .log_text()
            .lines()
            .any(|l| l.contains(&format!("\"trace_id\":\"{failing_trace}\"")))
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_requests_nothing_but_a_counter() -> Result<()> {
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let gw =
        Gateway::start_with_planes(&["--otlp-endpoint", &nowhere], &["--otlp-endpoint", &nowhere]).await?;
    let upstream = PyServer::start("untraced", PyServerOpts::default()).await?;
    let url = gw.add_server("untraced", &upstream.url(), "streamable_http").await?;
    let mut client = McpHttp::new(&url);
    client.initialize().await?;
    for i in 0..50 {
        let result = client.call_tool("echo", json!({"message": format!("m{i}")})).await?;
        assert_eq!(crate::first_text(&result), Some(format!("m{i}").as_str()), "{result}");
    }
    let spans = |outcome: &'static str| {
        let gw = &gw;
        async move {
            let metrics = gw.proxy.metrics().await?;
            let prefix = format!("mcpgw_proxy_otlp_spans_total{{outcome=\"{outcome}\"}}");
            anyhow::Ok(
                metrics
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0),
            )
        }
    };
    let failed = poll_until(
        "the proxy to count spans it could not export",
        std::time::Duration::from_secs(15),
        || async {
            let failed = spans("failed").await?;
            Ok((failed > 0.0).then_some(failed))
        },
    )
    .await?;
    assert!(failed >= 1.0);
    // Later calls' spans are counted whether the exporter is still closed (not built: dropped) or has
    // opened again (a batch that fails): six a call (the request, three phases, the attempt, its stream).
    let before = spans("dropped").await? + spans("failed").await?;
    for i in 0..10 {
        let result = client.call_tool("echo", json!({"message": format!("late{i}")})).await?;
        assert_eq!(crate::first_text(&result), Some(format!("late{i}").as_str()), "{result}");
    }
    poll_until("the later calls' spans to be counted", std::time::Duration::from_secs(40), || async {
        let counted = spans("dropped").await? + spans("failed").await? - before;
        Ok((counted >= 60.0).then_some(()))
    })
    .await?;
    assert_eq!(spans("exported").await?, 0.0);
    let (_, cp_metrics) = gw.cp.get_text("/metrics").await?;
    assert!(cp_metrics.contains("mcpgw_cp_otlp_spans_total"), "{cp_metrics}");
    Ok(())
}
