//! Upstream credentials through REST: sealed at rest (no table holds the secret in clear), never in a
//! read, list, health view or export, kept when a request omits the value, streamed decrypted in the
//! hub's resources; refused without `--secrets-key`; presented by discovery and health checks to an
//! upstream that requires them.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use mcpgw_control_plane::config::HealthDefaults;
use mcpgw_control_plane::health::Checker;
use mcpgw_control_plane::hub::RoutingHub;
use mcpgw_control_plane::mcp::McpClient;
use mcpgw_control_plane::ssrf::SsrfPolicy;
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{HealthStatus, ResourceKind, upstream_credential};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fake_mcp::FakeMcp;
use crate::registry::{export, import};
use crate::support::{TestApp, admin, eventually, get};

const SECRET: &str = "s3cret-upstream-value-7f3a";

/// `(header, value)` of the credential published on the Server (`kind = Server`) or Instance resource.
fn published(set: &ResourceSet, kind: ResourceKind, id: &str) -> Option<(String, String)> {
    let credential = match set.get(kind, id)?.kind.as_ref()? {
        Kind::Server(s) => s.upstream_credential.clone(),
        Kind::Instance(i) => i.upstream_credential.clone(),
        _ => None,
    }?;
    let upstream_credential::Kind::StaticHeader(h) = credential.kind? else { return None };
    Some((h.name, h.value))
}

fn server_cred(app: &TestApp, id: &str) -> Option<(String, String)> {
    published(&app.hub.current(), ResourceKind::Server, id)
}

fn instance_cred(app: &TestApp, id: &str) -> Option<(String, String)> {
    published(&app.hub.current(), ResourceKind::Instance, id)
}

fn pair(header: &str, value: &str) -> Option<(String, String)> {
    Some((header.to_owned(), value.to_owned()))
}

/// Every row of every table as text (bytea in hex), to look for a secret in clear.
async fn database_text(app: &TestApp) -> String {
    text_of(app, true).await
}

/// The same without the audit log, which keeps the views of past changes (a credential's type and header).
async fn registry_text(app: &TestApp) -> String {
    text_of(app, false).await
}

