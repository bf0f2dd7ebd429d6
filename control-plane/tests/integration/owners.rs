//! The `server_owner` role on the admin API: it reads the servers of its tenant, registers servers there
//! (becoming their `owner`) and changes only those — the server, its instances, its discovery; another
//! server of its tenant is 403, another tenant's 404, and every other admin route stays 403. Tenant
//! administrators keep managing every server of their tenant, the owners' included.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::api_keys::create_key;
use crate::support::{Reply, TestApp, admin, bearer};

/// A key of `tenant` holding `role`: its secret and its owner label (`api-key:<id>`).
async fn key(app: &TestApp, tenant: &str, role: &str) -> (String, String) {
    let created =
        create_key(app, json!({"name": format!("{tenant} {role}"), "role": role, "tenant_id": tenant})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let field = |f: &str| created.body[f].as_str().expect(f).to_owned();
    (field("key"), format!("api-key:{}", field("id")))
}

fn server(name: &str) -> Value {
    json!({"name": name, "endpoint_url": format!("http://127.0.0.1:3001/{name}"), "auto_discover": false})
}

fn id_of(reply: &Reply) -> String {
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["id"].as_str().expect("id").to_owned()
}

fn assert_forbidden(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "insufficient_permissions"),
        "{what}: {}",
        reply.body
    );
}

/// Every request that changes server `id`: PUT, PATCH, DELETE, refresh, adding and removing an instance.
fn changes(id: &str, instance: &str) -> Vec<(TestRequest, &'static str)> {
    let uri = format!("/api/v1/servers/{id}");
    vec![
        (TestRequest::put().uri(&uri).set_json(server("renamed")), "PUT"),
        (TestRequest::patch().uri(&uri).set_json(json!({"description": "mine now"})), "PATCH"),
        (TestRequest::delete().uri(&uri), "DELETE"),
        (TestRequest::post().uri(&format!("{uri}/refresh")), "refresh"),
        (
            TestRequest::post()
                .uri(&format!("{uri}/instances"))
                .set_json(json!({"endpoint_url": "http://127.0.0.1:3002/extra"})),
            "add an instance",
        ),
        (TestRequest::delete().uri(&format!("{uri}/instances/{instance}")), "remove an instance"),
    ]
}

