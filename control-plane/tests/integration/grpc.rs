//! The routing stream: Hello → snapshot, REST change → delta within a second, Ack/Nack bookkeeping, refusals.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use mcpgw_control_plane::auth::SecretToken;
use mcpgw_control_plane::grpc::ProxyAuth;

use mcpgw_control_plane::db::store;
use mcpgw_control_plane::model::TransportType;
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use mcpgw_proto::v1::{Ack, ProxyMessage, ResourceKind, RoutingUpdate, proxy_message};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{FakeProxy, TestApp, TestGrpc, admin, eventually, get, hello};

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
            Kind::ApiKey(k) => Some(("api_key", k.id.clone())),
            Kind::TrustedIssuer(t) => Some(("trusted_issuer", t.id.clone())),
            Kind::Role(r) => Some(("role", r.id.clone())),
            Kind::RateLimit(l) => Some(("rate_limit", l.id.clone())),
            Kind::Catalog(c) => Some(("catalog", c.server_id.clone())),
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
    let listed = app.call(get("/api/v1/proxies")).await;
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
    let listed = app.call(get("/api/v1/proxies")).await;
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
    let spec = crate::support::spec("elsewhere", TransportType::Sse, "http://h/x", None);
    let mut conn = app.pool.get().await.expect("connection");
    let ((server, _), _) = store::create(&mut conn, &spec, None, None).await.expect("create");
    drop(conn);
    let stop = CancellationToken::new();
    let poller = tokio::spawn(app.hub.clone().poll(Duration::from_millis(50), stop.clone()));
    let delta = proxy.next_within(Duration::from_secs(3)).await;
    assert!(kinds(&delta).contains(&("server", server.id.to_string())));
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), poller).await.expect("the poller stops").expect("no panic");
}

#[actix_web::test]
async fn a_proxy_token_is_required_when_configured() {
    let app = TestApp::start().await;
    app.create(json!({"name": "guarded", "endpoint_url": "http://127.0.0.1:3001/mcp"})).await;
    let auth = ProxyAuth::new(Some(SecretToken::new("proxy-secret")));
    let grpc = TestGrpc::with(app.hub.clone(), auth).await;
    for (what, authorization) in [
        ("no token", None),
        ("a wrong token", Some("Bearer proxy-secrex")),
        ("not the Bearer scheme", Some("Basic proxy-secret")),
    ] {
        let refused = FakeProxy::open_with(&grpc, hello("proxy-x"), authorization).await.err();
        let status = refused.unwrap_or_else(|| panic!("{what}: the stream was accepted"));
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}: {status:?}");
        assert!(!status.message().contains("proxy-secre"), "{what}: the refusal never echoes a token");
    }
    assert!(app.hub.proxies().is_empty(), "a refused proxy is never registered");
    let mut proxy = FakeProxy::open_with(&grpc, hello("proxy-ok"), Some("Bearer proxy-secret"))
        .await
        .expect("the right token opens the stream");
    let snapshot = proxy.next_within(PUSH_DEADLINE).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.upserts.len(), 2, "one Server and one Instance");
}

#[actix_web::test]
async fn without_a_token_loopback_proxies_are_accepted() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::with(app.hub.clone(), ProxyAuth::new(None)).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-local")).await.expect("loopback is accepted");
    assert!(proxy.next_within(PUSH_DEADLINE).await.snapshot);
}

/// A deleted key leaves every connected proxy's table right after the DELETE is answered: the removal
/// delta is timed from the 204 to its arrival on the stream.
#[actix_web::test]
async fn a_deleted_key_reaches_the_proxies_within_a_second() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-k")).await.expect("stream accepted");
    let mut table = ResourceSet::default().apply(&proxy.next_within(PUSH_DEADLINE).await).expect("snapshot");
    let mut samples = Vec::new();
    for _ in 0..5 {
        let created = app
            .call(admin(TestRequest::post().uri("/api/v1/api-keys")).set_json(json!({"name": "ephemeral"})))
            .await;
        let id = created.body["id"].as_str().expect("id").to_owned();
        let key = created.body["key"].as_str().expect("key").to_owned();
        let added = proxy.next_within(PUSH_DEADLINE).await;
        assert_eq!(kinds(&added), BTreeSet::from([("api_key", id.clone())]));
        let Some(Kind::ApiKey(resource)) = added.upserts[0].kind.clone() else { panic!("an ApiKey") };
        assert_eq!(resource.digest, mcpgw_proto::validate::api_key_digest(&key).to_vec());
        table = table.apply(&added).expect("the delta applies");

        let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/api-keys/{id}")))).await;
        assert_eq!(deleted.status.as_u16(), 204);
        let answered = Instant::now();
        let removal = proxy.next_within(PUSH_DEADLINE).await;
        samples.push(answered.elapsed());
        assert_eq!(removal.removals.len(), 1);
        table = table.apply(&removal).expect("the removal applies");
        assert!(table.get(ResourceKind::ApiKey, &id).is_none());
    }
    let worst = samples.iter().max().copied().unwrap_or_default();
    eprintln!("API key revocation, DELETE answered -> removal on the proxy stream: {samples:?}");
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
}

#[actix_web::test]
async fn the_stream_runs_over_tls_with_a_token() {
    let app = TestApp::start().await;
    app.create(json!({"name": "secure", "endpoint_url": "http://127.0.0.1:3001/mcp"})).await;
    let auth = ProxyAuth::new(Some(SecretToken::new("tls-proxy-token")));
    let grpc = TestGrpc::with_tls(app.hub.clone(), auth).await;
    let refused = FakeProxy::open(&grpc, hello("proxy-t")).await.err().expect("no token: refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut proxy = FakeProxy::open_with(&grpc, hello("proxy-t"), Some("Bearer tls-proxy-token"))
        .await
        .expect("TLS and the token open the stream");
    assert_eq!(proxy.next_within(PUSH_DEADLINE).await.upserts.len(), 2);
    let peer = app.hub.proxies().list().first().and_then(|p| p.peer.clone());
    assert!(peer.is_some_and(|p| p.starts_with("127.0.0.1:")), "the peer address is known over TLS too");

    // A plaintext client gets nowhere on the TLS listener.
    let plain = grpc.url.replace("https://", "http://");
    let outcome = match tonic::transport::Channel::from_shared(plain).expect("URL").connect().await {
        Err(_) => true,
        Ok(channel) => {
            let mut client = RoutingDiscoveryClient::new(channel);
            let (_tx, rx) = tokio::sync::mpsc::channel(1);
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            tokio::time::timeout(Duration::from_secs(5), client.stream_routes(stream))
                .await
                .map_or(true, |r| r.is_err())
        }
    };
    assert!(outcome, "plaintext is refused");
}
