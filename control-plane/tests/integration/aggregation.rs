//! Aggregation on `/mcp`, the control plane's part: every discovered server's `Catalog` in the routing table
//! (its items as the server listed them, with the content digest), republished only when a rediscovery
//! finds something new; and the per-server `name_prefix` and `priority` settings, from REST through the
//! routing table, export and import.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use diesel_async::RunQueryDsl;
use mcpgw_control_plane::db::store;
use mcpgw_control_plane::model::CatalogContent;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{Catalog, NamePrefix, ResourceKind, RoutingUpdate, Server};
use serde_json::{Value, json};

use crate::fake_mcp::FakeMcp;
use crate::registry::{export, import};
use crate::support::{FakeProxy, TestApp, TestGrpc, WAIT, admin, get, hello};

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id").to_owned()
}

/// The `Catalog` of server `id` in the hub's published table.
fn catalog(app: &TestApp, id: &str) -> Option<Catalog> {
    match app.hub.current().get(ResourceKind::Catalog, id)?.kind.clone()? {
        Kind::Catalog(c) => Some(c),
        _ => None,
    }
}

/// The `Server` resource of `id` in the hub's published table.
fn server(app: &TestApp, id: &str) -> Server {
    match app.hub.current().get(ResourceKind::Server, id).and_then(|r| r.kind.clone()) {
        Some(Kind::Server(s)) => s,
        other => panic!("no Server resource for {id}: {other:?}"),
    }
}

/// The catalog of `id` an update carries.
fn catalog_in(update: &RoutingUpdate, id: &str) -> Option<Catalog> {
    update.upserts.iter().find_map(|r| match &r.kind {
        Some(Kind::Catalog(c)) if c.server_id == id => Some(c.clone()),
        _ => None,
    })
}

async fn routing_version(app: &TestApp) -> i64 {
    let mut conn = app.pool.get().await.expect("connection");
    store::routing_version(&mut conn).await.expect("version")
}

fn parsed(items: &[String]) -> Vec<Value> {
    items.iter().map(|s| serde_json::from_str(s).expect("each item is JSON")).collect()
}

/// What the legacy fake (`FakeMcp::start(false, n)`) declares and lists, as its digest covers it.
fn legacy_fake_digest(tools: &[Value], fake: &FakeMcp) -> Vec<u8> {
    let caps = json!({"tools": {"listChanged": true}, "resources": {}, "prompts": {}});
    let info = json!({"name": "fake-legacy", "version": "1"});
    CatalogContent {
        protocol_version: "2025-11-25",
        capabilities: Some(&caps),
        server_info: Some(&info),
        tools,
        prompts: &fake.state.prompts,
        resources: &fake.state.resources,
        resource_templates: &fake.state.templates,
    }
    .digest()
}

