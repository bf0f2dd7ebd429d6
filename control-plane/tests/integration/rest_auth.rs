//! Every `/api/v1` route needs a credential (the admin token or an admin API key), reads included; a valid
//! key without the admin role gets 403 (a `server_owner` key reads and registers servers: `owners.rs`); a
//! deleted or expired key stops working at once. `/health`, `/ready`, `/docs` and the OpenAPI document stay
//! public.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use chrono::{Duration, Utc};
use mcpgw_control_plane::db::store;
use mcpgw_control_plane::model::{ApiKeySpec, NewKey};
use serde_json::json;

use crate::api_keys::create_key;
use crate::support::{Reply, TestApp, admin, bearer};

/// Every read route, with an id that does not exist where one is needed (a 404 proves the handler ran).
fn reads() -> Vec<String> {
    let id = uuid::Uuid::new_v4();
    [
        "/api/v1/servers".to_owned(),
        format!("/api/v1/servers/{id}"),
        format!("/api/v1/servers/{id}/health"),
        "/api/v1/discovery/tools".to_owned(),
        "/api/v1/discovery/resources".to_owned(),
        "/api/v1/admin/stats".to_owned(),
        "/api/v1/admin/export".to_owned(),
        "/api/v1/proxies".to_owned(),
        "/api/v1/api-keys".to_owned(),
        format!("/api/v1/api-keys/{id}"),
        "/api/v1/trusted-issuers".to_owned(),
        format!("/api/v1/trusted-issuers/{id}"),
        "/api/v1/users".to_owned(),
        "/api/v1/identity-providers".to_owned(),
    ]
    .into()
}

async fn key_with_role(app: &TestApp, role: &str) -> (String, String) {
    let created = create_key(app, json!({"name": format!("{role} key"), "role": role})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let field = |f: &str| created.body[f].as_str().unwrap_or_default().to_owned();
    (field("key"), field("id"))
}

fn assert_refused(reply: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!((reply.status, reply.code()), (status, code), "{what}: {}", reply.body);
    assert_eq!(reply.body["type"], "auth", "{what}");
    let www = reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok());
    let expected = (status == StatusCode::UNAUTHORIZED).then_some("Bearer");
    assert_eq!(www, expected, "{what}");
}

/// Routes that concern every tenant: a tenant administrator is refused them. (Discovery, stats, export,
/// import and users answer it for its own tenant: `tenants.rs`.)
const PLATFORM_ROUTES: [&str; 3] =
    ["/api/v1/trusted-issuers", "/api/v1/identity-providers", "/api/v1/proxies"];

/// The status of a GET that passed authentication: 200, or 404 for a made-up id.
fn passed(reply: &Reply) -> bool {
    reply.status == StatusCode::OK
        || (reply.status == StatusCode::NOT_FOUND && reply.code().ends_with("not_found"))
}

#[actix_web::test]
async fn reads_need_an_admin_credential() {
    let app = TestApp::start().await;
    let (admin_key, _) = key_with_role(&app, "platform_admin").await;
    let (tenant_admin_key, _) = key_with_role(&app, "admin").await;
    let (user_key, _) = key_with_role(&app, "user").await;
    let (owner_key, _) = key_with_role(&app, "server_owner").await;
    for path in reads() {
        let anonymous = app.call(TestRequest::get().uri(&path)).await;
        assert_refused(&anonymous, StatusCode::UNAUTHORIZED, "missing_authorization", &path);
        let wrong = app.call(bearer(TestRequest::get().uri(&path), "not-the-token")).await;
        assert_refused(&wrong, StatusCode::UNAUTHORIZED, "invalid_admin_token", &path);
        let unknown = app.call(bearer(TestRequest::get().uri(&path), "mcpgw_unknown")).await;
        assert_refused(&unknown, StatusCode::UNAUTHORIZED, "invalid_api_key", &path);
        let forbidden = app.call(bearer(TestRequest::get().uri(&path), &user_key)).await;
        assert_refused(&forbidden, StatusCode::FORBIDDEN, "insufficient_permissions", &path);
        // A server owner reads the servers of its tenant (owners.rs), nothing else.
        let by_owner = app.call(bearer(TestRequest::get().uri(&path), &owner_key)).await;
        if path.starts_with("/api/v1/servers") {
            assert!(passed(&by_owner), "{path} with a server_owner key: {}", by_owner.body);
        } else {
            assert_refused(&by_owner, StatusCode::FORBIDDEN, "insufficient_permissions", &path);
        }
        let with_key = app.call(bearer(TestRequest::get().uri(&path), &admin_key)).await;
        assert!(passed(&with_key), "{path} with an admin key: {} {}", with_key.status, with_key.body);
        let tenant_admin = app.call(bearer(TestRequest::get().uri(&path), &tenant_admin_key)).await;
        if PLATFORM_ROUTES.iter().any(|p| path.starts_with(p)) {
            assert_refused(&tenant_admin, StatusCode::FORBIDDEN, "insufficient_permissions", &path);
        } else {
            assert!(passed(&tenant_admin), "{path} with a tenant admin key: {}", tenant_admin.body);
        }
        let with_token = app.call(admin(TestRequest::get().uri(&path))).await;
        assert!(passed(&with_token), "{path} with the admin token: {}", with_token.status);
    }
}