#[actix_web::test]
async fn a_server_owner_manages_the_servers_it_registered_and_reads_its_tenant() {
    let app = TestApp::start().await;
    let (tenant_admin, admin_label) = key(&app, "acme", "admin").await;
    let (owner, owner_label) = key(&app, "acme", "server_owner").await;
    let as_admin = |req: TestRequest| app.call(bearer(req, &tenant_admin));
    let as_owner = |req: TestRequest| app.call(bearer(req, &owner));

    // The tenant administrator's server records it as owner; the admin token's records nobody.
    let by_admin = as_admin(TestRequest::post().uri("/api/v1/servers").set_json(server("acme-admin"))).await;
    assert_eq!(by_admin.body["owner"], admin_label.as_str(), "{}", by_admin.body);
    let admins = id_of(&by_admin);
    let admins_instance = by_admin.body["instances"][0]["id"].as_str().expect("an instance").to_owned();
    let mut globex = server("globex-one");
    globex["tenant_id"] = json!("globex");
    let by_token = app.create(globex).await;
    assert_eq!(by_token.body["owner"], Value::Null, "{}", by_token.body);
    let globex = id_of(&by_token);
    let globex_instance = by_token.body["instances"][0]["id"].as_str().expect("an instance").to_owned();

    // It registers a server in its tenant and owns it; another tenant is refused.
    let created = as_owner(TestRequest::post().uri("/api/v1/servers").set_json(server("acme-owned"))).await;
    let own = id_of(&created);
    assert_eq!(
        (created.body["tenant_id"].as_str(), created.body["owner"].as_str()),
        (Some("acme"), Some(owner_label.as_str())),
        "{}",
        created.body
    );
    let mut elsewhere = server("sneaky");
    elsewhere["tenant_id"] = json!("globex");
    let refused = as_owner(TestRequest::post().uri("/api/v1/servers").set_json(elsewhere)).await;
    assert_forbidden(&refused, "a server in another tenant");

    // It reads every server of its tenant, not another tenant's.
    let listed = as_owner(TestRequest::get().uri("/api/v1/servers?tenant_id=globex")).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let names: Vec<&str> =
        listed.body.as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["acme-admin", "acme-owned"], "{}", listed.body);
    for id in [&admins, &own] {
        let read = as_owner(TestRequest::get().uri(&format!("/api/v1/servers/{id}"))).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.body);
        let health = as_owner(TestRequest::get().uri(&format!("/api/v1/servers/{id}/health"))).await;
        assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    }

    // Its own server: updated, patched, instances added and removed; the owner stays.
    let uri = format!("/api/v1/servers/{own}");
    let mut replacement = server("acme-owned");
    replacement["description"] = json!("replaced");
    let put = as_owner(TestRequest::put().uri(&uri).set_json(replacement)).await;
    assert_eq!((put.status, put.body["owner"].as_str()), (StatusCode::OK, Some(owner_label.as_str())));
    let patched = as_owner(TestRequest::patch().uri(&uri).set_json(json!({"tags": ["search"]}))).await;
    assert_eq!(
        (patched.status, patched.body["description"].as_str(), patched.body["owner"].as_str()),
        (StatusCode::OK, Some("replaced"), Some(owner_label.as_str())),
        "{}",
        patched.body
    );
    let instance = json!({"endpoint_url": "http://127.0.0.1:3002/second"});
    let added = as_owner(TestRequest::post().uri(&format!("{uri}/instances")).set_json(instance)).await;
    let added = id_of(&added);
    let removed = as_owner(TestRequest::delete().uri(&format!("{uri}/instances/{added}"))).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);

    // The tenant administrator's server: every change is 403 and nothing changes.
    let before = app.table().await;
    for (req, what) in changes(&admins, &admins_instance) {
        assert_forbidden(&as_owner(req).await, &format!("{what} on the tenant administrator's server"));
    }
    // Another tenant's server does not exist for it.
    for (req, what) in changes(&globex, &globex_instance) {
        let reply = as_owner(req).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{what} on another tenant's server: {}", reply.body);
    }
    let read = as_owner(TestRequest::get().uri(&format!("/api/v1/servers/{globex}"))).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "{}", read.body);
    assert_eq!(app.table().await, before, "nothing was written");

    // The tenant administrator still manages the owner's server; the owner stays.
    let patched = as_admin(TestRequest::patch().uri(&uri).set_json(json!({"description": "by admin"}))).await;
    assert_eq!(
        (patched.status, patched.body["owner"].as_str()),
        (StatusCode::OK, Some(owner_label.as_str())),
        "{}",
        patched.body
    );
    let instance = json!({"endpoint_url": "http://127.0.0.1:3002/by-admin"});
    let added = as_admin(TestRequest::post().uri(&format!("{uri}/instances")).set_json(instance)).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);

    // Its own server is deleted by it.
    let deleted = as_owner(TestRequest::delete().uri(&uri)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let gone = as_owner(TestRequest::get().uri(&uri)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}

#[actix_web::test]
async fn a_server_owner_manages_nothing_else_and_a_user_no_server() {
    let app = TestApp::start().await;
    let (owner, _) = key(&app, "acme", "server_owner").await;
    let (user, _) = key(&app, "acme", "user").await;
    let as_owner = |req: TestRequest| app.call(bearer(req, &owner));
    for (req, what) in [
        (
            TestRequest::post().uri("/api/v1/api-keys").set_json(json!({"name": "x", "role": "admin"})),
            "POST api-keys",
        ),
        (TestRequest::get().uri("/api/v1/api-keys"), "GET api-keys"),
        (
            TestRequest::post()
                .uri("/api/v1/roles")
                .set_json(json!({"name": "r", "rules": [{"server": "*"}]})),
            "POST roles",
        ),
        (
            TestRequest::post()
                .uri("/api/v1/rate-limits")
                .set_json(json!({"scope": "user", "match": {"tenant": "acme"}, "requests": 1, "per": "1s"})),
            "POST rate-limits",
        ),
        (TestRequest::get().uri("/api/v1/users"), "GET users"),
        (TestRequest::get().uri("/api/v1/identity-providers"), "GET identity-providers"),
        (TestRequest::post().uri("/api/v1/admin/import").set_payload("servers: []\n"), "import"),
    ] {
        assert_forbidden(&as_owner(req).await, what);
    }
    let refused =
        app.call(bearer(TestRequest::post().uri("/api/v1/servers"), &user).set_json(server("by-user"))).await;
    assert_forbidden(&refused, "POST servers with a user key");
    assert_forbidden(
        &app.call(bearer(TestRequest::get().uri("/api/v1/servers"), &user)).await,
        "GET servers",
    );
    assert!(app.table().await.1.is_empty(), "nothing was registered");
}

#[actix_web::test]
async fn an_import_records_the_importer_as_owner_of_what_it_creates() {
    let app = TestApp::start().await;
    let (tenant_admin, admin_label) = key(&app, "acme", "admin").await;
    let mut old = server("acme-old");
    old["tenant_id"] = json!("acme");
    let existing = id_of(&app.create(old).await);
    let doc = "servers:\n  - name: acme-old\n    endpoint_url: http://127.0.0.1:3001/changed\n    auto_discover: false\n    tenant_id: acme\n  - name: acme-new\n    endpoint_url: http://127.0.0.1:3001/acme-new\n    auto_discover: false\n";
    let reply = app
        .call(bearer(TestRequest::post().uri("/api/v1/admin/import"), &tenant_admin).set_payload(doc))
        .await;
    assert_eq!(
        (reply.status, &reply.body["created"], &reply.body["updated"]),
        (StatusCode::OK, &json!(1), &json!(1))
    );
    let listed = app.call(admin(TestRequest::get().uri("/api/v1/servers"))).await.body;
    let owners: Vec<(&str, &Value)> = listed
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (s["name"].as_str().unwrap_or_default(), &s["owner"]))
        .collect();
    assert_eq!(owners, [("acme-new", &json!(admin_label)), ("acme-old", &Value::Null)], "{listed}");
    let old = app.call(admin(TestRequest::get().uri(&format!("/api/v1/servers/{existing}")))).await.body;
    assert_eq!(old["endpoint_url"], "http://127.0.0.1:3001/changed", "updated, owner kept: {old}");
}