fn fake_tools(fake: &FakeMcp) -> Vec<Value> {
    fake.state.tools.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[actix_web::test]
async fn a_discovered_server_publishes_its_catalog_to_the_proxies() {
    let app = TestApp::start().await;
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-catalog")).await.expect("stream accepted");
    let first = proxy.next_within(WAIT).await;
    assert!(first.snapshot, "{first:?}");

    // Registered with auto_discover (the default): discovery runs in the background and publishes.
    let fake = FakeMcp::start(false, 3).await;
    let created = app.create(json!({"name": "docs", "endpoint_url": fake.url, "tags": ["kb"]})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = id_of(&created.body);
    let published = loop {
        let update = proxy.next_within(WAIT).await;
        if let Some(catalog) = catalog_in(&update, &id) {
            break catalog;
        }
    };
    assert_eq!(Some(&published), catalog(&app, &id).as_ref(), "the hub's table is what the proxy got");
    assert_eq!(published.protocol_version, "2025-11-25");
    let tools = fake_tools(&fake);
    assert_eq!(parsed(&published.tools), tools, "every tool, in listing order, as listed");
    assert_eq!(
        published.tools[0], r#"{"description":"tool 0","inputSchema":{"type":"object"},"name":"t0"}"#,
        "compact JSON"
    );
    assert_eq!(parsed(&published.prompts), fake.state.prompts);
    assert_eq!(parsed(&published.resources), fake.state.resources);
    assert_eq!(parsed(&published.resource_templates), fake.state.templates);
    let caps: Value = serde_json::from_str(&published.capabilities_json).expect("capabilities JSON");
    assert_eq!(caps["tools"]["listChanged"], true);
    let info: Value = serde_json::from_str(&published.server_info_json).expect("serverInfo JSON");
    assert_eq!(info["name"], "fake-legacy");
    assert_eq!(published.digest, legacy_fake_digest(&tools, &fake), "the digest of the canonical content");
    assert_eq!(published.digest.len(), 32, "SHA-256");

    // Never discovered successfully: no catalog.
    let down = app
        .create(json!({"name": "down", "endpoint_url": "http://127.0.0.1:9/mcp", "auto_discover": false}))
        .await;
    let down_id = id_of(&down.body);
    let failed =
        app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{down_id}/refresh")))).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.body);
    assert!(app.hub.current().get(ResourceKind::Server, &down_id).is_some());
    assert!(catalog(&app, &down_id).is_none(), "a server without a successful discovery has no Catalog");

    // A failed rediscovery keeps the catalog (the last known capabilities stay).
    fake.set_down(true);
    let kept = app.call(admin(TestRequest::post().uri(&format!("/api/v1/servers/{id}/refresh")))).await;
    assert_eq!(kept.status, StatusCode::BAD_GATEWAY, "{}", kept.body);
    assert_eq!(catalog(&app, &id), Some(published), "kept");

    // Deleting the server removes its catalog with it.
    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(catalog(&app, &id).is_none());
    let removal = loop {
        let update = proxy.next_within(WAIT).await;
        if !update.removals.is_empty() {
            break update;
        }
    };
    assert!(
        removal.removals.iter().any(|r| r.kind() == ResourceKind::Catalog && r.id == id),
        "{:?}",
        removal.removals
    );
}

#[actix_web::test]
async fn only_a_changed_rediscovery_moves_the_routing_version() {
    let app = TestApp::start().await;
    let fake = FakeMcp::start(false, 2).await;
    let created = app.create(json!({"name": "kb", "endpoint_url": fake.url, "auto_discover": false})).await;
    let id = id_of(&created.body);
    assert!(catalog(&app, &id).is_none(), "not discovered yet");
    let uri = format!("/api/v1/servers/{id}/refresh");

    let before = routing_version(&app).await;
    let first = app.call(admin(TestRequest::post().uri(&uri))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let discovered = routing_version(&app).await;
    assert_eq!(discovered, before + 1, "the first listing is a change");
    let one = catalog(&app, &id).expect("published by the refresh");
    assert_eq!(one.tools.len(), 2);
    assert_eq!(app.hub.current().version(), u64::try_from(discovered).expect("positive"));

    // The same lists again: the attempt is recorded, nothing else moves.
    let attempted = first.body["discovery"]["attempted_at"].clone();
    let again = app.call(admin(TestRequest::post().uri(&uri))).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_ne!(again.body["discovery"]["attempted_at"], attempted, "the attempt is recorded");
    assert_eq!(again.body["tools"].as_array().map(Vec::len), Some(2), "the stored lists stay");
    let found = app.state().discoverer.discover(id.parse().expect("uuid")).await.expect("discovered");
    assert!(!found.changed, "{found:?}");
    assert_eq!(routing_version(&app).await, discovered, "an unchanged rediscovery bumps nothing");
    assert_eq!(catalog(&app, &id), Some(one.clone()));

    // A new tool: the version moves and the catalog changes (through REST refresh)...
    fake.add_tool("added");
    let changed = app.call(admin(TestRequest::post().uri(&uri))).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(routing_version(&app).await, discovered + 1);
    let two = catalog(&app, &id).expect("still published");
    assert_ne!(two.digest, one.digest);
    assert_eq!(parsed(&two.tools), fake_tools(&fake));
    assert_eq!(two.digest, legacy_fake_digest(&fake_tools(&fake), &fake));

    // ...and through the discoverer (periodic, list_changed, after registration), which publishes itself.
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-rediscovery")).await.expect("stream accepted");
    let snapshot = proxy.next_within(WAIT).await;
    assert_eq!(catalog_in(&snapshot, &id), Some(two.clone()), "a snapshot carries the catalog");
    fake.add_tool("another");
    let found = app.state().discoverer.discover(id.parse().expect("uuid")).await.expect("discovered");
    assert!(found.changed && found.tools == 4, "{found:?}");
    assert_eq!(routing_version(&app).await, discovered + 2);
    let three = catalog(&app, &id).expect("published by discover");
    assert_eq!(three.tools.len(), 4);
    let delta = proxy.next_within(WAIT).await;
    assert!(!delta.snapshot);
    assert_eq!(catalog_in(&delta, &id), Some(three), "the delta carries the new catalog");
    assert!(
        delta.upserts.iter().all(|r| matches!(&r.kind, Some(Kind::Catalog(_)))),
        "only the catalog changed: {delta:?}"
    );

    // Another replica's hub reads every catalog from the database on its first refresh and agrees.
    let other = mcpgw_control_plane::hub::RoutingHub::new(app.pool.clone(), None);
    other.refresh().await.expect("refresh");
    let theirs = other.current().get(ResourceKind::Catalog, &id).cloned();
    assert_eq!(theirs, app.hub.current().get(ResourceKind::Catalog, &id).cloned());

    // The hub reads a catalog's items again only when its stored digest moved: items changed behind its
    // back under the same digest are not read (a health change does not reread every catalog)...
    let mut conn = app.pool.get().await.expect("connection");
    let sql = |q: String| diesel::sql_query(q);
    sql(format!(
        "UPDATE server_tools SET item = '{{\"name\": \"sneaky\"}}' WHERE server_id = '{id}' AND position = 0"
    ))
    .execute(&mut conn)
    .await
    .expect("update an item");
    sql("UPDATE routing_state SET version = version + 1".into()).execute(&mut conn).await.expect("bump");
    app.hub.refresh().await.expect("refresh");
    let cached = catalog(&app, &id).expect("published");
    assert_eq!(cached.tools[0], r#"{"description":"tool 0","inputSchema":{"type":"object"},"name":"t0"}"#);
    // ...and are once it does.
    sql(format!("UPDATE server_discovery SET catalog_digest = '\\x00' WHERE server_id = '{id}'"))
        .execute(&mut conn)
        .await
        .expect("update the digest");
    sql("UPDATE routing_state SET version = version + 1".into()).execute(&mut conn).await.expect("bump");
    drop(conn);
    app.hub.refresh().await.expect("refresh");
    let reread = catalog(&app, &id).expect("published");
    assert_eq!((reread.tools[0].as_str(), reread.digest.as_slice()), (r#"{"name":"sneaky"}"#, &[0u8][..]));
}

#[actix_web::test]
async fn name_prefix_and_priority_from_rest_to_the_routing_table() {
    let app = TestApp::start().await;
    let plain = app
        .create(json!({"name": "plain", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false}))
        .await;
    assert_eq!(
        (&plain.body["name_prefix"], &plain.body["priority"]),
        (&json!("always"), &json!(0)),
        "defaults"
    );
    let plain_server = server(&app, &id_of(&plain.body));
    assert_eq!((plain_server.name_prefix, plain_server.priority), (NamePrefix::Always as i32, 0));

    let base = json!({"name": "agg", "endpoint_url": "http://127.0.0.1:4002/mcp", "auto_discover": false,
                      "tags": ["search", "kb"], "name_prefix": "never", "priority": 5});
    let created = app.create(base.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!((&created.body["name_prefix"], &created.body["priority"]), (&json!("never"), &json!(5)));
    let id = id_of(&created.body);
    let uri = format!("/api/v1/servers/{id}");
    let got = app.call(get(&uri)).await;
    assert_eq!((&got.body["name_prefix"], &got.body["priority"]), (&json!("never"), &json!(5)));
    let published = server(&app, &id);
    assert_eq!(published.name_prefix, NamePrefix::Never as i32);
    assert_eq!(published.priority, 5);
    assert_eq!(published.tags, ["search", "kb"]);

    let patched = app
        .call(
            admin(TestRequest::patch().uri(&uri))
                .set_json(json!({"name_prefix": "on_conflict", "priority": -1000})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        (&patched.body["name_prefix"], &patched.body["priority"]),
        (&json!("on_conflict"), &json!(-1000))
    );
    let published = server(&app, &id);
    assert_eq!((published.name_prefix, published.priority), (NamePrefix::OnConflict as i32, -1000));
    let other = app.call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"priority": 1000}))).await;
    assert_eq!(
        (&other.body["name_prefix"], &other.body["priority"]),
        (&json!("on_conflict"), &json!(1000)),
        "a patch keeps the fields it does not name"
    );
    let reset = app
        .call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"name_prefix": null, "priority": null})))
        .await;
    assert_eq!(
        (&reset.body["name_prefix"], &reset.body["priority"]),
        (&json!("always"), &json!(0)),
        "null resets"
    );
    let put = app.call(admin(TestRequest::put().uri(&uri)).set_json(&base)).await;
    assert_eq!(
        (&put.body["name_prefix"], &put.body["priority"]),
        (&json!("never"), &json!(5)),
        "{}",
        put.body
    );

    for bad in [json!("NEVER"), json!(""), json!("sometimes"), json!("on-conflict")] {
        let mut body = base.clone();
        body["name_prefix"] = bad.clone();
        let put = app.call(admin(TestRequest::put().uri(&uri)).set_json(&body)).await;
        assert_eq!((put.status, put.code()), (StatusCode::BAD_REQUEST, "invalid_name_prefix"), "{bad}");
        body["name"] = json!("other");
        let post = app.create(body).await;
        assert_eq!((post.status, post.code()), (StatusCode::BAD_REQUEST, "invalid_name_prefix"), "{bad}");
    }
    for bad in [json!(1001), json!(-1001), json!(1.5), json!("5"), json!(1e12), json!(i64::MAX), json!(true)]
    {
        let mut body = base.clone();
        body["priority"] = bad.clone();
        let put = app.call(admin(TestRequest::put().uri(&uri)).set_json(&body)).await;
        assert_eq!(
            (put.status, put.code()),
            (StatusCode::BAD_REQUEST, "invalid_priority"),
            "{bad}: {}",
            put.body
        );
        let patch = app.call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"priority": bad}))).await;
        assert_eq!((patch.status, patch.code()), (StatusCode::BAD_REQUEST, "invalid_priority"), "{bad}");
        body["name"] = json!("other");
        let post = app.create(body).await;
        assert_eq!((post.status, post.code()), (StatusCode::BAD_REQUEST, "invalid_priority"), "{bad}");
    }
    let kept = app.call(get(&uri)).await;
    assert_eq!(
        (&kept.body["name_prefix"], &kept.body["priority"]),
        (&json!("never"), &json!(5)),
        "refused changes change nothing"
    );
    assert_eq!(app.call(get("/api/v1/servers?name=other")).await.body, json!([]), "nothing created");

    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    for schema in ["ServerRequest", "ServerView"] {
        let properties = &doc["components"]["schemas"][schema]["properties"];
        let prefix = &properties["name_prefix"]["description"];
        assert!(prefix.as_str().is_some_and(|d| d.contains("on_conflict")), "{schema}: {prefix}");
        assert!(
            properties["priority"]["description"].as_str().is_some_and(|d| d.contains("1000")),
            "{schema}"
        );
    }
    let request_priority = &doc["components"]["schemas"]["ServerRequest"]["properties"]["priority"];
    assert_eq!(
        (&request_priority["minimum"], &request_priority["maximum"]),
        (&json!(-1000), &json!(1000)),
        "{request_priority}"
    );
}

