//! Active health checks against fake MCP servers (thresholds, InstanceHealth resources, history), leader
//! election and failover, LISTEN/NOTIFY between replicas, and passive health reports from a proxy.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mcpgw_control_plane::config::HealthDefaults;
use mcpgw_control_plane::discovery::Discoverer;
use mcpgw_control_plane::health::Checker;
use mcpgw_control_plane::health::leader::Leader;
use mcpgw_control_plane::hub::RoutingHub;
use mcpgw_control_plane::jwks::{JwksFetcher, Refresher};
use mcpgw_control_plane::mcp::McpClient;
use mcpgw_control_plane::ssrf::SsrfPolicy;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{
    BreakerState, HealthStatus, InstanceObservation, PassiveHealth, ProxyMessage, ResourceKind, proxy_message,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::fake_mcp::FakeMcp;
use crate::support::{FakeProxy, TestApp, TestGrpc, eventually, get, hello, metric};

const INTERVAL: Duration = Duration::from_millis(50);

fn checker(app: &TestApp, replica: &str) -> Checker {
    Checker {
        pool: app.pool.clone(),
        client: McpClient::new(Arc::new(SsrfPolicy::default())).expect("client"),
        defaults: HealthDefaults {
            interval: INTERVAL,
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            concurrency: 4,
        },
        replica_id: replica.into(),
        hub: app.hub.clone(),
    }
}

fn health_of(app: &TestApp, instance: &str) -> Option<i32> {
    match app.hub.current().get(ResourceKind::InstanceHealth, instance)?.kind.as_ref()? {
        Kind::InstanceHealth(h) => Some(h.status),
        _ => None,
    }
}

#[actix_web::test]
async fn checks_follow_thresholds_and_reach_the_routing_table() {
    let app = TestApp::start().await;
    let (up, down) = (FakeMcp::start(false, 1).await, FakeMcp::start(true, 1).await);
    down.set_down(true);
    let created = app
        .create(json!({"name": "checked", "auto_discover": false,
        "instances": [{"endpoint_url": up.url}, {"endpoint_url": down.url}]}))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let (a, b) = (
        created.body["instances"][0]["id"].as_str().expect("a").to_owned(),
        created.body["instances"][1]["id"].as_str().expect("b").to_owned(),
    );

    let stop = CancellationToken::new();
    let started = Instant::now();
    let task = actix_web::rt::spawn({
        let (c, stop) = (checker(&app, "r1"), stop.clone());
        async move { c.run(stop).await }
    });
    eventually("a healthy and b unhealthy in the routing table", async || {
        health_of(&app, &a) == Some(HealthStatus::Healthy as i32)
            && health_of(&app, &b) == Some(HealthStatus::Unhealthy as i32)
    })
    .await;
    let took = started.elapsed();
    eprintln!("instance down → unhealthy in the routing table after {took:?} (interval 50ms × threshold 2)");
    let server = app.call(get(&format!("/api/v1/servers/{id}/health"))).await;
    assert_eq!(server.body["health_status"], "healthy", "{}", server.body);
    let inst_b = &server.body["instances"][1];
    assert_eq!(inst_b["health_status"], "unhealthy");
    assert!(inst_b["consecutive_failures"].as_i64().is_some_and(|n| n >= 2));
    assert!(inst_b["last_error"].as_str().is_some_and(|e| e.contains("503")), "{inst_b}");
    assert!(inst_b["history"].as_array().is_some_and(|h| !h.is_empty() && h[0]["ok"] == false));
    let inst_a = &server.body["instances"][0];
    assert!(inst_a["latency_ms"].is_number() && inst_a["last_check_at"].is_string(), "{inst_a}");
    let unhealthy = app.call(get("/api/v1/servers?health_status=healthy")).await;
    assert_eq!(unhealthy.body.as_array().map(Vec::len), Some(1));

    down.set_down(false);
    eventually("b healthy again", async || health_of(&app, &b) == Some(HealthStatus::Healthy as i32)).await;
    up.set_down(true);
    down.set_down(true);
    eventually("the whole server unhealthy", async || {
        app.call(get(&format!("/api/v1/servers/{id}"))).await.body["health_status"] == "unhealthy"
    })
    .await;
    stop.cancel();
    let _ = task.await;
    let text = app.metrics().await;
    for outcome in ["healthy", "unhealthy"] {
        let probes = metric(&text, "mcpgw_cp_health_checks_total", &[("outcome", outcome)]).unwrap_or(0.0);
        assert!(probes >= 2.0, "{outcome} probes counted: {probes}");
        let timed = metric(&text, "mcpgw_cp_health_check_duration_seconds_count", &[("outcome", outcome)]);
        assert_eq!(timed, Some(probes));
    }
}

fn leader(app: &TestApp, db_url: &str, replica: &str) -> (Leader, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    let checker = checker(app, replica);
    let discoverer =
        Discoverer { pool: app.pool.clone(), client: checker.client.clone(), hub: app.hub.clone() };
    let jwks = Refresher {
        pool: app.pool.clone(),
        hub: app.hub.clone(),
        fetcher: JwksFetcher::new(checker.client.clone()),
        interval: Duration::from_secs(3600),
    };
    (
        Leader {
            database_url: db_url.to_owned(),
            checker,
            discoverer,
            discovery_interval: None,
            jwks,
            is_leader: flag.clone(),
            kubernetes: None,
        },
        flag,
    )
}

#[actix_web::test]
async fn one_leader_and_failover_within_an_interval() {
    let app = TestApp::start().await;
    let fake = FakeMcp::start(false, 1).await;
    let created = app.create(json!({"name": "led", "endpoint_url": fake.url, "auto_discover": false})).await;
    let instance = created.body["instances"][0]["id"].as_str().expect("instance").to_owned();
    let url = app.db_url();
    let (first, first_flag) = leader(&app, &url, "replica-a");
    let (second, second_flag) = leader(&app, &url, "replica-b");
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = actix_web::rt::spawn(first.run(stop_a.clone()));
    eventually("replica a leads", async || first_flag.load(std::sync::atomic::Ordering::SeqCst)).await;
    let b = actix_web::rt::spawn(second.run(stop_b.clone()));
    let checked_by = async || {
        let health = app
            .call(get(&format!("/api/v1/servers/{}/health", created.body["id"].as_str().unwrap_or_default())))
            .await;
        health.body["instances"][0]["history"].as_array().map(|h| h.len()).unwrap_or(0)
    };
    eventually("checks by a", async || checked_by().await > 0).await;
    assert!(!second_flag.load(std::sync::atomic::Ordering::SeqCst), "only one leader");
    let stats = app.call(get("/api/v1/admin/stats")).await;
    assert_eq!(stats.body["health_checks"]["leader_replica_id"], "replica-a");

    stop_a.cancel();
    let stopped = Instant::now();
    let _ = a.await;
    eventually("replica b leads", async || second_flag.load(std::sync::atomic::Ordering::SeqCst)).await;
    let took = stopped.elapsed();
    eprintln!("leader failover: {took:?}");
    let mut conn = app.pool.get().await.expect("conn");
    let before = mcpgw_control_plane::db::store::health::active(&mut conn, None).await.expect("rows");
    drop(conn);
    let last = before.get(&instance.parse().expect("uuid")).map(|r| r.last_check_at);
    eventually("a check by replica b", async || {
        let mut conn = app.pool.get().await.expect("conn");
        let rows = mcpgw_control_plane::db::store::health::active(&mut conn, None).await.expect("rows");
        rows.values().any(|r| r.checked_by == "replica-b" && Some(r.last_check_at) != last)
    })
    .await;
    stop_b.cancel();
    let _ = b.await;
}

#[actix_web::test]
async fn notify_reaches_another_replica_without_the_poller() {
    let app = TestApp::start().await;
    let other = RoutingHub::new(app.pool.clone(), None);
    other.refresh().await.expect("refresh");
    let stop = CancellationToken::new();
    let listener =
        actix_web::rt::spawn(mcpgw_control_plane::notify::listen(app.db_url(), other.clone(), stop.clone()));
    // Wait until the listener's LISTEN ran, so the change below can only arrive through NOTIFY.
    eventually("the listener to LISTEN", async || {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = app.pool.get().await.expect("conn");
        let query = "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
        diesel::sql_query(query).get_result::<Count>(&mut conn).await.is_ok_and(|c| c.n > 0)
    })
    .await;
    let created = app
        .create(json!({"name": "notified", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false}))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let started = Instant::now();
    eventually("the other replica's hub has the server", async || {
        other.current().get(ResourceKind::Server, &id).is_some()
    })
    .await;
    eprintln!("change seen by another replica after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "well before the 5 s poll");
    stop.cancel();
    let _ = listener.await;
}

#[actix_web::test]
async fn passive_reports_are_visible_per_instance_and_proxy() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "passive", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false}))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let instance = created.body["instances"][0]["id"].as_str().expect("instance").to_owned();
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-p")).await.expect("stream");
    proxy.next_within(Duration::from_secs(2)).await;
    let report = PassiveHealth {
        instances: vec![
            InstanceObservation {
                instance_id: instance.clone(),
                breaker: BreakerState::Open as i32,
                consecutive_failures: 7,
                window_requests: 20,
                window_failures: 9,
            },
            InstanceObservation {
                instance_id: uuid::Uuid::new_v4().to_string(),
                breaker: BreakerState::Closed as i32,
                ..Default::default()
            },
        ],
    };
    proxy
        .tx
        .send(ProxyMessage { kind: Some(proxy_message::Kind::PassiveHealth(report)) })
        .await
        .expect("send");
    eventually("the report in the server's JSON", async || {
        let got = app.call(get(&format!("/api/v1/servers/{id}"))).await;
        got.body["instances"][0]["passive"] == json!([{"proxy_id": "proxy-p", "breaker": "open", "consecutive_failures": 7,
            "window_requests": 20, "window_failures": 9, "reported_at": got.body["instances"][0]["passive"][0]["reported_at"]}])
    })
    .await;
}