async fn text_of(app: &TestApp, audit_log: bool) -> String {
    let (client, connection) =
        tokio_postgres::connect(&app.db_url(), tokio_postgres::NoTls).await.expect("connect");
    let driver = tokio::spawn(connection);
    let tables = client
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .await
        .expect("tables");
    let mut text = String::new();
    for table in tables {
        let name: String = table.get(0);
        if !audit_log && name.starts_with("audit_log") {
            continue;
        }
        let sql = format!("SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{name}\" t");
        let rows: String = client.query_one(&sql, &[]).await.expect("rows").get(0);
        text.push_str(&rows);
    }
    driver.abort();
    text
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn patch(app: &TestApp, id: &str, body: Value) -> crate::support::Reply {
    app.call(admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}"))).set_json(body)).await
}

#[actix_web::test]
async fn sealed_at_rest_never_shown_and_streamed_decrypted() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "keyed", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": SECRET}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["upstream_auth"], json!({"type": "static_header", "header": "X-API-Key"}));
    assert!(created.body["instances"][0].get("upstream_auth").is_none(), "the instance uses its server's");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let first = created.body["instances"][0]["id"].as_str().expect("instance").to_owned();
    assert_eq!(server_cred(&app, &id), pair("X-API-Key", SECRET), "proxies get it decrypted");
    assert_eq!(instance_cred(&app, &first), None);

    // An instance with its own credential, which replaces the server's for it.
    let added = app
        .call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/instances"))).set_json(json!({
            "endpoint_url": "http://127.0.0.1:2/mcp",
            "upstream_auth": {"type": "static_header", "header": "Authorization", "value": "Bearer inst-s3cret"}})))
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    assert_eq!(added.body["upstream_auth"], json!({"type": "static_header", "header": "Authorization"}));
    let second = added.body["id"].as_str().expect("instance").to_owned();
    assert_eq!(instance_cred(&app, &second), pair("Authorization", "Bearer inst-s3cret"));

    // Nowhere in clear: not in any table, not in any read.
    let stored = database_text(&app).await;
    for secret in [SECRET, "inst-s3cret"] {
        assert!(!stored.contains(secret) && !stored.contains(&hex(secret)), "{secret} is in the database");
    }
    assert!(stored.contains("static_header") && stored.contains("X-API-Key"), "the kind and header are");
    let reads = [
        app.call(get(&format!("/api/v1/servers/{id}"))).await.body.to_string(),
        app.call(get("/api/v1/servers")).await.body.to_string(),
        app.call(get(&format!("/api/v1/servers/{id}/health"))).await.body.to_string(),
        export(&app).await,
    ];
    for read in &reads {
        assert!(!read.contains(SECRET) && !read.contains("inst-s3cret"), "a read shows a secret: {read}");
    }
    assert!(
        reads[3].contains("type: static_header") && reads[3].contains("header: Authorization"),
        "{}",
        reads[3]
    );
    let listed = app.call(get("/api/v1/servers")).await.body;
    assert_eq!(listed[0]["instances"][1]["upstream_auth"]["header"], "Authorization");

    // A read written back (no values) keeps both secrets; PATCH without a value keeps it under a new header.
    let put = app
        .call(admin(TestRequest::put().uri(&format!("/api/v1/servers/{id}"))).set_json(json!({
            "name": "keyed", "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key"},
            "instances": [{"endpoint_url": "http://127.0.0.1:1/mcp"}, {"endpoint_url": "http://127.0.0.1:2/mcp",
                "upstream_auth": {"type": "static_header", "header": "Authorization"}}]})))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(server_cred(&app, &id), pair("X-API-Key", SECRET));
    assert_eq!(instance_cred(&app, &second), pair("Authorization", "Bearer inst-s3cret"));
    let renamed =
        patch(&app, &id, json!({"upstream_auth": {"type": "static_header", "header": "X-Token"}})).await;
    assert_eq!(renamed.body["upstream_auth"]["header"], "X-Token", "{}", renamed.body);
    assert_eq!(server_cred(&app, &id), pair("X-Token", SECRET));
    let other = patch(&app, &id, json!({"description": "unrelated"})).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    assert_eq!(server_cred(&app, &id), pair("X-Token", SECRET), "an unrelated PATCH keeps it");
    assert_eq!(instance_cred(&app, &second), pair("Authorization", "Bearer inst-s3cret"));
    let rotated = patch(
        &app,
        &id,
        json!({"upstream_auth": {"type": "static_header", "header": "X-Token", "value": "new-s3cret"}}),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(server_cred(&app, &id), pair("X-Token", "new-s3cret"));

    // A hub without the key (a replica started without --secrets-key) publishes no credential at all.
    let keyless = RoutingHub::new(app.pool.clone(), None);
    keyless.refresh().await.expect("refresh");
    assert_eq!(published(&keyless.current(), ResourceKind::Server, &id), None);
    assert!(keyless.current().get(ResourceKind::Server, &id).is_some(), "the server itself is published");

    // Refusals write nothing.
    let version = app.table().await.0;
    for (body, what) in [
        (
            json!({"upstream_auth": {"type": "static_header", "header": "Host", "value": "x"}}),
            "reserved header",
        ),
        (
            json!({"upstream_auth": {"type": "static_header", "header": "Mcp-Session-Id", "value": "x"}}),
            "reserved",
        ),
        (json!({"upstream_auth": {"type": "oauth", "header": "X", "value": "x"}}), "unknown type"),
        (
            json!({"upstream_auth": {"type": "static_header", "header": "X", "value": "a\nb"}}),
            "control characters",
        ),
        (
            json!({"instances": [{"endpoint_url": "http://127.0.0.1:1/mcp", "upstream_auth": {"type": "none"}}]}),
            "none",
        ),
        (
            json!({"instances": [{"endpoint_url": "http://127.0.0.1:9/mcp",
            "upstream_auth": {"type": "static_header", "header": "X"}}]}),
            "nothing to keep",
        ),
    ] {
        let refused = patch(&app, &id, body.clone()).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, "invalid_upstream_auth"),
            "{what}: {}",
            refused.body
        );
    }
    let new_without_value = app
        .create(
            json!({"name": "nothing-stored", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key"}}),
        )
        .await;
    assert_eq!(new_without_value.code(), "invalid_upstream_auth", "{}", new_without_value.body);
    assert!(
        new_without_value.body["message"].as_str().is_some_and(|m| m.contains("value")),
        "{}",
        new_without_value.body
    );
    assert_eq!(app.table().await.0, version, "refused requests write nothing");

    let removed = patch(&app, &id, json!({"upstream_auth": null})).await;
    assert_eq!(removed.body["upstream_auth"], json!({"type": "none"}), "{}", removed.body);
    assert_eq!(server_cred(&app, &id), None);
    assert_eq!(
        instance_cred(&app, &second),
        pair("Authorization", "Bearer inst-s3cret"),
        "the instance's stays"
    );
    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(!registry_text(&app).await.contains("static_header"), "credentials go with their server");
}

#[actix_web::test]
async fn without_a_secrets_key_credentials_are_refused() {
    let app = TestApp::without_secrets().await;
    let refused = app
        .create(json!({"name": "keyed", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": SECRET}}))
        .await;
    assert_eq!((refused.status, refused.code()), (StatusCode::BAD_REQUEST, "secrets_key_not_configured"));
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("--secrets-key") && message.contains("MCPGW_SECRETS_KEY"), "{message}");
    assert!(!message.contains(SECRET));
    let plain = app
        .create(json!({"name": "plain", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false}))
        .await;
    assert_eq!(plain.status, StatusCode::CREATED);
    assert_eq!(plain.body["upstream_auth"], json!({"type": "none"}));
    let id = plain.body["id"].as_str().expect("id");
    let instance = app
        .call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/instances"))).set_json(json!({
            "endpoint_url": "http://127.0.0.1:2/mcp",
            "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": SECRET}})))
        .await;
    assert_eq!(instance.code(), "secrets_key_not_configured");
    let doc = format!(
        "servers:\n- name: plain\n  endpoint_url: http://127.0.0.1:1/mcp\n  auto_discover: false\n  upstream_auth:\n    type: static_header\n    header: X\n    value: {SECRET}\n"
    );
    assert_eq!(import(&app, "", &doc).await.code(), "secrets_key_not_configured");
    assert!(!database_text(&app).await.contains("static_header"));
}

