//! Every refused request gets its documented status and error code, and leaves the registry untouched.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::json;

use crate::support::{TOKEN, TestApp, admin, get};

const OK_URL: &str = "http://127.0.0.1:3001/mcp";

fn json_post(body: &str) -> TestRequest {
    admin(TestRequest::post().uri("/api/v1/servers"))
        .insert_header(("Content-Type", "application/json"))
        .set_payload(body.to_owned())
}

fn post(value: serde_json::Value) -> TestRequest {
    admin(TestRequest::post().uri("/api/v1/servers")).set_json(value)
}

fn named(name: &str) -> TestRequest {
    post(json!({"name": name, "endpoint_url": OK_URL}))
}

fn at(url: &str) -> TestRequest {
    post(json!({"name": "ok", "endpoint_url": url}))
}

#[actix_web::test]
async fn bad_inputs_are_refused_and_nothing_is_written() {
    let app = TestApp::start().await;
    let existing = app.create(json!({"name": "existing", "endpoint_url": OK_URL})).await;
    let id = existing.body["id"].as_str().expect("id").to_owned();
    let put_uri = format!("/api/v1/servers/{id}");
    let oversized = format!(
        r#"{{"name": "big", "endpoint_url": "{OK_URL}", "description": "{}"}}"#,
        "x".repeat(1_100_000)
    );

    let cases: Vec<(&str, TestRequest, u16, &str)> = vec![
        ("malformed JSON", json_post(r#"{"name": "#), 400, "malformed_json"),
        ("empty body", json_post(""), 400, "malformed_json"),
        ("wrong JSON type", json_post(r#"{"name": 7, "endpoint_url": "http://h/"}"#), 400, "malformed_json"),
        (
            "unknown field",
            post(json!({"name": "a", "endpoint_url": OK_URL, "colour": 3})),
            400,
            "unknown_field",
        ),
        ("missing field", post(json!({"name": "a"})), 400, "missing_field"),
        (
            "endpoint_url and instances",
            post(json!({"name": "a", "endpoint_url": OK_URL, "instances": [{"endpoint_url": OK_URL}]})),
            400,
            "conflicting_fields",
        ),
        (
            "an endpoint listed twice",
            post(json!({"name": "a", "instances": [{"endpoint_url": OK_URL}, {"endpoint_url": OK_URL}]})),
            400,
            "invalid_instances",
        ),
        (
            "unknown policy",
            post(json!({"name": "a", "endpoint_url": OK_URL, "load_balancing": "fastest"})),
            400,
            "invalid_load_balancing",
        ),
        ("uppercase name", named("Upper"), 400, "invalid_server_name"),
        ("too long name", named(&"a".repeat(64)), 400, "invalid_server_name"),
        ("leading dash", named("-lead"), 400, "invalid_server_name"),
        ("reserved name", named("gateway"), 400, "invalid_server_name"),
        ("reserved transport path", named("sse"), 400, "invalid_server_name"),
        ("empty name", named(""), 400, "invalid_server_name"),
        ("relative URL", at("/mcp"), 400, "invalid_endpoint_url"),
        ("ftp URL", at("ftp://host/mcp"), 400, "invalid_endpoint_url"),
        ("URL without host", at("http://"), 400, "invalid_endpoint_url"),
        (
            "unknown transport",
            post(json!({"name": "a", "endpoint_url": OK_URL, "transport_type": "grpc"})),
            400,
            "invalid_transport_type",
        ),
        (
            "missing token",
            TestRequest::post().uri("/api/v1/servers").set_json(json!({"name": "a", "endpoint_url": OK_URL})),
            401,
            "missing_authorization",
        ),
        (
            "wrong token",
            TestRequest::post()
                .uri("/api/v1/servers")
                .insert_header(("Authorization", format!("Bearer {TOKEN}x")))
                .set_json(json!({"name": "a", "endpoint_url": OK_URL})),
            401,
            "invalid_admin_token",
        ),
        ("oversized body", json_post(&oversized), 413, "payload_too_large"),
        (
            "wrong content type",
            admin(TestRequest::post().uri("/api/v1/servers"))
                .insert_header(("Content-Type", "text/plain"))
                .set_payload(format!(r#"{{"name": "a", "endpoint_url": "{OK_URL}"}}"#)),
            415,
            "invalid_content_type",
        ),
        (
            "no content type",
            admin(TestRequest::post().uri("/api/v1/servers"))
                .set_payload(format!(r#"{{"name": "a", "endpoint_url": "{OK_URL}"}}"#)),
            415,
            "invalid_content_type",
        ),
        (
            "PUT with a bad name",
            admin(TestRequest::put().uri(&put_uri)).set_json(json!({"name": "Bad", "endpoint_url": OK_URL})),
            400,
            "invalid_server_name",
        ),
        (
            "PUT without token",
            TestRequest::put().uri(&put_uri).set_json(json!({"name": "new", "endpoint_url": OK_URL})),
            401,
            "missing_authorization",
        ),
        (
            "DELETE with a wrong token",
            TestRequest::delete().uri(&put_uri).insert_header(("Authorization", "Bearer no")),
            401,
            "invalid_admin_token",
        ),
        (
            "DELETE with a non-Bearer scheme",
            TestRequest::delete().uri(&put_uri).insert_header(("Authorization", "Basic eDp5")),
            401,
            "invalid_admin_token",
        ),
    ];

    let before = app.table().await;
    for (what, req, status, code) in cases {
        let reply = app.call(req).await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.body);
        assert_eq!(reply.code(), code, "{what}");
        assert_eq!(reply.body["link"].as_str().map(|l| l.starts_with("https://")), Some(true), "{what}");
        assert!(reply.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        if status == 401 {
            assert_eq!(reply.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        }
        assert_eq!(app.table().await, before, "{what}: nothing written");
    }
}

#[actix_web::test]
async fn without_an_admin_token_every_request_is_refused() {
    let app = TestApp::with(None, 1_048_576, None).await;
    let post = app.create(json!({"name": "a", "endpoint_url": OK_URL})).await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert_eq!(post.code(), "admin_token_not_configured");
    let delete = app
        .call(admin(TestRequest::delete().uri(&format!("/api/v1/servers/{}", uuid::Uuid::new_v4()))))
        .await;
    assert_eq!(delete.status, StatusCode::UNAUTHORIZED);
    let list = app.call(get("/api/v1/servers")).await;
    assert_eq!((list.status, list.code()), (StatusCode::UNAUTHORIZED, "admin_token_not_configured"));
    let anonymous = app.call(TestRequest::get().uri("/api/v1/servers")).await;
    assert_eq!((anonymous.status, anonymous.code()), (StatusCode::UNAUTHORIZED, "missing_authorization"));
    assert!(app.table().await.1.is_empty());
}

#[actix_web::test]
async fn unknown_routes_and_methods_use_the_error_table() {
    let app = TestApp::start().await;
    let missing = app.call(TestRequest::get().uri("/api/v1/nothing")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "route_not_found");
    let method = app.call(TestRequest::patch().uri("/api/v1/servers")).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(method.code(), "method_not_allowed");
    let method = app.call(TestRequest::post().uri("/health")).await;
    assert_eq!(method.status, StatusCode::METHOD_NOT_ALLOWED);
}
