//! Registry CRUD through the REST API: the happy path, conflicts and unknown ids.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::json;

use crate::support::{TestApp, admin, get};

#[actix_web::test]
async fn crud_happy_path() {
    let app = TestApp::start().await;
    let (v0, _) = app.table().await;

    let created = app
        .create(
            json!({"name": "b-server", "endpoint_url": "http://127.0.0.1:3001/mcp", "transport_type": "http",
                       "description": "demo", "tags": ["prod", "team-a"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/servers/{id}").as_str())
    );
    assert_eq!(created.body["name"], "b-server");
    assert_eq!(created.body["endpoint_url"], "http://127.0.0.1:3001/mcp");
    assert_eq!(created.body["transport_type"], "streamable_http", "http is stored as streamable_http");
    assert_eq!(created.body["description"], "demo");
    assert_eq!(created.body["tags"], json!(["prod", "team-a"]));
    let mut keys: Vec<_> = created.body.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "audit_arguments",
            "auto_discover",
            "capabilities",
            "circuit_breaker",
            "created_at",
            "description",
            "discovery",
            "endpoint_url",
            "hash_key",
            "health_check",
            "health_status",
            "id",
            "instances",
            "load_balancing",
            "name",
            "name_prefix",
            "owner",
            "priority",
            "tags",
            "tenant_id",
            "transport_type",
            "updated_at",
            "upstream_auth",
            "version"
        ]
    );
    assert_eq!(created.body["load_balancing"], "round_robin");
    assert_eq!(created.body["owner"], json!(null), "the admin token owns nothing");
    assert_eq!(created.body["upstream_auth"], json!({"type": "none"}));
    assert_eq!(created.body["instances"].as_array().map(Vec::len), Some(1));
    assert_eq!(created.body["instances"][0]["endpoint_url"], "http://127.0.0.1:3001/mcp");
    assert_eq!(created.body["instances"][0]["weight"], 1);

    let other = app.create(json!({"name": "a-server", "endpoint_url": "https://example.com/mcp"})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(other.body["transport_type"], "streamable_http", "the default transport");
    assert_eq!(other.body["tags"], json!([]));
    assert_eq!(other.body["description"], json!(null));

    let fetched = app.call(get(&format!("/api/v1/servers/{id}"))).await;
    assert_eq!(fetched.status, StatusCode::OK);
    let without_discovery = |mut v: serde_json::Value| {
        v.as_object_mut().map(|m| m.remove("discovery"));
        v
    };
    assert_eq!(without_discovery(fetched.body), without_discovery(created.body.clone()));

    let list = app.call(get("/api/v1/servers")).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> =
        list.body.as_array().expect("a bare array").iter().map(|s| s["name"].clone()).collect();
    assert_eq!(names, [json!("a-server"), json!("b-server")], "ordered by name");

    let put = app
        .call(admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}"))).set_json(
            json!({"name": "b-server", "endpoint_url": "http://127.0.0.1:3002/sse", "transport_type": "sse"}),
        ))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["id"], id.as_str());
    assert_eq!(put.body["transport_type"], "sse");
    assert_eq!(put.body["endpoint_url"], "http://127.0.0.1:3002/sse");
    assert_eq!(put.body["description"], json!(null), "PUT replaces every field");
    assert_eq!(put.body["tags"], json!([]));
    assert_eq!(put.body["created_at"], created.body["created_at"]);
    let renamed = app
        .call(
            admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"name": "c-server", "endpoint_url": "http://127.0.0.1:3002/sse"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["name"], "c-server");

    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app.call(get(&format!("/api/v1/servers/{id}"))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "server_not_found");
    let again = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    let (v1, servers) = app.table().await;
    assert_eq!(v1, v0 + 5, "two creates, two replaces and one delete each bump the version once");
    assert_eq!(servers.len(), 1);
}

#[actix_web::test]
async fn duplicate_name_is_a_conflict() {
    let app = TestApp::start().await;
    let body = json!({"name": "dup", "endpoint_url": "http://h/mcp"});
    assert_eq!(app.create(body.clone()).await.status, StatusCode::CREATED);
    let before = app.table().await;
    let second = app.create(body).await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.code(), "server_name_taken");
    assert_eq!(app.table().await, before, "nothing written");
}

#[actix_web::test]
async fn concurrent_registrations_of_one_name_admit_one() {
    let app = TestApp::start().await;
    let body = json!({"name": "race", "endpoint_url": "http://h/mcp"});
    let (a, b) = futures_util::future::join(app.create(body.clone()), app.create(body)).await;
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(app.table().await.1.len(), 1);
}