#[actix_web::test]
async fn name_prefix_and_priority_go_through_export_and_import() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "agg", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false,
                       "name_prefix": "never", "priority": 5}))
        .await;
    let id = id_of(&created.body);
    app.create(json!({"name": "plain", "endpoint_url": "http://127.0.0.1:4002/mcp", "auto_discover": false}))
        .await;

    let exported = export(&app).await;
    assert!(exported.contains("name_prefix: never") && exported.contains("priority: 5"), "{exported}");
    assert_eq!(exported.matches("name_prefix").count(), 1, "defaults are left out: {exported}");
    assert_eq!(exported.matches("priority").count(), 1, "defaults are left out: {exported}");
    assert_eq!(import(&app, "", &exported).await.body["unchanged"], 2, "the export imports as no change");

    let doc = exported
        .replace("name_prefix: never", "name_prefix: on_conflict")
        .replace("priority: 5", "priority: -3")
        + "- name: fresh\n  endpoint_url: http://127.0.0.1:4003/mcp\n  auto_discover: false\n  \
           name_prefix: never\n  priority: 7\n";
    let dry = import(&app, "?dry_run=true", &doc).await;
    let changes = dry.body["changes"].to_string();
    assert!(changes.contains("name_prefix") && changes.contains("priority"), "{}", dry.body);
    let applied = import(&app, "", &doc).await;
    assert_eq!(
        (&applied.body["created"], &applied.body["updated"]),
        (&json!(1), &json!(1)),
        "{}",
        applied.body
    );
    assert_eq!(import(&app, "", &doc).await.body["unchanged"], 3, "idempotent");
    let published = server(&app, &id);
    assert_eq!((published.name_prefix, published.priority), (NamePrefix::OnConflict as i32, -3));
    let fresh = app.call(get("/api/v1/servers?name=fresh")).await;
    assert_eq!(
        (&fresh.body[0]["name_prefix"], &fresh.body[0]["priority"]),
        (&json!("never"), &json!(7)),
        "{}",
        fresh.body
    );

    let bad = import(&app, "", "servers:\n- name: x\n  endpoint_url: http://h/\n  priority: 5000\n").await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "invalid_priority"), "{}", bad.body);
    let bad =
        import(&app, "", "servers:\n- name: x\n  endpoint_url: http://h/\n  name_prefix: sometimes\n").await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "invalid_name_prefix"), "{}", bad.body);
}
