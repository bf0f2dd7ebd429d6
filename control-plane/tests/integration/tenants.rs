//! Tenants on the reads that span servers (discovery, stats, export, users) and on import: a tenant
//! administrator sees and writes its own tenant only, a platform administrator every tenant (or one, with
//! `?tenant_id=`). And the tenant of a signed-in user: given by its IdP's rule, fixed at the first sign-in,
//! and the only tenant whose roles the user's IdP groups map onto.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use mcpgw_control_plane::db::store;
use mcpgw_control_plane::db::store::oauth::{IdentityProviderRow, UserLogin};
use mcpgw_control_plane::mcp::ServerHello;
use mcpgw_control_plane::mcp::lists::Capabilities;
use mcpgw_control_plane::oauth::idp::TenantRule;
use serde_json::{Value, json};

use crate::api_keys::create_key;
use crate::support::{Reply, TOKEN, TestApp, admin, bearer};

const TENANTS: [&str; 2] = ["acme", "globex"];

/// A server of `tenant` named `<tenant>-tools` offering the tool `search` and `file://<tenant>/readme`.
async fn server_with_capabilities(app: &TestApp, tenant: &str) {
    let name = format!("{tenant}-tools");
    let body = json!({"name": name, "endpoint_url": format!("http://127.0.0.1:3001/{tenant}"),
                      "auto_discover": false, "tenant_id": tenant});
    let created = app.create(body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().and_then(|id| id.parse().ok()).expect("id");
    let caps = Capabilities {
        tools: vec![json!({"name": "search", "inputSchema": {"type": "object"}})],
        resources: vec![json!({"uri": format!("file://{tenant}/readme"), "name": "readme"})],
        ..Default::default()
    };
    let hello = ServerHello { protocol_version: "2025-11-25".into(), ..Default::default() };
    let mut conn = app.pool.get().await.expect("connection");
    let saved = store::discovery::save_ok(&mut conn, id, &hello, &caps, 1).await.expect("store capabilities");
    assert!(matches!(saved, store::discovery::Saved::Changed(_)), "{saved:?}");
}

fn login(subject: &str, tenant: &str) -> UserLogin {
    UserLogin {
        issuer: "https://idp.example".into(),
        subject: subject.into(),
        email: Some(format!("{subject}@example.com")),
        name: None,
        tenant_id: tenant.into(),
        roles: vec![],
        groups: vec!["g1".into()],
        groups_overage: false,
        claims: json!({"sub": subject}),
    }
}

async fn tenant_admin(app: &TestApp, tenant: &str) -> String {
    let created =
        create_key(app, json!({"name": format!("{tenant} admin"), "role": "admin", "tenant_id": tenant}))
            .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["key"].as_str().expect("key").to_owned()
}

/// The server names of a discovery answer.
fn discovered(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let servers = reply.body["servers"].as_array().into_iter().flatten();
    servers.filter_map(|s| s["name"].as_str().map(str::to_owned)).collect()
}

/// The server names of an export.
fn exported(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let doc: Value = serde_yaml::from_str(reply.body.as_str().expect("YAML")).expect("a registry document");
    let servers = doc["servers"].as_array().into_iter().flatten();
    servers.filter_map(|s| s["name"].as_str().map(str::to_owned)).collect()
}

/// The tenants of a users list.
fn user_tenants(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let users = reply.body["items"].as_array().into_iter().flatten();
    users.filter_map(|u| u["tenant_id"].as_str().map(str::to_owned)).collect()
}

/// What `key` sees through discovery, stats (tenants counted), export and users (their tenants).
async fn views(app: &TestApp, key: &str, query: &str) -> [Vec<String>; 5] {
    let call = async |uri: &str| app.call(bearer(TestRequest::get().uri(uri), key)).await;
    let stats = call(&format!("/api/v1/admin/stats{query}")).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    let by_tenant = stats.body["servers_by_tenant"].as_object().expect("servers_by_tenant");
    let sep = if query.is_empty() { "?" } else { "&" };
    [
        discovered(&call(&format!("/api/v1/discovery/tools{query}{sep}tools=search")).await),
        discovered(&call(&format!("/api/v1/discovery/resources{query}{sep}resources=file://*")).await),
        by_tenant.keys().cloned().collect(),
        exported(&call(&format!("/api/v1/admin/export{query}")).await),
        user_tenants(&call(&format!("/api/v1/users{query}")).await),
    ]
}

#[actix_web::test]
async fn each_tenant_administrator_reads_its_own_tenant_and_the_platform_every_tenant() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    for tenant in TENANTS {
        store::oauth::record_login(&mut conn, &login(&format!("{tenant}-user"), tenant))
            .await
            .expect("record")
            .expect("a first sign-in");
    }
    drop(conn);
    for tenant in TENANTS {
        server_with_capabilities(&app, tenant).await;
    }
    for (tenant, other) in [("acme", "globex"), ("globex", "acme")] {
        let key = tenant_admin(&app, tenant).await;
        let call = async |uri: &str| app.call(bearer(TestRequest::get().uri(uri), &key)).await;
        let own = vec![format!("{tenant}-tools")];
        let expected = [own.clone(), own.clone(), vec![tenant.to_owned()], own, vec![tenant.to_owned()]];
        assert_eq!(views(&app, &key, "").await, expected, "{tenant}'s administrator");
        // Asking for another tenant does not widen what a tenant administrator sees.
        let asked = format!("?tenant_id={other}");
        assert_eq!(views(&app, &key, &asked).await, expected, "{tenant} asking for {other}");
        let stats = call("/api/v1/admin/stats").await.body;
        assert_eq!(stats["total_servers"], 1, "{stats}");
        for shared in ["routing_version", "health_checks", "proxies_connected"] {
            assert!(stats.get(shared).is_none(), "{shared} is shared by every tenant: {stats}");
        }
        // Platform routes stay closed to it.
        let proxies = call("/api/v1/proxies").await;
        assert_eq!((proxies.status, proxies.code()), (StatusCode::FORBIDDEN, "insufficient_permissions"));
    }

    let both = vec!["acme-tools".to_owned(), "globex-tools".to_owned()];
    let tenants = vec!["acme".to_owned(), "globex".to_owned()];
    let expected = [both.clone(), both.clone(), tenants.clone(), both, tenants];
    assert_eq!(views(&app, TOKEN, "").await, expected, "the platform administrator sees every tenant");
    let globex = vec!["globex-tools".to_owned()];
    let narrowed = [globex.clone(), globex.clone(), vec!["globex".into()], globex, vec!["globex".into()]];
    assert_eq!(views(&app, TOKEN, "?tenant_id=globex").await, narrowed, "?tenant_id= narrows");
    let stats = app.call(admin(TestRequest::get().uri("/api/v1/admin/stats"))).await.body;
    assert!(stats["routing_version"].is_i64() && stats["proxies_connected"].is_u64(), "{stats}");
}

