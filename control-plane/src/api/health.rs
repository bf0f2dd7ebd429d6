//! Liveness (`/health`), readiness (`/ready`: database, migrations, Redis) and the connected-proxy list.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use bb8_redis::redis;
use diesel_async::RunQueryDsl;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::auth::PlatformAdmin;
use crate::db::bootstrap::pending_migrations;

/// Longest a readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`: the process is up.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `GET /ready`: 200 when the database answers with every embedded migration applied (and Redis answers
/// when configured); otherwise 503 naming each failed check.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = Map::new();
    let mut ready = true;
    let mut record = |name: &str, outcome: Result<(), String>| {
        let value = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(why) => {
                ready = false;
                why
            }
        };
        checks.insert(name.to_owned(), Value::String(value));
    };
    let (database, migrations) = check_database(&state).await;
    record("database", database);
    record("migrations", migrations);
    if let Some(redis) = &state.redis {
        record("redis", check_redis(redis).await);
    }
    if ready {
        HttpResponse::Ok().json(json!({ "status": "ready", "checks": checks }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({ "status": "not_ready", "checks": checks }))
    }
}

async fn check_database(state: &AppState) -> (Result<(), String>, Result<(), String>) {
    let not_checked = || Err("not checked: the database is unavailable".to_owned());
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(pending_migrations(&mut conn, &state.migrations).await)
    })
    .await;
    match outcome {
        Err(_) => (Err("unavailable: no answer within 2 s".into()), not_checked()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness: the database is unavailable.");
            (Err("unavailable".into()), not_checked())
        }
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "Readiness: cannot read the applied migrations.");
            (Ok(()), Err("cannot read the applied migrations".into()))
        }
        Ok(Ok(Ok(pending))) if pending.is_empty() => (Ok(()), Ok(())),
        Ok(Ok(Ok(pending))) => (Ok(()), Err(format!("pending: {}", pending.join(", ")))),
    }
}

async fn check_redis(pool: &super::RedisPool) -> Result<(), String> {
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut *conn).await.map_err(|e| e.to_string())
    })
    .await;
    match outcome {
        Err(_) => Err("unavailable: no answer within 2 s".into()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness: Redis is unavailable.");
            Err("unavailable".into())
        }
        Ok(Ok(_pong)) => Ok(()),
    }
}

/// `GET /api/v1/proxies`: the proxies streaming routes from this replica.
pub async fn proxies(_admin: PlatformAdmin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.hub.proxies().list()))
}
