//! Registry completeness: new fields, PATCH, list filters and pagination, stats, YAML import/export with
//! dry-run, and the OpenAPI document.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::{Value, json};

use crate::support::{TestApp, admin, get};

fn names(body: &Value) -> Vec<&str> {
    body.as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect()
}

#[actix_web::test]
async fn fields_patch_filters_and_pagination() {
    let app = TestApp::start().await;
    let created = app
        .create(json!({"name": "full", "endpoint_url": "http://127.0.0.1:1/mcp", "tenant_id": "acme", "version": "1.2.0",
            "capabilities": {"tools": {}}, "auto_discover": false, "tags": ["prod", "eu"],
            "health_check": {"interval": "2s", "unhealthy_threshold": 5}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["tenant_id"], "acme");
    assert_eq!(created.body["version"], "1.2.0");
    assert_eq!(created.body["capabilities"], json!({"tools": {}}));
    assert_eq!(created.body["health_check"], json!({"interval": "2s", "unhealthy_threshold": 5}));
    let id = created.body["id"].as_str().expect("id").to_owned();
    for (name, tenant, transport) in
        [("b", "acme", "sse"), ("c", "other", "streamable_http"), ("d", "acme", "streamable_http")]
    {
        let r = app.create(json!({"name": name, "endpoint_url": "http://127.0.0.1:1/mcp", "tenant_id": tenant, "transport_type": transport, "auto_discover": false})).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }

    let patched = app
        .call(
            admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"description": "patched", "version": null, "load_balancing": "random"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["description"], "patched");
    assert_eq!(patched.body["version"], Value::Null, "null resets");
    assert_eq!(patched.body["load_balancing"], "random");
    assert_eq!(patched.body["tenant_id"], "acme", "untouched fields stay");
    assert_eq!(patched.body["instances"][0]["id"], created.body["instances"][0]["id"], "instances kept");
    let bad = app
        .call(
            admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}"))).set_json(json!({"colour": 1})),
        )
        .await;
    assert_eq!(bad.code(), "unknown_field");
    let bad = app
        .call(
            admin(TestRequest::patch().uri(&format!("/api/v1/servers/{id}")))
                .set_json(json!({"name": "Bad"})),
        )
        .await;
    assert_eq!(bad.code(), "invalid_server_name");

    let acme = app.call(get("/api/v1/servers?tenant_id=acme")).await;
    assert_eq!(names(&acme.body), ["b", "d", "full"]);
    let sse = app.call(get("/api/v1/servers?transport_type=sse")).await;
    assert_eq!(names(&sse.body), ["b"]);
    let tagged = app.call(get("/api/v1/servers?tags=eu,prod")).await;
    assert_eq!(names(&tagged.body), ["full"]);
    let unknown = app.call(get("/api/v1/servers?health_status=unknown")).await;
    assert_eq!(names(&unknown.body).len(), 4);
    let healthy = app.call(get("/api/v1/servers?health_status=healthy")).await;
    assert_eq!(healthy.body, json!([]));
    let page = app.call(get("/api/v1/servers?limit=2&offset=1")).await;
    assert_eq!(names(&page.body), ["c", "d"]);
    assert_eq!(page.headers.get("x-total-count").and_then(|v| v.to_str().ok()), Some("4"));
    let link = page.headers.get("link").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(link.contains("offset=3") && link.contains("limit=2"), "{link}");
    for bad in
        ["limit=0", "limit=5000", "health_status=sick", "transport_type=grpc", "offset=-1", "color=red"]
    {
        let r = app.call(get(&format!("/api/v1/servers?{bad}"))).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "invalid_query"), "{bad}");
    }

    let stats = app.call(get("/api/v1/admin/stats")).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.body["total_servers"], 4);
    assert_eq!(stats.body["servers_by_status"]["unknown"], 4);
    assert_eq!(stats.body["servers_by_transport"], json!({"sse": 1, "streamable_http": 3}));
    assert_eq!(stats.body["servers_by_tenant"], json!({"acme": 3, "other": 1}));
    assert_eq!(stats.body["health_checks"]["leader"], false);
}

const DOC: &str = "servers:
- name: alpha
  instances:
  - endpoint_url: http://127.0.0.1:4101/mcp
    weight: 3
    metadata:
      zone: a
  - endpoint_url: http://127.0.0.1:4102/mcp
  transport_type: streamable_http
  tags:
  - prod
  load_balancing: weighted
  circuit_breaker:
    consecutive_failures: 5
    window: 10s
  tenant_id: acme
  auto_discover: false
  health_check:
    interval: 500ms
- name: beta
  instances:
  - endpoint_url: http://127.0.0.1:4103/sse
  transport_type: sse
  auto_discover: false
";

pub async fn import(app: &TestApp, query: &str, body: &str) -> crate::support::Reply {
    app.call(
        admin(TestRequest::post().uri(&format!("/api/v1/admin/import{query}")))
            .insert_header(("Content-Type", "application/yaml"))
            .set_payload(body.to_owned()),
    )
    .await
}

