//! Admin changes through `/api/v1` leave audit records: a change and its record commit together (before and
//! after as the API shows them, never a secret), a refused change leaves its refusal, every request carries
//! an `X-Request-Id`. And the per-server `audit_arguments` setting, from REST to the routing table.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use diesel::QueryableByName;
use diesel::sql_types::Jsonb;
use diesel_async::RunQueryDsl;
use mcpgw_control_plane::api::audited::unaudited_changes;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{AuditArguments, ResourceKind};
use serde_json::{Value, json};

use crate::api_keys::create_key;
use crate::fake_idp::FakeIdp;
use crate::fake_mcp::FakeMcp;
use crate::registry::{export, import};
use crate::support::{FakeProxy, Reply, TestApp, TestGrpc, admin, bearer, get, hello};

const SECRET: &str = "upstream-s3cret-never-recorded";

#[derive(QueryableByName)]
struct Record {
    #[diesel(sql_type = Jsonb)]
    record: Value,
}

/// Every admin record, oldest first.
async fn records(app: &TestApp) -> Vec<Value> {
    let mut conn = app.pool.get().await.expect("connection");
    let rows: Vec<Record> = diesel::sql_query(
        "SELECT to_jsonb(a) AS record FROM audit_log a WHERE kind = 'admin' ORDER BY time, id",
    )
    .load(&mut conn)
    .await
    .expect("read the audit log");
    rows.into_iter().map(|r| r.record).collect()
}

async fn execute(app: &TestApp, sql: &str) {
    let mut conn = app.pool.get().await.expect("connection");
    diesel::sql_query(sql).execute(&mut conn).await.expect(sql);
}