#[actix_web::test]
async fn rename_onto_a_taken_name_is_a_conflict() {
    let app = TestApp::start().await;
    app.create(json!({"name": "one", "endpoint_url": "http://h/1"})).await;
    let two = app.create(json!({"name": "two", "endpoint_url": "http://h/2"})).await;
    let id = two.body["id"].as_str().expect("id").to_owned();
    let before = app.table().await;
    let put = app
        .call(
            admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"name": "one", "endpoint_url": "http://h/2"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::CONFLICT);
    assert_eq!(put.code(), "server_name_taken");
    assert_eq!(app.table().await, before, "nothing written");
}

#[actix_web::test]
async fn unknown_ids_are_not_found() {
    let app = TestApp::start().await;
    let body = json!({"name": "x", "endpoint_url": "http://h/"});
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let uri = format!("/api/v1/servers/{id}");
        let get = app.call(get(&uri)).await;
        let put = app.call(admin(TestRequest::put().uri(&uri)).set_json(body.clone())).await;
        let delete = app.call(admin(TestRequest::delete().uri(&uri))).await;
        for reply in [get, put, delete] {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
            assert_eq!(reply.code(), "server_not_found");
        }
    }
    assert!(app.table().await.1.is_empty());
}

/// Writes are conditional on the version they were based on: `If-Match` with the `ETag` of a read, and
/// every PATCH on the version it read — a concurrent write is never silently overwritten.
#[actix_web::test]
async fn a_write_based_on_an_old_version_is_refused() {
    let app = TestApp::start().await;
    let created = app
        .call(admin(TestRequest::post().uri("/api/v1/servers")).set_json(json!({
            "name": "versioned", "endpoint_url": "http://127.0.0.1:4190/mcp", "auto_discover": false
        })))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let uri = format!("/api/v1/servers/{id}");
    let read = app.call(get(&uri)).await;
    let first = read.headers.get("etag").expect("an ETag").to_str().unwrap().to_owned();

    let patch = |tag: &str, body: serde_json::Value| {
        admin(TestRequest::patch().uri(&uri)).insert_header(("If-Match", tag.to_owned())).set_json(body)
    };
    let changed = app.call(patch(&first, json!({"description": "first writer"}))).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let second = changed.headers.get("etag").expect("the new ETag").to_str().unwrap().to_owned();
    assert_ne!(first, second);

    // A writer still holding the first version is refused, by PATCH and by PUT.
    let stale = app.call(patch(&first, json!({"tags": ["second writer"]}))).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{}", stale.body);
    assert_eq!(stale.body["code"], "server_changed", "{}", stale.body);
    let put = app
        .call(admin(TestRequest::put().uri(&uri)).insert_header(("If-Match", first.clone())).set_json(
            json!({
                "name": "versioned", "endpoint_url": "http://127.0.0.1:4190/mcp", "auto_discover": false
            }),
        ))
        .await;
    assert_eq!(put.status, StatusCode::PRECONDITION_FAILED, "{}", put.body);
    let now = app.call(get(&uri)).await;
    assert_eq!(now.body["description"], "first writer", "nothing was overwritten: {}", now.body);

    // A PATCH applies to the version it read: a write landing between its read and its write is not lost.
    let mut conn = app.pool.get().await.expect("connection");
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let (row, _) = mcpgw_control_plane::db::store::get(&mut conn, uuid).await.expect("read").expect("found");
    let spec = crate::support::spec(
        "versioned",
        mcpgw_control_plane::model::TransportType::StreamableHttp,
        "http://127.0.0.1:4190/mcp",
        Some("in between"),
    );
    mcpgw_control_plane::db::store::replace(&mut conn, uuid, &spec, None, None)
        .await
        .expect("a write in between");
    let late =
        mcpgw_control_plane::db::store::replace(&mut conn, uuid, &spec, None, Some(row.updated_at)).await;
    assert!(
        matches!(late, Err(mcpgw_control_plane::db::store::StoreError::Changed(_))),
        "a write based on the version before is refused: {late:?}"
    );
    // Unconditional writes (a PUT without If-Match) still go through.
    let put = app
        .call(admin(TestRequest::put().uri(&uri)).set_json(json!({
            "name": "versioned", "endpoint_url": "http://127.0.0.1:4190/mcp", "auto_discover": false
        })))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);

    // Instances are part of the server: adding one makes an ETag read before stale.
    let before = put.headers.get("etag").expect("an ETag").to_str().unwrap().to_owned();
    let added = app
        .call(
            admin(TestRequest::post().uri(&format!("{uri}/instances")))
                .set_json(json!({"endpoint_url": "http://127.0.0.1:4191/mcp"})),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let after = app.call(get(&uri)).await;
    assert_ne!(after.headers.get("etag").expect("an ETag").to_str().unwrap(), before);
    let stale = app.call(patch(&before, json!({"description": "based on one instance"}))).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED, "{}", stale.body);
}
