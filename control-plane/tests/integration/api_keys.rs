//! API keys through REST: create (the secret once) → list and read (never the secret) → the hub's table
//! carries the digest → delete → gone; validation writes nothing; expired keys are swept after a day.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use chrono::{Duration, Utc};
use mcpgw_control_plane::db::store;
use mcpgw_control_plane::expiry;
use mcpgw_control_plane::model::{ApiKeySpec, NewKey};
use mcpgw_proto::v1::{ApiKey, ResourceKind, resource::Kind};
use mcpgw_proto::validate::api_key_digest;
use serde_json::{Value, json};

use crate::support::{Reply, TestApp, admin, get};

/// `POST /api/v1/api-keys` with the admin token.
pub async fn create_key(app: &TestApp, body: Value) -> Reply {
    app.call(admin(TestRequest::post().uri("/api/v1/api-keys")).set_json(body)).await
}

/// The `ApiKey` resource the hub publishes for `id`, if any.
pub fn published(app: &TestApp, id: &str) -> Option<ApiKey> {
    match app.hub.current().get(ResourceKind::ApiKey, id)?.kind.clone()? {
        Kind::ApiKey(key) => Some(key),
        _ => None,
    }
}

#[actix_web::test]
async fn create_list_publish_delete() {
    let app = TestApp::start().await;
    let before = app.hub.current().version();
    let expires = (Utc::now() + Duration::days(30)).to_rfc3339();
    let permissions = json!([{"server": "git*", "tools": ["read_*", "list_*"]}, {"server": "docs"}]);
    let created = create_key(
        &app,
        json!({"name": "ci bot", "tenant_id": "acme", "role": "server_owner", "permissions": permissions, "expires_at": expires}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let body = &created.body;
    let key = body["key"].as_str().expect("the key is in the answer").to_owned();
    let id = body["id"].as_str().expect("id").to_owned();
    assert!(key.starts_with("mcpgw_") && key.len() == 49, "{key}");
    assert_eq!(body["prefix"], key[..12]);
    assert_eq!(
        (&body["name"], &body["tenant_id"], &body["role"], &body["permissions"]),
        (&json!("ci bot"), &json!("acme"), &json!("server_owner"), &permissions)
    );
    assert!(body["created_at"].is_string() && body["expires_at"].is_string());
    assert_eq!(
        created.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/api-keys/{id}").as_str())
    );
    let fields: Vec<&str> = body.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        fields.len(),
        9,
        "id, key, name, tenant_id, role, permissions, prefix, created_at, expires_at: {fields:?}"
    );

    // The answer to create is the only place the secret appears.
    let list = app.call(get("/api/v1/api-keys")).await;
    assert_eq!(list.status, StatusCode::OK);
    let listed = list.body.as_array().expect("an array");
    assert_eq!(listed.len(), 1);
    let text = list.body.to_string();
    assert!(
        !text.contains(&key[12..]) && listed[0].get("key").is_none() && listed[0].get("digest").is_none()
    );
    let mut expected = body.clone();
    expected.as_object_mut().expect("object").remove("key");
    assert_eq!(listed[0], expected);
    let one = app.call(get(&format!("/api/v1/api-keys/{id}"))).await;
    assert_eq!((one.status, &one.body), (StatusCode::OK, &expected));

    // Published to the proxies with the digest of the whole key, in the version that stored it.
    let resource = published(&app, &id).expect("the hub publishes the key");
    assert!(app.hub.current().version() > before);
    assert_eq!(resource.digest, api_key_digest(&key).to_vec());
    assert_eq!((resource.name.as_str(), resource.tenant_id.as_str()), ("ci bot", "acme"));
    assert_eq!(resource.roles, vec!["server_owner".to_owned()]);
    let expires_unix = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap_or_default())
        .expect("RFC 3339")
        .timestamp();
    assert_eq!(resource.expires_at_unix, expires_unix);

    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/api-keys/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(published(&app, &id).is_none(), "the deletion is published before the answer");
    assert_eq!(app.call(get("/api/v1/api-keys")).await.body, json!([]));
    for gone in [
        app.call(get(&format!("/api/v1/api-keys/{id}"))).await,
        app.call(admin(TestRequest::delete().uri(&format!("/api/v1/api-keys/{id}")))).await,
        app.call(get("/api/v1/api-keys/not-a-uuid")).await,
    ] {
        assert_eq!((gone.status, gone.code()), (StatusCode::NOT_FOUND, "api_key_not_found"));
    }
}