#[actix_web::test]
async fn export_marks_credentials_and_import_keeps_or_replaces_them() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "keyed", "endpoint_url": "http://127.0.0.1:1/mcp", "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": SECRET}}))
        .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let exported = export(&app).await;
    assert!(!exported.contains(SECRET), "{exported}");
    assert!(
        exported.contains("upstream_auth:\n    type: static_header\n    header: X-API-Key\n"),
        "{exported}"
    );

    // The export applied back: nothing changes, the stored secret stays.
    let version = app.table().await.0;
    let same = import(&app, "", &exported).await;
    assert_eq!(
        (same.body["unchanged"].clone(), same.body["updated"].clone()),
        (json!(1), json!(0)),
        "{}",
        same.body
    );
    assert_eq!(app.table().await.0, version);
    assert_eq!(server_cred(&app, &id), pair("X-API-Key", SECRET));

    // A value in the document is compared with the stored one (opened, never shown).
    let with = |value: &str| {
        exported.replace("header: X-API-Key\n", &format!("header: X-API-Key\n    value: {value}\n"))
    };
    let unchanged = import(&app, "", &with(SECRET)).await;
    assert_eq!(unchanged.body["unchanged"], 1, "the same value is no change: {}", unchanged.body);
    let dry = import(&app, "?dry_run=true", &with("rotated-s3cret")).await;
    assert_eq!(dry.body["updated"], 1, "{}", dry.body);
    assert_eq!(
        dry.body["changes"][0]["diff"],
        json!([{"field": "upstream_auth.value", "from": "(sealed)", "to": "(new value)"}])
    );
    assert!(!dry.body.to_string().contains("rotated-s3cret"));
    assert_eq!(server_cred(&app, &id), pair("X-API-Key", SECRET), "a dry run writes nothing");
    let applied = import(&app, "", &with("rotated-s3cret")).await;
    assert_eq!(applied.body["updated"], 1, "{}", applied.body);
    assert_eq!(server_cred(&app, &id), pair("X-API-Key", "rotated-s3cret"));

    // A server the control plane does not know cannot keep a value it never had.
    let fresh = format!(
        "{exported}- name: fresh\n  endpoint_url: http://127.0.0.1:2/mcp\n  auto_discover: false\n  upstream_auth:\n    type: static_header\n    header: X-API-Key\n"
    );
    let version = app.table().await.0;
    for query in ["?dry_run=true", ""] {
        let refused = import(&app, query, &fresh).await;
        assert_eq!(refused.code(), "invalid_upstream_auth", "{}", refused.body);
        let message = refused.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("servers[1] (\"fresh\")") && message.contains("value"), "{message}");
    }
    assert_eq!(app.table().await.0, version);
}