/// A key of `role` in tenant `acme`: its id and secret.
async fn key(app: &TestApp, role: &str) -> (String, String) {
    let created = create_key(app, json!({"name": role, "role": role, "tenant_id": "acme"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let field = |f: &str| created.body[f].as_str().expect(f).to_owned();
    (field("id"), field("key"))
}

fn with_id(req: TestRequest, request_id: &str) -> TestRequest {
    req.insert_header(("X-Request-Id", request_id))
}

fn echoed(reply: &Reply) -> &str {
    reply.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("<none>")
}

#[actix_web::test]
async fn server_changes_by_an_admin_key_are_recorded_with_before_and_after() {
    let app = TestApp::start().await;
    let (key_id, secret) = key(&app, "admin").await;
    let send = async |req: TestRequest, request_id: &str| {
        let reply = app.call(with_id(bearer(req, &secret), request_id)).await;
        assert_eq!(echoed(&reply), request_id, "the request id is echoed");
        reply
    };
    let body = json!({"name": "audited", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false,
        "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": SECRET}});
    let created = send(TestRequest::post().uri("/api/v1/servers").set_json(&body), "req-create").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let uri = format!("/api/v1/servers/{id}");
    let mut changed = body.clone();
    changed["description"] = json!("now described");
    let updated = send(TestRequest::put().uri(&uri).set_json(&changed), "req-update").await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let deleted = send(TestRequest::delete().uri(&uri), "req-delete").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);

    let all = records(&app).await;
    let principal = format!("api-key:{key_id}");
    let mine: Vec<&Value> = all.iter().filter(|r| r["principal"] == principal.as_str()).collect();
    let summary: Vec<(&str, &str, &str, i64)> = mine
        .iter()
        .map(|r| {
            let text = |f: &str| r[f].as_str().unwrap_or("<null>");
            (text("method"), text("request_id"), text("outcome"), r["status"].as_i64().unwrap_or(0))
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("POST /api/v1/servers", "req-create", "ok", 201),
            ("PUT /api/v1/servers/{id}", "req-update", "ok", 200),
            ("DELETE /api/v1/servers/{id}", "req-delete", "ok", 204),
        ]
    );
    for record in &mine {
        assert_eq!(record["target"], format!("server:{id}"));
        assert_eq!(record["tenant_id"], "acme", "the key's and the server's tenant");
        let record_id: uuid::Uuid = record["id"].as_str().and_then(|i| i.parse().ok()).expect("a uuid");
        assert_eq!(record_id.get_version_num(), 7, "UUIDv7");
    }
    let (create, update, delete) = (mine[0], mine[1], mine[2]);
    assert_eq!(create["before"], Value::Null);
    assert_eq!(create["after"]["name"], "audited");
    assert_eq!(create["after"]["upstream_auth"], json!({"type": "static_header", "header": "X-API-Key"}));
    assert_eq!(create["after"]["owner"], principal.as_str());
    assert_eq!(
        (&update["before"]["description"], &update["after"]["description"]),
        (&Value::Null, &json!("now described"))
    );
    assert_eq!((&delete["before"]["description"], &delete["after"]), (&json!("now described"), &Value::Null));
    let text = serde_json::to_string(&all).expect("JSON");
    assert!(!text.contains(SECRET), "a secret in the audit log: {text}");

    // Reads are not recorded, but carry a request id too: a new UUIDv7 when the client sent none, or one
    // that is not 1-128 visible characters.
    let read = app.call(get("/api/v1/servers")).await;
    assert_eq!(echoed(&read).parse::<uuid::Uuid>().map(|u| u.get_version_num()).ok(), Some(7));
    let long = app.call(with_id(get("/api/v1/servers"), &"x".repeat(129))).await;
    assert_ne!(echoed(&long), "x".repeat(129));
    assert_eq!(records(&app).await.len(), all.len(), "reads leave no record");
}

#[actix_web::test]
async fn refused_changes_are_recorded_with_their_code_and_change_nothing() {
    let app = TestApp::start().await;
    let (user_id, user) = key(&app, "user").await;
    let body =
        json!({"name": "refused", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false});
    let forbidden = app
        .call(with_id(bearer(TestRequest::post().uri("/api/v1/servers"), &user), "req-403").set_json(&body))
        .await;
    assert_eq!((forbidden.status, forbidden.code()), (StatusCode::FORBIDDEN, "insufficient_permissions"));
    let mut bad = body.clone();
    bad["name"] = json!("Not A Name");
    let invalid =
        app.call(with_id(admin(TestRequest::post().uri("/api/v1/servers")), "req-400").set_json(&bad)).await;
    assert_eq!((invalid.status, invalid.code()), (StatusCode::BAD_REQUEST, "invalid_server_name"));
    let anonymous =
        app.call(with_id(TestRequest::post().uri("/api/v1/servers"), "req-401").set_json(&body)).await;
    assert_eq!((anonymous.status, anonymous.code()), (StatusCode::UNAUTHORIZED, "missing_authorization"));
    assert!(app.table().await.1.is_empty(), "nothing registered");

    let fields =
        ["request_id", "principal", "tenant_id", "method", "outcome", "status", "target", "before", "after"];
    let refusals: Vec<Value> = records(&app)
        .await
        .into_iter()
        .filter(|r| r["outcome"] != "ok")
        .map(|r| Value::Object(fields.iter().map(|f| ((*f).to_owned(), r[*f].clone())).collect()))
        .collect();
    let refusal = |request_id: &str, principal: &str, tenant: &str, outcome: &str, status: u16| {
        json!({"request_id": request_id, "principal": principal, "tenant_id": tenant,
            "method": "POST /api/v1/servers", "outcome": outcome, "status": status,
            "target": null, "before": null, "after": null})
    };
    assert_eq!(
        refusals,
        [
            refusal("req-403", &format!("api-key:{user_id}"), "acme", "insufficient_permissions", 403),
            refusal("req-400", "admin-token", "default", "invalid_server_name", 400),
            refusal("req-401", "", "default", "missing_authorization", 401),
        ]
    );
}

#[actix_web::test]
async fn a_change_whose_record_fails_is_not_made() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "kept", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    // From now on the records of these two changes are refused by the database, after the change itself
    // was written in the same transaction.
    execute(&app, "DELETE FROM audit_log").await;
    execute(
        &app,
        "ALTER TABLE audit_log ADD CONSTRAINT no_such_changes CHECK (outcome <> 'ok' OR method NOT IN \
         ('POST /api/v1/servers', 'DELETE /api/v1/servers/{id}'))",
    )
    .await;
    let version = app.table().await.0;

    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!((deleted.status, deleted.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    let second = app
        .create(json!({"name": "never", "endpoint_url": "http://127.0.0.1:4002/mcp", "auto_discover": false}))
        .await;
    assert_eq!((second.status, second.code()), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
    let (after, servers) = app.table().await;
    let names: Vec<&str> = servers.iter().map(|(s, _)| s.name.as_str()).collect();
    assert_eq!((after, names), (version, vec!["kept"]), "neither change is visible");
    let failed: Vec<(String, String)> = records(&app)
        .await
        .iter()
        .filter(|r| r["outcome"] != "ok")
        .map(|r| {
            (
                r["method"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [
            ("DELETE /api/v1/servers/{id}".to_owned(), "internal".to_owned()),
            ("POST /api/v1/servers".to_owned(), "internal".to_owned())
        ],
        "each failure is recorded after its answer"
    );

    // A day partition dropped under the running process is created again by the next record.
    execute(&app, "ALTER TABLE audit_log DROP CONSTRAINT no_such_changes").await;
    let today = chrono::Utc::now().format("%Y%m%d");
    execute(&app, &format!("DROP TABLE audit_log_{today}")).await;
    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let last = records(&app).await.pop().expect("a record");
    assert_eq!((&last["method"], &last["outcome"]), (&json!("DELETE /api/v1/servers/{id}"), &json!("ok")));
}

/// Sends `req` as the admin, expecting a 2xx answer; its body.
async fn ok(app: &TestApp, req: TestRequest) -> Value {
    let reply = app.call(admin(req)).await;
    assert!(reply.status.is_success(), "{}: {}", reply.status, reply.body);
    reply.body
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id").to_owned()
}

#[actix_web::test]
async fn every_mutating_route_records_its_change_in_its_transaction() {
    let app = TestApp::start().await.with_authorization_server();
    let mcp = FakeMcp::start(true, 2).await;
    let idp = FakeIdp::start().await;
    let post = |uri: &str, body: Value| TestRequest::post().uri(uri).set_json(body);
    let patch = |uri: &str, body: Value| TestRequest::patch().uri(uri).set_json(body);
    let delete = |uri: &str| TestRequest::delete().uri(uri);

    let server = id_of(
        &ok(
            &app,
            post("/api/v1/servers", json!({"name": "all", "endpoint_url": mcp.url, "auto_discover": false})),
        )
        .await,
    );
    let uri = format!("/api/v1/servers/{server}");
    ok(
        &app,
        TestRequest::put()
            .uri(&uri)
            .set_json(json!({"name": "all", "endpoint_url": mcp.url, "auto_discover": false, "tags": ["t"]})),
    )
    .await;
    ok(&app, patch(&uri, json!({"description": "patched"}))).await;
    let refreshed = ok(&app, TestRequest::post().uri(&format!("{uri}/refresh"))).await;
    assert_eq!(refreshed["tools"].as_array().map(Vec::len), Some(2));
    let instance = id_of(
        &ok(&app, post(&format!("{uri}/instances"), json!({"endpoint_url": "http://127.0.0.1:4009/mcp"})))
            .await,
    );
    ok(&app, delete(&format!("{uri}/instances/{instance}"))).await;
    let doc =
        "servers:\n- name: imported\n  endpoint_url: http://127.0.0.1:4010/mcp\n  auto_discover: false\n";
    assert_eq!(import(&app, "?dry_run=true", doc).await.status, StatusCode::OK, "a dry run changes nothing");
    let imported = import(&app, "", doc).await;
    assert_eq!(imported.body["created"], 1, "{}", imported.body);
    let api_key = id_of(&ok(&app, post("/api/v1/api-keys", json!({"name": "k"}))).await);
    ok(&app, delete(&format!("/api/v1/api-keys/{api_key}"))).await;
    let issuer = id_of(&ok(&app, post("/api/v1/trusted-issuers", json!({"issuer": idp.issuer}))).await);
    ok(&app, patch(&format!("/api/v1/trusted-issuers/{issuer}"), json!({"audiences": ["api://x"]}))).await;
    ok(&app, delete(&format!("/api/v1/trusted-issuers/{issuer}"))).await;
    let provider = id_of(
        &ok(
            &app,
            post(
                "/api/v1/identity-providers",
                json!({"name": "corp", "issuer": idp.issuer, "client_id": "c", "client_secret": SECRET}),
            ),
        )
        .await,
    );
    ok(&app, delete(&format!("/api/v1/identity-providers/{provider}"))).await;
    let role =
        id_of(&ok(&app, post("/api/v1/roles", json!({"name": "reader", "rules": [{"server": "*"}]}))).await);
    ok(&app, delete(&format!("/api/v1/roles/{role}"))).await;
    let limit = id_of(
        &ok(&app, post("/api/v1/rate-limits", json!({"scope": "tenant", "requests": 5, "per": "1s"}))).await,
    );
    ok(&app, delete(&format!("/api/v1/rate-limits/{limit}"))).await;
    ok(&app, delete(&uri)).await;

    let all = records(&app).await;
    assert!(
        all.iter().all(|r| r["outcome"] == "ok" && r["target"].is_string()),
        "written by `audited`: {all:#?}"
    );
    let recorded: BTreeSet<&str> = all.iter().filter_map(|r| r["method"].as_str()).collect();
    // Every mutating route the OpenAPI document lists was driven, and recorded its change.
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["post", "put", "patch", "delete"] {
            if path.starts_with("/api/v1/") && item.get(method).is_some() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert_eq!(recorded, documented.iter().map(String::as_str).collect::<BTreeSet<_>>());
    assert_eq!(all.len(), 19, "one record per change; none for the dry run");
    let import = all.iter().find(|r| r["method"] == "POST /api/v1/admin/import").expect("the import");
    assert_eq!((&import["after"]["created"], &import["target"]), (&json!(1), &json!("registry:*")));
    let refresh =
        all.iter().find(|r| r["method"] == "POST /api/v1/servers/{id}/refresh").expect("the refresh");
    assert_eq!(refresh["before"]["discovery"], Value::Null);
    assert_eq!(refresh["after"]["discovery"]["status"], "ok", "{refresh}");
    assert!(
        !serde_json::to_string(&all).expect("JSON").contains(SECRET),
        "an IdP client secret in the audit log"
    );
    assert_eq!(unaudited_changes(), 0, "a change was answered without its record (see the error log)");
}

#[actix_web::test]
async fn audit_arguments_from_rest_to_the_routing_table_and_through_export() {
    let app = TestApp::start().await;
    let base = json!({"name": "args", "endpoint_url": "http://127.0.0.1:4001/mcp", "auto_discover": false});
    let created = app.create(base.clone()).await;
    assert_eq!(created.body["audit_arguments"], "none", "the default");
    let id = id_of(&created.body);
    let uri = format!("/api/v1/servers/{id}");
    let patched = app
        .call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"audit_arguments": "redacted"})))
        .await;
    assert_eq!(patched.body["audit_arguments"], "redacted", "{}", patched.body);
    assert_eq!(app.call(get(&uri)).await.body["audit_arguments"], "redacted");
    for bad in [json!("full"), json!("REDACTED"), json!("")] {
        let mut body = base.clone();
        body["audit_arguments"] = bad.clone();
        let put = app.call(admin(TestRequest::put().uri(&uri)).set_json(&body)).await;
        assert_eq!((put.status, put.code()), (StatusCode::BAD_REQUEST, "invalid_audit_arguments"), "{bad}");
        body["name"] = json!("other");
        let post = app.create(body).await;
        assert_eq!((post.status, post.code()), (StatusCode::BAD_REQUEST, "invalid_audit_arguments"), "{bad}");
    }
    let number =
        app.call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"audit_arguments": 1}))).await;
    assert_eq!(number.status, StatusCode::BAD_REQUEST, "{}", number.body);
    assert_eq!(
        app.call(get(&uri)).await.body["audit_arguments"],
        "redacted",
        "refused changes change nothing"
    );

    // The routing stream carries it.
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-audit")).await.expect("stream accepted");
    let snapshot = proxy.next_within(crate::support::WAIT).await;
    let setting = snapshot.upserts.iter().find_map(|r| match &r.kind {
        Some(Kind::Server(s)) if s.id == id => Some(s.audit_arguments),
        _ => None,
    });
    assert_eq!(setting, Some(AuditArguments::Redacted as i32));
    let hashed =
        app.call(admin(TestRequest::patch().uri(&uri)).set_json(json!({"audit_arguments": "hashed"}))).await;
    assert_eq!(hashed.status, StatusCode::OK, "{}", hashed.body);
    let delta = proxy.next_within(crate::support::WAIT).await;
    let setting = delta.upserts.iter().find_map(|r| match &r.kind {
        Some(Kind::Server(s)) if s.id == id => Some(s.audit_arguments),
        _ => None,
    });
    assert_eq!(setting, Some(AuditArguments::Hashed as i32));

    // Export writes it (and leaves the default out); import applies it and is idempotent.
    let exported = export(&app).await;
    assert!(exported.contains("audit_arguments: hashed"), "{exported}");
    let doc = exported.replace("audit_arguments: hashed", "audit_arguments: redacted")
        + "- name: fresh\n  endpoint_url: http://127.0.0.1:4002/mcp\n  auto_discover: false\n  \
           audit_arguments: hashed\n";
    let applied = import(&app, "", &doc).await;
    assert_eq!(
        (&applied.body["created"], &applied.body["updated"]),
        (&json!(1), &json!(1)),
        "{}",
        applied.body
    );
    assert_eq!(import(&app, "", &doc).await.body["unchanged"], 2, "idempotent");
    let table = app.hub.current();
    let Some(Kind::Server(server)) = table.get(ResourceKind::Server, &id).and_then(|r| r.kind.clone()) else {
        panic!("no Server resource")
    };
    assert_eq!(server.audit_arguments, AuditArguments::Redacted as i32);
    let listed = app.call(get("/api/v1/servers?name=fresh")).await;
    assert_eq!(listed.body[0]["audit_arguments"], "hashed", "{}", listed.body);
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await.body;
    for schema in ["ServerRequest", "ServerView"] {
        let field = &doc["components"]["schemas"][schema]["properties"]["audit_arguments"];
        assert!(field["description"].as_str().is_some_and(|d| d.contains("redacted")), "{schema}: {field}");
    }
    let bad =
        import(&app, "", "servers:\n- name: x\n  endpoint_url: http://h/\n  audit_arguments: all\n").await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "invalid_audit_arguments"));
}