/// POSTs `yaml` to the import with `key`.
async fn import(app: &TestApp, key: &str, query: &str, yaml: &str) -> Reply {
    let uri = format!("/api/v1/admin/import{query}");
    app.call(bearer(TestRequest::post().uri(&uri), key).set_payload(yaml.to_owned())).await
}

/// Every server's name and stored tenant, and the routing version.
async fn registry(app: &TestApp) -> (i64, Vec<(String, Option<String>)>) {
    let (version, servers) = app.table().await;
    let mut named: Vec<_> = servers.into_iter().map(|(s, _)| (s.name, s.tenant_id)).collect();
    named.sort();
    (version, named)
}

#[actix_web::test]
async fn a_tenant_administrators_import_stays_in_its_tenant() {
    let app = TestApp::start().await;
    for (name, tenant) in [("acme-one", "acme"), ("globex-one", "globex")] {
        let body = json!({"name": name, "endpoint_url": format!("http://127.0.0.1:3001/{name}"),
                          "auto_discover": false, "tenant_id": tenant});
        assert_eq!(app.create(body).await.status, StatusCode::CREATED);
    }
    let key = tenant_admin(&app, "acme").await;
    let before = registry(&app).await;

    let mine = "  - name: acme-two\n    endpoint_url: http://127.0.0.1:3001/two\n    auto_discover: false\n";
    let elsewhere = "  - name: globex-two\n    endpoint_url: http://127.0.0.1:3001/g2\n    auto_discover: false\n    tenant_id: globex\n";
    let taken =
        "  - name: globex-one\n    endpoint_url: http://127.0.0.1:3001/g1\n    auto_discover: false\n";
    for (doc, status, code, what) in [
        (
            format!("servers:\n{mine}{elsewhere}"),
            StatusCode::FORBIDDEN,
            "insufficient_permissions",
            "another tenant",
        ),
        (
            format!("servers:\n{mine}{taken}"),
            StatusCode::CONFLICT,
            "server_name_taken",
            "another tenant's server",
        ),
    ] {
        for query in ["", "?dry_run=true", "?prune=true"] {
            let reply = import(&app, &key, query, &doc).await;
            assert_eq!((reply.status, reply.code()), (status, code), "{what} {query}: {}", reply.body);
            assert!(
                reply.body["message"].as_str().is_some_and(|m| m.starts_with("servers[1]")),
                "{}",
                reply.body
            );
            assert_eq!(registry(&app).await, before, "{what} {query}: nothing is written");
        }
    }

    // Its own: created in its tenant; prune deletes its own unlisted servers, never another tenant's.
    let reply = import(&app, &key, "?prune=true", &format!("servers:\n{mine}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        (reply.body["created"].as_u64(), reply.body["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        reply.body
    );
    let (_, after) = registry(&app).await;
    assert_eq!(
        after,
        [
            ("acme-two".to_owned(), Some("acme".to_owned())),
            ("globex-one".to_owned(), Some("globex".to_owned()))
        ]
    );
    // Its export imports back as no change.
    let export = app.call(bearer(TestRequest::get().uri("/api/v1/admin/export"), &key)).await;
    let again = import(&app, &key, "?prune=true", export.body.as_str().expect("YAML")).await;
    assert_eq!(
        (again.body["unchanged"].as_u64(), again.body["changes"].clone()),
        (Some(1), json!([])),
        "{}",
        again.body
    );

    // The platform administrator may import into any tenant.
    let reply = import(&app, TOKEN, "", &format!("servers:\n{elsewhere}")).await;
    assert_eq!((reply.status, reply.body["created"].as_u64()), (StatusCode::OK, Some(1)), "{}", reply.body);
}

#[actix_web::test]
async fn a_users_tenant_comes_from_its_identity_provider_and_stays() {
    let app = TestApp::start().await;
    let mut conn = app.pool.get().await.expect("connection");
    // A registered IdP mapping the `org` claim onto tenants, with `globex` for tokens without one.
    let row = IdentityProviderRow {
        id: uuid::Uuid::new_v4(),
        name: "corp".into(),
        issuer: "https://idp.example".into(),
        client_id: "gateway".into(),
        client_secret: vec![1],
        scopes: "openid".into(),
        created_at: chrono::Utc::now(),
        tenant_id: Some("globex".into()),
        tenant_claim: Some("org".into()),
    };
    assert!(store::oauth::create_identity_provider(&mut conn, &row).await.expect("store"));
    let stored =
        store::oauth::identity_provider_named(&mut conn, "corp").await.expect("read").expect("stored");
    let rule = TenantRule::from(&stored);
    assert_eq!(rule, TenantRule { claim: Some("org".into()), tenant_id: Some("globex".into()) });
    assert!(store::oauth::identity_provider_named(&mut conn, "default").await.expect("read").is_none());

    let mut ann = login("ann", "");
    ann.tenant_id = rule.tenant(&json!({"sub": "ann", "org": "acme"})).expect("a tenant");
    let first = store::oauth::record_login(&mut conn, &ann).await.expect("record").expect("first sign-in");
    assert_eq!(first.tenant_id, "acme");
    // The same tenant again: recorded (what the IdP says now).
    ann.email = Some("ann@acme.example".into());
    let again = store::oauth::record_login(&mut conn, &ann).await.expect("record").expect("same tenant");
    assert_eq!((again.id, again.email.as_deref()), (first.id, Some("ann@acme.example")));
    // Another tenant later (the claim changed, or fell back on the IdP's tenant): refused, nothing written.
    ann.tenant_id = rule.tenant(&json!({"sub": "ann"})).expect("the fallback");
    ann.email = Some("ann@globex.example".into());
    let refused = store::oauth::record_login(&mut conn, &ann).await.expect("record");
    assert_eq!(refused.err().as_deref(), Some("acme"), "the user stays in acme");
    let user = store::oauth::user(&mut conn, first.id).await.expect("read").expect("user");
    assert_eq!((user.tenant_id.as_str(), user.email.as_deref()), ("acme", Some("ann@acme.example")));
    assert!(rule.tenant(&json!({"sub": "x", "org": "not a tenant"})).is_err(), "an invalid value refuses");
    drop(conn);

    // IdP groups map onto the roles of the user's tenant only.
    for (tenant, name, groups) in
        [("acme", "readers", ["g1"]), ("globex", "readers", ["g1"]), ("acme", "writers", ["g2"])]
    {
        let body =
            json!({"name": name, "tenant_id": tenant, "rules": [{"server": "*"}], "idp_groups": groups});
        let created = app.call(admin(TestRequest::post().uri("/api/v1/roles")).set_json(body)).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    let granted = async |tenant: &str, g: &[&str]| {
        let mut conn = app.pool.get().await.expect("connection");
        let groups: Vec<String> = g.iter().map(|s| (*s).to_owned()).collect();
        store::roles::granted(&mut conn, tenant, &groups).await.expect("roles")
    };
    assert_eq!(granted("acme", &["g1", "g2"]).await, ["readers", "writers"]);
    assert_eq!(granted("globex", &["g1", "g2"]).await, ["readers"], "globex has no writers");
    assert_eq!(granted("initech", &["g1"]).await, Vec::<String>::new());
    assert_eq!(granted("acme", &[]).await, Vec::<String>::new());
}

#[actix_web::test]
async fn identity_provider_tenant_settings_are_checked() {
    let app = TestApp::start().await;
    let base =
        json!({"name": "corp", "issuer": "https://idp.example", "client_id": "c", "client_secret": "s"});
    let with = |extra: Value| {
        let mut body = base.clone();
        body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        admin(TestRequest::post().uri("/api/v1/identity-providers")).set_json(body)
    };
    for (extra, code) in [
        (json!({"tenant_id": "a/b"}), "invalid_tenant"),
        (json!({"tenant_id": ""}), "invalid_tenant"),
        (json!({"tenant_claim": ""}), "invalid_identity_provider"),
        (json!({"tenant_claim": "x".repeat(101)}), "invalid_identity_provider"),
        (json!({"tenant_claim": "o\nrg"}), "invalid_identity_provider"),
        (json!({"tenant": "acme"}), "unknown_field"),
    ] {
        let reply = app.call(with(extra.clone())).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, code), "{extra}: {}", reply.body);
    }
    // Valid settings get as far as the authorization server, which this app does not run.
    let reply = app.call(with(json!({"tenant_id": "globex", "tenant_claim": "tid"}))).await;
    assert_eq!(reply.code(), "identity_provider_unavailable", "{}", reply.body);
}
