//! Several instances behind one server: each balancing policy's spread, health and breaker gates, and
//! retries of requests that reached no instance.

use std::collections::HashMap;

use mcpgw_proto::v1::{HealthStatus, LoadBalancing, Transport, proxy_message::Kind};
use serde_json::{Value, json};

use crate::support::*;

/// Three fake upstreams behind `alpha` with `lb` (weights 1, 2, 3), and a ready proxy.
async fn fleet(lb: LoadBalancing, hash_key: &str) -> (Vec<FakeUpstream>, FakeControlPlane, ProxyProcess) {
    let mut ups = Vec::new();
    for _ in 0..3 {
        ups.push(FakeUpstream::start().await);
    }
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    let mut table = Table::new(1).server("alpha", Transport::StreamableHttp, lb, hash_key);
    for (i, up) in ups.iter().enumerate() {
        table = table.instance("alpha", &format!("i{i}"), &up.url(), i as u32 + 1);
    }
    cp.push(table.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    (ups, cp, proxy)
}

async fn call(client: &reqwest::Client, proxy: &ProxyProcess, headers: &[(&str, &str)]) -> u16 {
    let mut req =
        client.post(proxy.mcp_url("alpha")).json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Requests each upstream received since the last look.
fn spread(ups: &mut [FakeUpstream]) -> Vec<usize> {
    ups.iter_mut().map(|u| u.drain().len()).collect()
}

/// Waits until all `n` requests reached some upstream, then returns the spread.
async fn settled(ups: &mut [FakeUpstream], n: usize) -> Vec<usize> {
    let mut counts = vec![0; ups.len()];
    within("requests to arrive upstream", async {
        while counts.iter().sum::<usize>() < n {
            for (c, u) in counts.iter_mut().zip(spread(ups)) {
                *c += u;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    counts
}

#[tokio::test]
async fn round_robin_and_weighted_spread_exactly() {
    let client = reqwest::Client::new();
    let (mut ups, _cp, proxy) = fleet(LoadBalancing::RoundRobin, "").await;
    for _ in 0..30 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    assert_eq!(settled(&mut ups, 30).await, [10, 10, 10]);

    let (mut ups, _cp, proxy) = fleet(LoadBalancing::Weighted, "").await;
    for _ in 0..60 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    assert_eq!(settled(&mut ups, 60).await, [10, 20, 30], "weights 1:2:3");
}

#[tokio::test]
async fn random_two_choices_spreads_by_weight() {
    let client = reqwest::Client::new();
    let (mut ups, _cp, proxy) = fleet(LoadBalancing::Random, "").await;
    for _ in 0..600 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    let counts = settled(&mut ups, 600).await;
    // Expected 100/200/300 (weights 1:2:3), ±5 standard deviations.
    for (got, (lo, hi)) in counts.iter().zip([(50, 150), (135, 265), (225, 375)]) {
        assert!((lo..=hi).contains(got), "spread {counts:?}");
    }
}

#[tokio::test]
async fn least_connections_avoids_the_busy_instance() {
    let client = reqwest::Client::new();
    let (mut ups, _cp, proxy) = fleet(LoadBalancing::LeastConnections, "").await;
    for up in &ups {
        up.reply(Reply::Hang);
    }
    let busy_client = client.clone();
    let busy_url = proxy.mcp_url("alpha");
    let _held = tokio::spawn(async move {
        let _ = busy_client
            .post(busy_url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}))
            .send()
            .await;
    });
    let busy = within("the held request to arrive", async {
        loop {
            if let Some(i) = ups.iter_mut().position(|u| !u.drain().is_empty()) {
                return i;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    ups.iter().for_each(FakeUpstream::clear_replies);
    for _ in 0..20 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    let counts = settled(&mut ups, 20).await;
    assert_eq!(counts[busy], 0, "the instance with a request in flight gets nothing: {counts:?}");
}

#[tokio::test]
async fn consistent_hash_keeps_each_key_on_one_instance() {
    let client = reqwest::Client::new();
    let (mut ups, mut cp, proxy) = fleet(LoadBalancing::ConsistentHash, "header:x-user").await;
    let mut owner: HashMap<String, usize> = HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let user = format!("user-{user}");
            assert_eq!(call(&client, &proxy, &[("x-user", &user)]).await, 200);
            let i = settled(&mut ups, 1).await.iter().position(|c| *c == 1).unwrap();
            let first = *owner.entry(user.clone()).or_insert(i);
            assert_eq!(first, i, "{user} moved in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(used.len(), 3, "30 keys use every instance: {owner:?}");

    // Removing one instance moves only the keys it owned.
    let mut table = Table::new(2).server(
        "alpha",
        Transport::StreamableHttp,
        LoadBalancing::ConsistentHash,
        "header:x-user",
    );
    for (i, up) in ups.iter().enumerate().filter(|(i, _)| *i != 2) {
        table = table.instance("alpha", &format!("i{i}"), &up.url(), i as u32 + 1);
    }
    cp.push(table.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    for (user, before) in owner.iter().filter(|(_, i)| **i != 2) {
        assert_eq!(call(&client, &proxy, &[("x-user", user)]).await, 200);
        let now = settled(&mut ups, 1).await.iter().position(|c| *c == 1).unwrap();
        assert_eq!(now, *before, "{user} stays where it was");
    }
}

#[tokio::test]
async fn unhealthy_instances_get_no_traffic_and_none_left_is_503() {
    let client = reqwest::Client::new();
    let (mut ups, mut cp, proxy) = fleet(LoadBalancing::RoundRobin, "").await;
    let mut table = Table::new(2).server("alpha", Transport::StreamableHttp, LoadBalancing::RoundRobin, "");
    for (i, up) in ups.iter().enumerate() {
        table = table.instance("alpha", &format!("i{i}"), &up.url(), 1);
    }
    let partial = table.health("i0", HealthStatus::Unhealthy).health("i1", HealthStatus::Unhealthy);
    cp.push(partial.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    for _ in 0..9 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    assert_eq!(settled(&mut ups, 9).await, [0, 0, 9]);

    let mut all_down =
        Table::new(3).server("alpha", Transport::StreamableHttp, LoadBalancing::RoundRobin, "");
    for (i, up) in ups.iter().enumerate() {
        all_down = all_down
            .instance("alpha", &format!("i{i}"), &up.url(), 1)
            .health(&format!("i{i}"), HealthStatus::Unhealthy);
    }
    cp.push(all_down.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let resp = client
        .post(proxy.mcp_url("alpha"))
        .json(&json!({"jsonrpc":"2.0","id":4,"method":"tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["data"]["reason"], "no_instance");
    assert!(body["error"]["message"].as_str().unwrap().contains("3 unhealthy"), "{body}");
}

#[tokio::test]
async fn a_dead_instance_is_retried_around_ejected_and_readmitted() {
    let client = reqwest::Client::new();
    let live = FakeUpstream::start().await;
    let dead_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &[]).await;
    let table = Table::new(1)
        .server("alpha", Transport::StreamableHttp, LoadBalancing::RoundRobin, "")
        .instance("alpha", "dead", &format!("http://{dead_addr}/mcp"), 1)
        .instance("alpha", "live", &live.url(), 1);
    cp.push(table.build()).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    // Connection refused reaches no upstream: every call is retried on the live instance.
    for _ in 0..6 {
        assert_eq!(call(&client, &proxy, &[]).await, 200);
    }
    let report =
        cp.passive_health(|r| r.instances.iter().any(|i| i.instance_id == "dead" && i.breaker == 2)).await;
    // An instance that never failed is reported closed, or not at all (its successes are only counted).
    assert!(report.instances.iter().all(|i| i.instance_id != "live" || i.breaker == 1), "{report:?}");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"mcpgw_proxy_breaker_state{instance="dead",server="alpha"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"mcpgw_proxy_breaker_transitions_total{server="alpha",to="open"} 1"#));

    // The instance comes back: after the open period a probe closes the breaker.
    let mut revived = FakeUpstream::start_on(dead_addr).await;
    within("the revived instance to get traffic again", async {
        while revived.drain().is_empty() {
            assert_eq!(call(&client, &proxy, &[]).await, 200);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    cp.passive_health(|r| r.instances.iter().any(|i| i.instance_id == "dead" && i.breaker == 1)).await;
    let routes =
        proxy.wait_routes("breaker closed", |r| r["servers"][0]["instances"][0]["breaker"] == "closed").await;
    assert_eq!(routes["servers"][0]["instances"][0]["id"], "dead");
}

#[tokio::test]
async fn a_tool_that_always_times_out_does_not_eject_the_instance_for_everyone() {
    let mut up = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start(&cp.url(), &["--upstream-timeout", "150ms"]).await;
    let table = Table::new(1)
        .server("alpha", Transport::StreamableHttp, LoadBalancing::RoundRobin, "")
        .instance("alpha", "only", &up.url(), 1)
        .build();
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, mcpgw_proto::v1::proxy_message::Kind::Ack(_)));
    let client = reqwest::Client::new();
    let call = || {
        client
            .post(proxy.mcp_url("alpha"))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow"}}))
            .send()
    };
    // Five timeouts in a row, beyond the breaker's threshold of three consecutive failures.
    for _ in 0..5 {
        up.reply(Reply::Hang);
        assert_eq!(call().await.unwrap().status(), 504);
        up.next_request().await;
    }
    let after = call().await.unwrap();
    assert_eq!(after.status(), 200, "the instance still takes traffic: {:?}", after.text().await);
    up.next_request().await;
}