#[actix_web::test]
async fn defaults_and_a_key_that_never_expires() {
    let app = TestApp::start().await;
    let created = create_key(&app, json!({"name": "plain"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let body = &created.body;
    assert_eq!((&body["tenant_id"], &body["role"]), (&json!("default"), &json!("user")));
    assert_eq!((&body["permissions"], &body["expires_at"]), (&json!([]), &Value::Null));
    let id = body["id"].as_str().unwrap_or_default();
    let resource = published(&app, id).expect("published");
    assert_eq!((resource.expires_at_unix, resource.roles), (0, vec!["user".to_owned()]));
    let second = create_key(&app, json!({"name": "plain"})).await;
    assert_eq!(second.status, StatusCode::CREATED, "names need not be unique");
    assert_ne!(second.body["key"], body["key"]);
}

#[actix_web::test]
async fn invalid_requests_write_nothing() {
    let app = TestApp::start().await;
    let version = app.table().await.0;
    let past = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    for (body, code) in [
        (json!({"name": "k", "secret": "mine"}), "unknown_field"),
        (json!({"tenant_id": "acme"}), "missing_field"),
        (json!({"name": 7}), "malformed_json"),
        (json!({"name": ""}), "invalid_api_key_name"),
        (json!({"name": "n".repeat(101)}), "invalid_api_key_name"),
        (json!({"name": "k", "tenant_id": "a/b"}), "invalid_tenant"),
        (json!({"name": "k", "role": "Root"}), "invalid_role"),
        (json!({"name": "k", "role": "x".repeat(65)}), "invalid_role"),
        (json!({"name": "k", "permissions": {"server": "a"}}), "malformed_json"),
        (json!({"name": "k", "permissions": [{"server": "a", "tool": ["x"]}]}), "unknown_field"),
        (json!({"name": "k", "permissions": [{"server": " "}]}), "invalid_permissions"),
        (json!({"name": "k", "expires_at": "next week"}), "invalid_expires_at"),
        (json!({"name": "k", "expires_at": past}), "invalid_expires_at"),
    ] {
        let reply = create_key(&app, body.clone()).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code), "{body}: {}", reply.body);
    }
    let wrong_type =
        app.call(admin(TestRequest::post().uri("/api/v1/api-keys")).set_payload(r#"{"name":"k"}"#)).await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.table().await.0, version, "nothing was written");
    assert_eq!(app.call(get("/api/v1/api-keys")).await.body, json!([]));
}

#[actix_web::test]
async fn keys_expired_for_more_than_a_day_are_swept() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    let mut stored = Vec::new();
    for (name, expires_at) in [
        ("long-gone", Some(Utc::now() - Duration::days(2))),
        ("just-expired", Some(Utc::now() - Duration::hours(1))),
        ("valid", Some(Utc::now() + Duration::days(1))),
        ("forever", None),
    ] {
        // Expired keys cannot be created through REST; the store takes any spec.
        let spec = ApiKeySpec {
            name: name.into(),
            tenant_id: "default".into(),
            role: "user".into(),
            permissions: vec![],
            expires_at,
        };
        let (row, _) = store::api_keys::create(&mut conn, &spec, &NewKey::generate().expect("random"))
            .await
            .expect("store the key");
        stored.push((name, row.id.to_string()));
    }
    drop(conn);
    app.hub.refresh().await.expect("refresh");
    assert!(stored.iter().all(|(_, id)| published(&app, id).is_some()), "expired keys stay in the table");
    let version = app.hub.current().version();

    assert_eq!(expiry::sweep_once(&app.pool, &app.hub).await.expect("sweep"), 1);
    assert!(app.hub.current().version() > version, "the removal is published");
    let left: Vec<&str> =
        stored.iter().filter(|(_, id)| published(&app, id).is_some()).map(|(n, _)| *n).collect();
    assert_eq!(left, ["just-expired", "valid", "forever"]);
    let names: Vec<Value> = app
        .call(get("/api/v1/api-keys"))
        .await
        .body
        .as_array()
        .map(|keys| keys.iter().map(|k| k["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, [json!("just-expired"), json!("valid"), json!("forever")]);

    let version = app.hub.current().version();
    assert_eq!(expiry::sweep_once(&app.pool, &app.hub).await.expect("sweep"), 0);
    assert_eq!(app.table().await.0 as u64, version, "an empty sweep bumps nothing");
}