#[actix_web::test]
async fn discovery_and_health_checks_present_the_credential() {
    let app = TestApp::start().await;
    let auth = json!({"type": "static_header", "header": "X-API-Key", "value": SECRET});
    let mut ids = Vec::new();
    for modern in [false, true] {
        let fake = FakeMcp::start(modern, 3).await;
        fake.require_header("X-API-Key", SECRET);
        let era = if modern { "modern" } else { "legacy" };
        let guarded = app
            .create(
                json!({"name": format!("guarded-{era}"), "endpoint_url": fake.url, "auto_discover": false,
                "upstream_auth": auth}),
            )
            .await;
        let unguarded = app
            .create(
                json!({"name": format!("unguarded-{era}"), "endpoint_url": fake.url, "auto_discover": false}),
            )
            .await;
        let (g, u) = (guarded.body["id"].as_str().expect("id"), unguarded.body["id"].as_str().expect("id"));
        let ok = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{g}/refresh")))).await;
        assert_eq!(ok.status, StatusCode::OK, "{era}: {}", ok.body);
        assert_eq!(ok.body["tools"].as_array().map(Vec::len), Some(3), "{era}: every page, authenticated");
        let refused = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{u}/refresh")))).await;
        assert_eq!(refused.code(), "discovery_failed", "{era}: {}", refused.body);
        assert!(refused.body["message"].as_str().is_some_and(|m| m.contains("401")), "{}", refused.body);
        ids.push((
            guarded.body["instances"][0]["id"].as_str().expect("instance").to_owned(),
            unguarded.body["instances"][0]["id"].as_str().expect("instance").to_owned(),
            fake,
        ));
    }
    // An instance's own credential wins over a wrong one on its server.
    let fake = &ids[0].2;
    let wrong = json!({"type": "static_header", "header": "X-API-Key", "value": "wrong"});
    let overridden = app
        .create(json!({"name": "overridden", "auto_discover": false, "upstream_auth": wrong,
            "instances": [{"endpoint_url": fake.url, "upstream_auth": auth}]}))
        .await;
    let o = overridden.body["id"].as_str().expect("id");
    let ok = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{o}/refresh")))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);

    let checker = Checker {
        pool: app.pool.clone(),
        client: McpClient::new(Arc::new(SsrfPolicy::default())).expect("client"),
        defaults: HealthDefaults {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            concurrency: 4,
        },
        replica_id: "r1".into(),
        hub: app.hub.clone(),
    };
    let stop = CancellationToken::new();
    let checking = actix_web::rt::spawn({
        let stop = stop.clone();
        async move { checker.run(stop).await }
    });
    let status =
        |id: &str| match app.hub.current().get(ResourceKind::InstanceHealth, id).and_then(|r| r.kind.clone())
        {
            Some(Kind::InstanceHealth(h)) => Some(h.status),
            _ => None,
        };
    eventually("guarded instances healthy, unguarded ones unhealthy", async || {
        ids.iter().all(|(g, u, _)| {
            status(g) == Some(HealthStatus::Healthy as i32)
                && status(u) == Some(HealthStatus::Unhealthy as i32)
        })
    })
    .await;
    stop.cancel();
    let _ = checking.await;
    let health = app.call(get(&format!("/api/v1/servers/{o}/health"))).await;
    assert!(!health.body.to_string().contains(SECRET));
}
