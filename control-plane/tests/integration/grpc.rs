//! The routing stream: Hello → snapshot, REST change → delta within a second, Ack/Nack bookkeeping, refusals.

use std::collections::BTreeSet;
use std::time::Duration;

use mcpgw_control_plane::db::store;
use mcpgw_control_plane::model::{InstanceSpec, ServerSpec, TransportType};
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{Ack, ProxyMessage, RoutingUpdate, proxy_message};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{FakeProxy, TestApp, TestGrpc, eventually, hello};

/// A change must reach a connected proxy well under this.
const PUSH_DEADLINE: Duration = Duration::from_secs(1);

fn kinds(update: &RoutingUpdate) -> BTreeSet<(&'static str, String)> {
    update
        .upserts
        .iter()
        .filter_map(|r| match r.kind.as_ref()? {
            Kind::Server(s) => Some(("server", s.id.clone())),
            Kind::Instance(i) => Some(("instance", i.id.clone())),
            Kind::InstanceHealth(h) => Some(("instance_health", h.instance_id.clone())),
        })
        .collect()
}

#[actix_web::test]
async fn hello_snapshot_then_delta_within_a_second() {
    let app = TestApp::start().await;
    app.create(json!({"name": "before", "endpoint_url": "http://127.0.0.1:3001/mcp"})).await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-a")).await.expect("stream accepted");

    let snapshot = proxy.next_within(PUSH_DEADLINE).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.version, app.hub.current().version());
    assert_eq!(snapshot.upserts.len(), 2, "one Server and one Instance");
    let table = ResourceSet::default().apply(&snapshot).expect("the snapshot applies");

    let created = app.create(json!({"name": "new-one", "endpoint_url": "http://127.0.0.1:3002/mcp"})).await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let instance_id = created.body["instances"][0]["id"].as_str().expect("instance id").to_owned();
    let delta = proxy.next_within(PUSH_DEADLINE).await;
    assert!(!delta.snapshot);
    assert_eq!(delta.base_version, snapshot.version);
    assert!(delta.version > snapshot.version);
    assert_eq!(kinds(&delta), BTreeSet::from([("instance", instance_id), ("server", id.clone())]));
    let instance = delta.upserts.iter().find_map(|r| match &r.kind {
        Some(Kind::Instance(i)) => Some(i.clone()),
        _ => None,
    });
    let instance = instance.expect("an instance");
    assert_eq!(
        (instance.server_id.as_str(), instance.endpoint_url.as_str(), instance.weight),
        (id.as_str(), "http://127.0.0.1:3002/mcp", 1)
    );
    let table = table.apply(&delta).expect("the delta applies on the snapshot");
    assert_eq!(table.len(), 4);

    proxy.ack(delta.version).await;
    let hub = app.hub.clone();
    eventually("the Ack in the proxy registry", async || {
        hub.proxies().list().first().and_then(|p| p.acked_version) == Some(delta.version)
    })
    .await;
    let listed = app.call(actix_web::test::TestRequest::get().uri("/api/v1/proxies")).await;
    let entry = &listed.body[0];
    assert_eq!(entry["proxy_id"], "proxy-a");
    assert_eq!(entry["acked_version"], delta.version);
    assert_eq!(entry["last_nack"], serde_json::Value::Null);
    assert!(entry["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert!(entry["connected_at"].is_string());

    let deleted = app
        .call(crate::support::admin(
            actix_web::test::TestRequest::delete().uri(&format!("/api/v1/servers/{id}")),
        ))
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    let removal = proxy.next_within(PUSH_DEADLINE).await;
    assert_eq!(removal.removals.len(), 2);
    assert_eq!(table.apply(&removal).expect("the removal applies").len(), 2);

    drop(proxy);
    eventually("the registry to forget the closed stream", async || hub.proxies().is_empty()).await;
}

#[actix_web::test]
async fn nack_is_followed_by_a_snapshot_on_the_next_change() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-n")).await.expect("stream accepted");
    let first = proxy.next_within(PUSH_DEADLINE).await;
    app.create(json!({"name": "one", "endpoint_url": "http://h/1"})).await;
    let delta = proxy.next_within(PUSH_DEADLINE).await;
    assert!(!delta.snapshot);

    proxy.nack(delta.version, "cannot apply").await;
    let hub = app.hub.clone();
    eventually("the Nack in the proxy registry", async || {
        hub.proxies()
            .list()
            .first()
            .and_then(|p| p.last_nack.clone())
            .is_some_and(|n| n.version == delta.version)
    })
    .await;

    app.create(json!({"name": "two", "endpoint_url": "http://h/2"})).await;
    let next = proxy.next_within(PUSH_DEADLINE).await;
    assert!(next.snapshot, "after a Nack the next update is a full snapshot");
    assert!(next.version > delta.version && delta.version > first.version);
    assert_eq!(next.upserts.len(), 4);
    let listed = app.call(actix_web::test::TestRequest::get().uri("/api/v1/proxies")).await;
    assert_eq!(listed.body[0]["last_nack"], json!({"version": delta.version, "reason": "cannot apply"}));

    app.create(json!({"name": "three", "endpoint_url": "http://h/3"})).await;
    assert!(!proxy.next_within(PUSH_DEADLINE).await.snapshot, "then deltas again");
}

#[actix_web::test]
async fn a_stream_must_start_with_hello() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let ack = ProxyMessage { kind: Some(proxy_message::Kind::Ack(Ack { version: 1 })) };
    let refused = FakeProxy::open(&grpc, ack).await.err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let empty_id = FakeProxy::open(&grpc, hello("")).await.err().expect("refused");
    assert_eq!(empty_id.code(), tonic::Code::InvalidArgument);
    assert!(app.hub.proxies().is_empty());
}

#[actix_web::test]
async fn the_poller_publishes_changes_made_elsewhere() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-p")).await.expect("stream accepted");
    proxy.next_within(PUSH_DEADLINE).await;

    // A commit made through another replica: nothing calls this hub's refresh(), so its poller must notice.
    let spec = ServerSpec {
        name: "elsewhere".into(),
        transport: TransportType::Sse,
        description: None,
        tags: vec![],
        instances: vec![InstanceSpec {
            endpoint_url: "http://h/x".into(),
            weight: 1,
            metadata: Default::default(),
        }],
        load_balancing: Default::default(),
        hash_key: None,
        circuit_breaker: None,
        tenant_id: None,
        version: None,
        capabilities: Default::default(),
        auto_discover: false,
        health_check: Default::default(),
    };
    let mut conn = app.pool.get().await.expect("connection");
    let ((server, _), _) = store::create(&mut conn, &spec).await.expect("create");
    drop(conn);
    let stop = CancellationToken::new();
    let poller = tokio::spawn(app.hub.clone().poll(Duration::from_millis(50), stop.clone()));
    let delta = proxy.next_within(Duration::from_secs(3)).await;
    assert!(kinds(&delta).contains(&("server", server.id.to_string())));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), poller).await.expect("the poller stops").expect("no panic");
}