#[actix_web::test]
async fn mutations_take_admin_keys_and_refuse_others_before_reading_the_body() {
    let app = TestApp::start().await;
    let (admin_key, _) = key_with_role(&app, "admin").await;
    let (user_key, _) = key_with_role(&app, "user").await;
    let body = json!({"name": "by-key", "endpoint_url": "http://127.0.0.1:3001/mcp", "auto_discover": false});
    let post = |key: &str| bearer(TestRequest::post().uri("/api/v1/servers"), key).set_json(body.clone());
    let created = app.call(post(&admin_key)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let refused = app.call(post(&user_key)).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "insufficient_permissions", "POST with a user key");
    // A malformed body does not tell an unauthorized caller anything: the credential is checked first.
    let garbage = bearer(TestRequest::post().uri("/api/v1/servers"), &user_key)
        .insert_header(("Content-Type", "application/json"))
        .set_payload("{not json");
    let refused = app.call(garbage).await;
    assert_refused(&refused, StatusCode::FORBIDDEN, "insufficient_permissions", "garbage with a user key");
    // Trusted issuers: refused before the body is read, let alone the issuer fetched.
    let id = uuid::Uuid::new_v4();
    for (req, what) in [
        (TestRequest::post().uri("/api/v1/trusted-issuers"), "POST issuer"),
        (TestRequest::patch().uri(&format!("/api/v1/trusted-issuers/{id}")), "PATCH issuer"),
        (TestRequest::delete().uri(&format!("/api/v1/trusted-issuers/{id}")), "DELETE issuer"),
    ] {
        let req = bearer(req, &user_key).set_json(json!({"issuer": "https://169.254.169.254"}));
        assert_refused(&app.call(req).await, StatusCode::FORBIDDEN, "insufficient_permissions", what);
    }
    // An admin key may manage keys too, its own included.
    let (other_key, other_id) = key_with_role(&app, "user").await;
    let deleted = app
        .call(bearer(TestRequest::delete().uri(&format!("/api/v1/api-keys/{other_id}")), &admin_key))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app.call(bearer(TestRequest::get().uri("/api/v1/servers"), &other_key)).await;
    assert_refused(&gone, StatusCode::UNAUTHORIZED, "invalid_api_key", "a deleted key");
}

#[actix_web::test]
async fn a_deleted_admin_key_stops_working_at_once() {
    let app = TestApp::start().await;
    let (key, id) = key_with_role(&app, "admin").await;
    let uri = "/api/v1/servers";
    assert_eq!(app.call(bearer(TestRequest::get().uri(uri), &key)).await.status, StatusCode::OK);
    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/api-keys/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = app.call(bearer(TestRequest::get().uri(uri), &key)).await;
    assert_refused(&after, StatusCode::UNAUTHORIZED, "invalid_api_key", "the very next request");
}

#[actix_web::test]
async fn an_expired_key_is_refused() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    let key = NewKey::generate().expect("random");
    let spec = ApiKeySpec {
        name: "old".into(),
        tenant_id: "default".into(),
        role: "admin".into(),
        permissions: vec![],
        expires_at: Some(Utc::now() - Duration::seconds(1)),
    };
    store::api_keys::create(&mut conn, &spec, &key).await.expect("store an expired key");
    drop(conn);
    let reply = app.call(bearer(TestRequest::get().uri("/api/v1/servers"), &key.secret)).await;
    assert_refused(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key", "an expired key");
}