pub async fn export(app: &TestApp) -> String {
    let req = get("/api/v1/admin/export").to_request();
    let state = app.state();
    let svc = actix_web::test::init_service(
        actix_web::App::new().configure(move |cfg| mcpgw_control_plane::api::routes(cfg, state)),
    )
    .await;
    let resp = actix_web::test::call_service(&svc, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    String::from_utf8(actix_web::test::read_body(resp).await.to_vec()).expect("utf-8")
}

#[actix_web::test]
async fn yaml_import_export_round_trip_and_dry_run() {
    let app = TestApp::start().await;
    let before = app.table().await;
    let dry = import(&app, "?dry_run=true", DOC).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.body);
    assert_eq!((dry.body["created"].clone(), dry.body["dry_run"].clone()), (json!(2), json!(true)));
    assert_eq!(app.table().await, before, "a dry run writes nothing");

    let applied = import(&app, "", DOC).await;
    assert_eq!(applied.body["created"], 2, "{}", applied.body);
    assert_eq!(export(&app).await, DOC, "export gives back exactly what was imported");
    let again = import(&app, "", DOC).await;
    assert_eq!(
        (again.body["created"].clone(), again.body["updated"].clone(), again.body["unchanged"].clone()),
        (json!(0), json!(0), json!(2)),
        "idempotent"
    );
    let version = app.table().await.0;

    let changed = DOC.replace("weight: 3", "weight: 4");
    let diff =
        import(&app, "?dry_run=true&prune=true", &changed.replace("- name: beta", "- name: gamma")).await;
    assert_eq!(
        (diff.body["created"].clone(), diff.body["updated"].clone(), diff.body["deleted"].clone()),
        (json!(1), json!(1), json!(1)),
        "{}",
        diff.body
    );
    let update = diff.body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["action"] == "update")
        .cloned()
        .expect("an update");
    assert_eq!(update["diff"][0]["field"], "instances");
    assert_eq!(app.table().await.0, version, "dry run");

    for (bad, code) in [
        ("servers: [", "invalid_import"),
        ("servers:\n- name: a\n  colour: red\n", "invalid_import"),
        (
            "servers:\n- name: a\n  endpoint_url: http://h/\n- name: a\n  endpoint_url: http://h/\n",
            "invalid_import",
        ),
        ("servers:\n- name: Bad\n  endpoint_url: http://h/\n", "invalid_server_name"),
        ("servers:\n- name: meta\n  endpoint_url: http://169.254.169.254/\n", "endpoint_url_not_allowed"),
    ] {
        let r = import(&app, "", bad).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, code), "{bad}: {}", r.body);
    }
    assert_eq!(app.table().await.0, version, "refused imports write nothing");
}

#[actix_web::test]
async fn openapi_document_and_docs_page() {
    let app = TestApp::start().await;
    let doc = app.call(TestRequest::get().uri("/api/v1/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    for path in [
        "/api/v1/servers",
        "/api/v1/servers/{id}",
        "/api/v1/servers/{id}/instances",
        "/api/v1/admin/import",
        "/api/v1/discovery/tools",
        "/api/v1/trusted-issuers",
        "/api/v1/trusted-issuers/{id}",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc.body["components"]["schemas"]["ServerRequest"]["properties"]["instances"].is_object());
    assert!(doc.body["components"]["schemas"]["ServerRequest"]["properties"]["upstream_auth"].is_object());
    let auth = &doc.body["components"]["schemas"]["UpstreamAuthRequest"]["properties"];
    assert_eq!(auth["value"]["writeOnly"], true, "{auth}");
    assert!(doc.body["components"]["schemas"]["TrustedIssuerRequest"]["properties"]["jwks_uri"].is_object());
    let post = &doc.body["paths"]["/api/v1/trusted-issuers"]["post"];
    assert!(post["security"].is_array() && post["responses"]["502"].is_object(), "{post}");
    assert!(doc.body["components"]["securitySchemes"]["admin_token"].is_object());
}

/// An import is held to `--api-body-limit` like every other body (actix's own 256 KiB default used to cap
/// it below the limit), and a document whose aliases would expand it many times over is refused.
#[actix_web::test]
async fn imports_are_bounded_by_the_body_limit_and_not_by_alias_expansion() {
    let app = TestApp::start().await;
    // 300 KiB of servers: under the 1 MiB limit.
    let one = |i: usize| {
        format!(
            "- name: bulk-{i}\n  endpoint_url: http://127.0.0.1:{}/mcp\n  auto_discover: false\n  description: {}\n",
            10_000 + i,
            "d".repeat(240)
        )
    };
    let big: String = std::iter::once("servers:\n".to_owned()).chain((0..1000).map(one)).collect();
    assert!(big.len() > 300 * 1024 && big.len() < 1_048_576, "{}", big.len());
    let reply = import(&app, "?dry_run=true", &big).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let over = format!("{big}{}", "#".repeat(1_048_576));
    let reply = import(&app, "?dry_run=true", &over).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.body);
    assert_eq!(reply.body["code"], "payload_too_large", "{}", reply.body);

    // Nine levels of nine aliases: a few hundred bytes standing for 9^9 strings.
    let mut laughs =
        String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for level in 1..9u8 {
        let (name, prev) = ((b'a' + level) as char, (b'a' + level - 1) as char);
        let refs = vec![format!("*{prev}"); 9].join(",");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    laughs.push_str("servers: []\n");
    let reply = import(&app, "?dry_run=true", &laughs).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.body["code"], "invalid_import", "{}", reply.body);
}
