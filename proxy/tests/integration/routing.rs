//! The routing stream seen from the proxy: readiness, acknowledgements, rejected updates, and serving the
//! last good table while the control plane is away.

use mcpgw_proto::v1::{ResourceKind, ResourceRef, RoutingUpdate, proxy_message::Kind};
use serde_json::Value;

use crate::support::*;

fn names(routes: &Value) -> Vec<String> {
    routes["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn ready_after_first_table_and_acknowledges_it() {
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(proxy.admin_url("/readyz")).send().await.unwrap().status(), 503);

    match cp.next_message().await {
        Kind::Hello(hello) => assert!(!hello.proxy_id.is_empty()),
        other => panic!("expected Hello first, got {other:?}"),
    }
    cp.push(snapshot(7, &[("alpha", "http://127.0.0.1:9/mcp")])).await;
    assert_eq!(cp.next_reply().await, Kind::Ack(mcpgw_proto::v1::Ack { version: 7 }));
    let ready: Value = client.get(proxy.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["version"], 7);
    let routes = proxy.wait_routes("alpha", |r| r["version"] == 7).await;
    assert_eq!(names(&routes), ["alpha"]);
    let metrics = client.get(proxy.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_routing_table_version 7"), "{metrics}");
}

#[tokio::test]
async fn applies_deltas_and_rejects_bad_updates_keeping_the_last_good_table() {
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    cp.push(snapshot(1, &[("alpha", "http://127.0.0.1:9/mcp")])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    let add_beta = RoutingUpdate {
        version: 2,
        base_version: 1,
        upserts: vec![server("id-beta", "beta"), instance("inst-beta", "id-beta", "http://127.0.0.1:9/b")],
        ..Default::default()
    };
    cp.push(add_beta).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(a) if a.version == 2));

    let wrong_base = RoutingUpdate {
        version: 4,
        base_version: 3,
        removals: vec![ResourceRef { kind: ResourceKind::Server as i32, id: "id-alpha".into() }],
        ..Default::default()
    };
    cp.push(wrong_base).await;
    match cp.next_reply().await {
        Kind::Nack(n) => assert!(n.reason.contains("base version 3"), "{}", n.reason),
        other => panic!("expected Nack, got {other:?}"),
    }
    cp.push(snapshot(5, &[("Not_A_Name", "http://127.0.0.1:9/mcp")])).await;
    match cp.next_reply().await {
        Kind::Nack(n) => assert!(n.reason.contains("invalid name"), "{}", n.reason),
        other => panic!("expected Nack, got {other:?}"),
    }
    cp.push(snapshot(6, &[("gamma", "ftp://127.0.0.1/x")])).await;
    assert!(matches!(cp.next_reply().await, Kind::Nack(n) if n.reason.contains("http or https")));

    let routes = proxy.wait_routes("table v2", |r| r["version"] == 2).await;
    assert_eq!(names(&routes), ["alpha", "beta"]);
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_routing_updates_total{result=\"rejected\"} 3"), "{metrics}");
}

#[tokio::test]
async fn serves_the_last_table_while_the_control_plane_is_away_then_resyncs() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    cp.push(snapshot(1, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    let addr = cp.stop();
    let client = reqwest::Client::new();
    for i in 0..20 {
        let resp = client
            .post(proxy.mcp_url("alpha"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/list"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "call {i} while the control plane is away");
        upstream.next_request().await;
    }
    let metrics = client.get(proxy.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_control_plane_connected 0"), "{metrics}");

    let mut cp = FakeControlPlane::start_on(addr).await;
    assert!(matches!(cp.next_message().await, Kind::Hello(h) if h.applied_version == 1));
    cp.push(snapshot(2, &[("alpha", &upstream.url()), ("beta", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(a) if a.version == 2));
    proxy.wait_routes("beta after reconnect", |r| r["version"] == 2).await;
}

#[tokio::test]
async fn cold_start_without_the_control_plane_serves_the_cached_table() {
    let mut upstream = FakeUpstream::start().await;
    let cache =
        std::env::temp_dir().join(format!("mcpgw-table-{}-{}.bin", std::process::id(), upstream.addr.port()));
    let cache_arg = cache.to_str().unwrap().to_owned();
    let mut cp = FakeControlPlane::start().await;
    let first = ProxyProcess::start(&cp.url(), &["--table-cache", &cache_arg]).await;
    cp.push(snapshot(9, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    drop(first);
    let addr = cp.stop();

    // The control plane is still down when a new proxy starts.
    let proxy = ProxyProcess::start(&format!("http://{addr}"), &["--table-cache", &cache_arg]).await;
    let ready = within("ready on the cached table", async {
        loop {
            let r = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
            if r.status() == 200 {
                return r.json::<Value>().await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(ready["version"], 9);
    let resp = reqwest::Client::new()
        .post(proxy.mcp_url("alpha"))
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    upstream.next_request().await;
    let _ = std::fs::remove_file(&cache);
}