#[actix_web::test]
async fn without_an_admin_token_admin_keys_still_work() {
    let app = TestApp::with(None, 1_048_576, None).await;
    let mut conn = app.pool.get().await.expect("connection");
    let key = NewKey::generate().expect("random");
    let spec = ApiKeySpec {
        name: "bootstrap".into(),
        tenant_id: "default".into(),
        role: "admin".into(),
        permissions: vec![],
        expires_at: None,
    };
    store::api_keys::create(&mut conn, &spec, &key).await.expect("store a key");
    drop(conn);
    let reply = app.call(bearer(TestRequest::get().uri("/api/v1/api-keys"), &key.secret)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(!reply.body.to_string().contains(&key.secret));
}

#[actix_web::test]
async fn public_routes_need_nothing() {
    let app = TestApp::start().await;
    for path in ["/health", "/ready", "/api/v1/openapi.json"] {
        let reply = app.call(TestRequest::get().uri(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let state = app.state();
    let svc = actix_web::test::init_service(
        actix_web::App::new().configure(move |cfg| mcpgw_control_plane::api::routes(cfg, state)),
    )
    .await;
    let docs = actix_web::test::call_service(&svc, TestRequest::get().uri("/docs").to_request()).await;
    assert_eq!(docs.status(), StatusCode::OK);
}

#[actix_web::test]
async fn the_openapi_document_requires_the_credential_on_every_api_route() {
    let app = TestApp::start().await;
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/v1/api-keys") && paths.contains_key("/api/v1/api-keys/{id}"));
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let public = !path.starts_with("/api/v1/");
            let security = &op["security"];
            if public {
                assert!(security.is_null(), "{method} {path} is public");
                continue;
            }
            operations += 1;
            assert_eq!(security, &json!([{"admin_token": []}]), "{method} {path}");
            for status in ["401", "403"] {
                assert!(op["responses"][status].is_object(), "{method} {path} documents {status}");
            }
        }
    }
    assert_eq!(operations, 36, "every operation of the API");
    let schemas = &doc["components"]["schemas"];
    for schema in ["ApiKeyRequest", "ApiKeyView", "CreatedApiKey", "PermissionRule"] {
        assert!(schemas[schema].is_object(), "{schema}");
    }
    assert!(schemas["ApiKeyView"]["properties"].get("key").is_none());
    assert!(schemas["CreatedApiKey"]["properties"]["key"].is_object());
}

#[actix_web::test]
async fn a_tenant_administrator_manages_its_own_tenant_only() {
    let app = TestApp::start().await;
    for (name, tenant) in [("acme-one", "acme"), ("globex-one", "globex")] {
        let body = json!({"name": name, "endpoint_url": format!("http://127.0.0.1:3001/{name}"), "auto_discover": false, "tenant_id": tenant});
        assert_eq!(app.create(body).await.status, StatusCode::CREATED);
    }
    let created = create_key(&app, json!({"name": "acme admin", "role": "admin", "tenant_id": "acme"})).await;
    let acme_admin = created.body["key"].as_str().unwrap().to_owned();
    let globex_key = create_key(&app, json!({"name": "globex user", "tenant_id": "globex"})).await;
    let globex_key_id = globex_key.body["id"].as_str().unwrap().to_owned();
    let call = |req: TestRequest| app.call(bearer(req, &acme_admin));

    let listed = call(TestRequest::get().uri("/api/v1/servers?tenant_id=globex")).await;
    let names: Vec<&str> = listed
        .body
        .as_array()
        .map(|i| i.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["acme-one"], "its own servers only, whatever the query: {}", listed.body);
    let (_, servers) = app.table().await;
    let globex_id = servers.iter().find(|(s, _)| s.name == "globex-one").map(|(s, _)| s.id).unwrap();
    for req in [
        TestRequest::get().uri(&format!("/api/v1/servers/{globex_id}")),
        TestRequest::delete().uri(&format!("/api/v1/servers/{globex_id}")),
        TestRequest::get().uri(&format!("/api/v1/servers/{globex_id}/health")),
        TestRequest::get().uri(&format!("/api/v1/api-keys/{globex_key_id}")),
        TestRequest::delete().uri(&format!("/api/v1/api-keys/{globex_key_id}")),
    ] {
        let reply = call(req).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "another tenant's objects do not exist: {}",
            reply.body
        );
    }
    let other_tenant = json!({"name": "sneaky", "endpoint_url": "http://127.0.0.1:3001/x", "auto_discover": false, "tenant_id": "globex"});
    let reply = call(TestRequest::post().uri("/api/v1/servers").set_json(other_tenant)).await;
    assert_refused(&reply, StatusCode::FORBIDDEN, "insufficient_permissions", "a server in another tenant");
    let own = json!({"name": "acme-two", "endpoint_url": "http://127.0.0.1:3001/y", "auto_discover": false});
    let reply = call(TestRequest::post().uri("/api/v1/servers").set_json(own)).await;
    assert_eq!(
        (reply.status, reply.body["tenant_id"].as_str()),
        (StatusCode::CREATED, Some("acme")),
        "{}",
        reply.body
    );
    let reply = call(
        TestRequest::post().uri("/api/v1/api-keys").set_json(json!({"name": "x", "role": "platform_admin"})),
    )
    .await;
    assert_refused(
        &reply,
        StatusCode::FORBIDDEN,
        "insufficient_permissions",
        "a platform key by a tenant admin",
    );
    // Roles and rate limits: another tenant's are missing, its own are deleted.
    let globex_role = app
        .call(
            admin(TestRequest::post().uri("/api/v1/roles"))
                .set_json(json!({"name": "g", "tenant_id": "globex", "rules": [{"server": "*"}]})),
        )
        .await;
    let globex_limit = app
        .call(
            admin(TestRequest::post().uri("/api/v1/rate-limits")).set_json(
                json!({"scope": "user", "match": {"tenant": "globex"}, "requests": 1, "per": "1s"}),
            ),
        )
        .await;
    for (kind, created) in [("roles", &globex_role), ("rate-limits", &globex_limit)] {
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let id = created.body["id"].as_str().unwrap();
        let reply = call(TestRequest::delete().uri(&format!("/api/v1/{kind}/{id}"))).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{kind} of another tenant: {}", reply.body);
        let listed = call(TestRequest::get().uri(&format!("/api/v1/{kind}"))).await;
        assert_eq!(listed.body["items"], json!([]), "{kind}: {}", listed.body);
    }
    let own = call(
        TestRequest::post()
            .uri("/api/v1/roles")
            .set_json(json!({"name": "mine", "rules": [{"server": "acme-*"}]})),
    )
    .await;
    assert_eq!(
        (own.status, own.body["tenant_id"].as_str()),
        (StatusCode::CREATED, Some("acme")),
        "{}",
        own.body
    );
    let id = own.body["id"].as_str().unwrap();
    let reply = call(TestRequest::delete().uri(&format!("/api/v1/roles/{id}"))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    let keys = call(TestRequest::get().uri("/api/v1/api-keys")).await;
    assert!(keys.body.as_array().unwrap().iter().all(|k| k["tenant_id"] == "acme"), "{}", keys.body);
}

#[tokio::test]
async fn a_narrowed_admin_key_creates_keys_no_wider_than_itself() {
    let app = TestApp::start().await;
    let rules = json!([{"server": "acme-*", "tools": ["read_*"]}]);
    let created = create_key(
        &app,
        json!({"name": "narrowed admin", "role": "admin", "tenant_id": "acme", "permissions": rules}),
    )
    .await;
    let narrowed = created.body["key"].as_str().unwrap().to_owned();
    let post = |body: serde_json::Value| {
        app.call(bearer(TestRequest::post().uri("/api/v1/api-keys").set_json(body), &narrowed))
    };
    let child = post(json!({"name": "child"})).await;
    assert_eq!(child.status, StatusCode::CREATED, "{}", child.body);
    assert_eq!(child.body["permissions"], rules, "its creator's permissions are copied: {}", child.body);
    let same = post(json!({"name": "same", "permissions": rules})).await;
    assert_eq!(same.status, StatusCode::CREATED, "{}", same.body);
    let wider = post(json!({"name": "wider", "permissions": [{"server": "*"}]})).await;
    assert_refused(&wider, StatusCode::FORBIDDEN, "insufficient_permissions", "a key wider than its creator");
    // Keys without permissions of their own create what their role allows.
    let (admin, _) = key_with_role(&app, "admin").await;
    let reply = app
        .call(bearer(TestRequest::post().uri("/api/v1/api-keys").set_json(json!({"name": "free"})), &admin))
        .await;
    assert_eq!(
        (reply.status, &reply.body["permissions"]),
        (StatusCode::CREATED, &json!([])),
        "{}",
        reply.body
    );
}

/// Guessing credentials is bounded: after 20 refused tokens within a minute, an address is refused without
/// any check (429, even with the right token) until its window ends; other addresses are not affected.
#[actix_web::test]
async fn repeated_refused_credentials_are_throttled_per_address() {
    let app = TestApp::start().await;
    let guesser: std::net::SocketAddr = "198.51.100.7:40000".parse().expect("addr");
    let other: std::net::SocketAddr = "198.51.100.8:40000".parse().expect("addr");
    let from = |addr, token: &str| bearer(TestRequest::get().uri("/api/v1/servers"), token).peer_addr(addr);
    for i in 0..mcpgw_control_plane::auth::MAX_FAILURES {
        let reply = app.call(from(guesser, &format!("guess-{i}"))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "guess {i}: {}", reply.body);
    }
    let blocked = app.call(from(guesser, "guess-more")).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS, "{}", blocked.body);
    assert_eq!(blocked.body["code"], "too_many_authentication_failures");
    assert_eq!(blocked.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("60"));
    let right_token = app.call(from(guesser, crate::support::TOKEN)).await;
    assert_eq!(right_token.status, StatusCode::TOO_MANY_REQUESTS, "refused without a check");
    let elsewhere = app.call(from(other, crate::support::TOKEN)).await;
    assert_eq!(elsewhere.status, StatusCode::OK, "{}", elsewhere.body);
}
