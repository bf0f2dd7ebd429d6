//! Several instances per server: registration with a list, adding and removing one, PUT keeping instance
//! ids by endpoint URL, and what the routing table carries for them.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{LoadBalancing, ResourceKind};
use serde_json::json;

use crate::support::{TestApp, admin, get};

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(str::to_owned))
        .collect()
}

#[actix_web::test]
async fn instances_are_added_listed_and_removed() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "multi", "load_balancing": "consistent_hash", "hash_key": "header:x-user",
            "circuit_breaker": {"consecutive_failures": 3, "window": "10s"},
            "instances": [
                {"endpoint_url": "http://127.0.0.1:4001/mcp", "weight": 2, "metadata": {"zone": "a"}},
                {"endpoint_url": "http://127.0.0.1:4002/mcp"}]}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(created.body["endpoint_url"], "http://127.0.0.1:4001/mcp", "the first instance");
    assert_eq!(created.body["instances"][0]["weight"], 2);
    assert_eq!(created.body["instances"][0]["metadata"], json!({"zone": "a"}));
    assert_eq!(created.body["instances"][1]["health_status"], "unknown");
    assert_eq!(created.body["circuit_breaker"], json!({"consecutive_failures": 3, "window": "10s"}));
    let first_ids = ids(&created.body);

    // The routing table: one Server with the policy, one Instance per instance.
    let table = app.hub.current();
    let Some(Kind::Server(server)) = table.get(ResourceKind::Server, &id).and_then(|r| r.kind.clone()) else {
        panic!("no Server resource")
    };
    assert_eq!(server.load_balancing, LoadBalancing::ConsistentHash as i32);
    assert_eq!(server.hash_key, "header:x-user");
    assert_eq!(server.circuit_breaker.map(|b| (b.consecutive_failures, b.window_ms)), Some((3, 10_000)));
    let Some(Kind::Instance(instance)) =
        table.get(ResourceKind::Instance, &first_ids[0]).and_then(|r| r.kind.clone())
    else {
        panic!("no Instance resource")
    };
    assert_eq!((instance.server_id.as_str(), instance.weight), (id.as_str(), 2));
    assert_eq!(instance.metadata.get("zone").map(String::as_str), Some("a"));

    let uri = format!("/api/v1/servers/{id}/instances");
    let added = app
        .call(
            admin(TestRequest::post().uri(&uri))
                .set_json(json!({"endpoint_url": "http://127.0.0.1:4003/mcp"})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let added_id = added.body["id"].as_str().expect("id").to_owned();
    assert!(app.hub.current().get(ResourceKind::Instance, &added_id).is_some(), "published at once");
    let dup = app
        .call(
            admin(TestRequest::post().uri(&uri))
                .set_json(json!({"endpoint_url": "http://127.0.0.1:4003/mcp"})),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (StatusCode::CONFLICT, "instance_endpoint_taken"));
    let bad = app.call(admin(TestRequest::post().uri(&uri)).set_json(json!({"endpoint_url": "nope"}))).await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "invalid_endpoint_url"));

    for instance in [first_ids[0].clone(), first_ids[1].clone(), added_id.clone()] {
        let gone = app.call(admin(TestRequest::delete().uri(&format!("{uri}/{instance}")))).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
    }
    let again = app.call(admin(TestRequest::delete().uri(&format!("{uri}/{added_id}")))).await;
    assert_eq!((again.status, again.code()), (StatusCode::NOT_FOUND, "instance_not_found"));
    let empty = app.call(get(&format!("/api/v1/servers/{id}"))).await;
    assert_eq!(empty.body["instances"], json!([]), "removing the last instance is allowed");
    assert_eq!(empty.body["endpoint_url"], json!(null));
    assert_eq!(empty.body["health_status"], "unhealthy", "no instance can serve");
    assert!(app.hub.current().get(ResourceKind::Server, &id).is_some(), "the server stays routable (503)");
    let patched = app
        .call(
            admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"description": "empty"})),
        )
        .await;
    assert_eq!(
        patched.status,
        StatusCode::OK,
        "a server without instances can still be patched: {}",
        patched.body
    );
    assert_eq!(patched.body["instances"], json!([]));

    let missing = format!("/api/v1/servers/{}/instances", uuid::Uuid::new_v4());
    let reply = app
        .call(admin(TestRequest::post().uri(&missing)).set_json(json!({"endpoint_url": "http://h/"})))
        .await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "server_not_found"));
}

#[actix_web::test]
async fn put_keeps_instance_ids_by_endpoint() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "keep", "instances": [
            {"endpoint_url": "http://127.0.0.1:5001/mcp"}, {"endpoint_url": "http://127.0.0.1:5002/mcp"}]}))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let before = ids(&created.body);
    let put = app
        .call(admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}"))).set_json(
            json!({"name": "keep",
            "instances": [{"endpoint_url": "http://127.0.0.1:5002/mcp", "weight": 5},
                          {"endpoint_url": "http://127.0.0.1:5003/mcp"}]}),
        ))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let after = ids(&put.body);
    assert_eq!(after[0], before[1], "the kept endpoint keeps its id");
    assert_eq!(put.body["instances"][0]["weight"], 5);
    assert!(!after.contains(&before[0]), "the dropped endpoint is gone");
    assert_eq!(after.len(), 2);
    let bare = app
        .call(
            admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"name": "keep", "endpoint_url": "http://127.0.0.1:5003/mcp"})),
        )
        .await;
    assert_eq!(ids(&bare.body), [after[1].clone()], "a bare endpoint_url is one instance");
}