#[actix_web::test]
async fn the_openapi_document_names_the_permission_of_each_server_route() {
    let app = TestApp::start().await;
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    for (path, method, permission) in [
        ("/api/v1/servers", "get", "ServerReader"),
        ("/api/v1/servers", "post", "ServerManager"),
        ("/api/v1/servers/{id}", "get", "ServerReader"),
        ("/api/v1/servers/{id}", "put", "ServerManager"),
        ("/api/v1/servers/{id}", "patch", "ServerManager"),
        ("/api/v1/servers/{id}", "delete", "ServerManager"),
        ("/api/v1/servers/{id}/refresh", "post", "ServerManager"),
        ("/api/v1/servers/{id}/health", "get", "ServerReader"),
        ("/api/v1/servers/{id}/instances", "post", "ServerManager"),
        ("/api/v1/servers/{id}/instances/{instance_id}", "delete", "ServerManager"),
    ] {
        let op = &doc["paths"][path][method];
        let description = op["description"].as_str().unwrap_or_default();
        assert!(
            description.contains(permission) && description.contains("server_owner"),
            "{method} {path}: {op}"
        );
        let forbidden = op["responses"]["403"]["description"].as_str().unwrap_or_default();
        assert!(forbidden.contains("server_owner"), "{method} {path}: {forbidden}");
    }
    assert!(doc["components"]["schemas"]["ServerView"]["properties"]["owner"].is_object());
}
