//! Liveness, readiness (database, migrations, Redis) and the proxy list.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use mcpgw_control_plane::api::RedisPool;
use mcpgw_control_plane::db;
use serde_json::json;

use crate::support::{TOKEN, TestApp, TestDb, get};

#[actix_web::test]
async fn health_reports_the_process() {
    let app = TestApp::start().await;
    let reply = app.call(TestRequest::get().uri("/health")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "ok");
    assert!(reply.body["version"].is_string());
}

#[actix_web::test]
async fn ready_on_a_migrated_database() {
    let app = TestApp::start().await;
    let reply = app.call(TestRequest::get().uri("/ready")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok"}}));
}

#[actix_web::test]
async fn not_ready_while_migrations_are_pending() {
    let db = TestDb::unique();
    assert!(db::create_database_if_missing(&db.url).await.expect("create"), "created by this call");
    assert!(!db::create_database_if_missing(&db.url).await.expect("exists"), "the second call finds it");
    let app = TestApp::unrefreshed(db, Some(TOKEN), 1024, None);
    let reply = app.call(TestRequest::get().uri("/ready")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["status"], "not_ready");
    assert_eq!(reply.body["checks"]["database"], "ok");
    assert_ne!(reply.body["checks"]["migrations"], "ok");
}

#[actix_web::test]
async fn not_ready_when_redis_is_configured_but_down() {
    // Port 1 on localhost refuses connections: a Redis that is configured and unreachable.
    let manager = bb8_redis::RedisConnectionManager::new("redis://127.0.0.1:1").expect("redis URL");
    let redis: RedisPool = bb8::Pool::builder().max_size(1).build_unchecked(manager);
    let app = TestApp::with(Some(TOKEN), 1024, Some(redis)).await;
    let reply = app.call(TestRequest::get().uri("/ready")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert_eq!(reply.body["checks"]["database"], "ok");
    assert_ne!(reply.body["checks"]["redis"], "ok");
}

#[actix_web::test]
async fn no_proxies_listed_before_any_connects() {
    let app = TestApp::start().await;
    let reply = app.call(get("/api/v1/proxies")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!([]));
}
