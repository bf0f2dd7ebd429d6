//! The control plane's Prometheus metrics: REST requests by route pattern and status, discovery runs,
//! routing tables published, connected proxies and their lag, the database pool.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::json;

use crate::support::{FakeProxy, TestApp, TestGrpc, admin, eventually, get, hello, metric};

#[actix_web::test]
async fn rest_requests_are_counted_by_route_pattern_and_status() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "counted", "endpoint_url": "http://127.0.0.1:9/mcp", "auto_discover": false}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id");
    assert_eq!(app.call(get(&format!("/api/v1/servers/{id}"))).await.status, StatusCode::OK);
    let unknown = "00000000-0000-0000-0000-000000000000";
    assert_eq!(app.call(get(&format!("/api/v1/servers/{unknown}"))).await.status, StatusCode::NOT_FOUND);
    let anonymous = app.call(TestRequest::get().uri("/api/v1/servers")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(get("/no/such/path")).await.status, StatusCode::NOT_FOUND);

    let text = app.metrics().await;
    let requests = |method, route, status| {
        metric(
            &text,
            "mcpgw_cp_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("POST", "/api/v1/servers", "201"), Some(1.0), "{text}");
    assert_eq!(requests("GET", "/api/v1/servers/{id}", "200"), Some(1.0), "the pattern, not the path");
    assert_eq!(requests("GET", "/api/v1/servers/{id}", "404"), Some(1.0));
    assert_eq!(
        requests("GET", "/api/v1/servers", "401"),
        Some(1.0),
        "refused by a middleware, still counted"
    );
    assert_eq!(requests("GET", "unmatched", "404"), Some(1.0), "no label from the request's path");
    assert!(!text.contains(unknown) && !text.contains("/no/such/path"));
    let latency = metric(
        &text,
        "mcpgw_cp_http_request_duration_seconds_count",
        &[("method", "GET"), ("route", "/api/v1/servers/{id}")],
    );
    assert_eq!(latency, Some(2.0));

    let max = metric(&text, "mcpgw_cp_db_pool_max_connections", &[]);
    assert_eq!(max, Some(4.0), "the test pool's size");
    let direct = metric(&text, "mcpgw_cp_db_pool_gets", &[("how", "direct")]).expect("pool gets");
    assert!(direct >= 3.0, "the handlers took connections: {direct}");
    assert!(metric(&text, "mcpgw_cp_db_pool_connections", &[("state", "idle")]).is_some());
}

#[actix_web::test]
async fn proxies_lag_and_routing_versions_are_visible() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-a")).await.expect("stream opens");
    let first = proxy.next_within(Duration::from_secs(10)).await;
    let text = app.metrics().await;
    assert_eq!(metric(&text, "mcpgw_cp_proxies_connected", &[]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "mcpgw_cp_proxies_lagging", &[]), Some(1.0), "nothing acknowledged yet");
    assert_eq!(metric(&text, "mcpgw_cp_routing_version", &[]), Some(first.version as f64));
    assert!(!text.contains("proxy-a"), "proxies are counted, not named");

    proxy.ack(first.version).await;
    eventually("the proxy caught up", async || {
        let text = app.metrics().await;
        metric(&text, "mcpgw_cp_proxies_lagging", &[]) == Some(0.0)
            && metric(&text, "mcpgw_cp_proxy_lag_versions_max", &[]) == Some(0.0)
    })
    .await;

    let published = metric(&app.metrics().await, "mcpgw_cp_routing_publishes_total", &[]).expect("publishes");
    let created = app
        .create(json!({"name": "newer", "endpoint_url": "http://127.0.0.1:9/mcp", "auto_discover": false}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let update = proxy.next_within(Duration::from_secs(10)).await;
    assert!(update.version > first.version);
    let text = app.metrics().await;
    assert_eq!(metric(&text, "mcpgw_cp_routing_version", &[]), Some(update.version as f64));
    assert!(metric(&text, "mcpgw_cp_routing_publishes_total", &[]) > Some(published));
    assert_eq!(metric(&text, "mcpgw_cp_proxies_lagging", &[]), Some(1.0));
    assert_eq!(
        metric(&text, "mcpgw_cp_proxy_lag_versions_max", &[]),
        Some((update.version - first.version) as f64)
    );
    proxy.nack(update.version, "refused for the test").await;
    eventually("the refusal is counted", async || {
        metric(&app.metrics().await, "mcpgw_cp_proxies_refusing", &[]) == Some(1.0)
    })
    .await;
    drop(proxy);
    eventually("the stream's end is seen", async || {
        metric(&app.metrics().await, "mcpgw_cp_proxies_connected", &[]) == Some(0.0)
    })
    .await;
}

#[actix_web::test]
async fn discovery_runs_are_counted_by_outcome() {
    let app = TestApp::start().await;
    let before = metric(&app.metrics().await, "mcpgw_cp_discovery_runs_total", &[("outcome", "failed")]);
    assert_eq!(before, Some(0.0), "every outcome shows from the start");
    // Nothing listens on the discard port: discovery runs and fails.
    let created = app
        .create(
            json!({"name": "unreachable", "endpoint_url": "http://127.0.0.1:9/mcp", "auto_discover": false}),
        )
        .await;
    let id = created.body["id"].as_str().expect("id");
    let refresh = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
    assert_eq!(refresh.status, StatusCode::BAD_GATEWAY, "{}", refresh.body);
    let text = app.metrics().await;
    assert_eq!(metric(&text, "mcpgw_cp_discovery_runs_total", &[("outcome", "failed")]), Some(1.0), "{text}");
    let timed = metric(&text, "mcpgw_cp_discovery_duration_seconds_count", &[("outcome", "failed")]);
    assert_eq!(timed, Some(1.0));
}
