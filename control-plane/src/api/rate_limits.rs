//! `/api/v1/rate-limits`: limits per tenant, user, API key, server or tool. A local limit is enforced by
//! every proxy on its own (a limit of N per period is N per period on each proxy); a `global` one is
//! shared by every proxy replica through budgets the control plane leases from Redis (`crate::budgets`),
//! with `fail_mode` deciding what happens while Redis is away. Over a limit a caller gets 429 with
//! `Retry-After` and a JSON-RPC error carrying its request's id. Published to the proxies right after the
//! commit.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::servers::publish;
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::store::rate_limits::{self as store, RateLimitRow};

/// A new rate limit (the contract's body).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRequest {
    /// `tenant`, `user`, `api_key`, `server` or `tool`: what one bucket counts.
    pub scope: String,
    /// Which requests: `{"tenant"?, "server"?, "tool"?}` (names or globs; a missing key matches any).
    #[serde(default, rename = "match")]
    #[schema(value_type = Object)]
    pub matches: BTreeMap<String, String>,
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period, e.g. `1s`, `1m`, `1h`.
    pub per: String,
    /// Requests allowed at once (default `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Shared across proxy replicas (needs the control plane's `--redis-url`); default false: each proxy
    /// enforces the limit on its own.
    #[serde(default)]
    pub global: bool,
    /// A global limit while Redis or the control plane is away: `closed` (default) refuses its requests
    /// with 503, `open` lets each proxy enforce it on its own until leasing works again.
    #[serde(default)]
    pub fail_mode: Option<String>,
}

fn target(row: &RateLimitRow) -> Target {
    Target::new("rate-limit", row.id, Some(&row.tenant_id))
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidRateLimit, message)
}

impl RateLimitRequest {
    fn validate(self, admin: &Admin, redis: bool) -> Result<RateLimitRow, ApiError> {
        if !matches!(self.scope.as_str(), "tenant" | "user" | "api_key" | "server" | "tool") {
            return Err(invalid(format!(
                "scope {:?} is not tenant, user, api_key, server or tool",
                self.scope
            )));
        }
        if self.global && !redis {
            return Err(invalid(
                "global limits (shared across proxy replicas) need Redis: start the control plane with \
                 --redis-url, or omit `global` for a limit each proxy enforces on its own",
            ));
        }
        let fail_mode = match (self.fail_mode.as_deref(), self.global) {
            (None, _) => "closed",
            (Some(mode @ ("open" | "closed")), true) => mode,
            (Some("open" | "closed"), false) => {
                return Err(invalid("fail_mode applies to global limits only (a local limit never fails)"));
            }
            (Some(other), _) => {
                return Err(invalid(format!("fail_mode {other:?} is not one of open, closed")));
            }
        }
        .to_owned();
        if let Some(key) = self.matches.keys().find(|k| !matches!(k.as_str(), "tenant" | "server" | "tool")) {
            return Err(invalid(format!("match.{key} is not one of tenant, server, tool")));
        }
        let pattern_ok = |p: &String| p.len() <= 512 && !p.chars().any(char::is_control);
        if !self.matches.values().all(pattern_ok) {
            return Err(invalid("match values must be names or globs of at most 512 characters"));
        }
        let per = crate::config::parse_duration(
            "per",
            &self.per,
            Duration::from_millis(1),
            Duration::from_secs(86_400 * 30),
        )
        .map_err(|e| invalid(e.to_string()))?;
        if self.requests == 0 || self.requests > 1_000_000 {
            return Err(invalid("requests must be between 1 and 1000000"));
        }
        let burst = self.burst.unwrap_or(self.requests);
        if burst == 0 || burst > 1_000_000 {
            return Err(invalid("burst must be between 1 and 1000000"));
        }
        let tenant_id = admin.tenant_for(self.matches.get("tenant").map(String::as_str))?;
        Ok(RateLimitRow {
            id: Uuid::new_v4(),
            tenant_id,
            scope: self.scope,
            server: self.matches.get("server").cloned().unwrap_or_default(),
            tool: self.matches.get("tool").cloned().unwrap_or_default(),
            requests: self.requests as i32,
            per_ms: per.as_millis() as i64,
            burst: burst as i32,
            created_at: Utc::now(),
            global: self.global,
            fail_mode,
        })
    }
}

/// `GET /api/v1/rate-limits`.
pub async fn list(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let mut rows = store::list(&mut conn).await.map_err(ApiError::internal)?;
    rows.retain(|r| admin.manages(Some(&r.tenant_id)));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": rows })))
}

/// `POST /api/v1/rate-limits`: 201, published to every proxy.
pub async fn create(
    admin: Admin,
    state: web::Data<AppState>,
    body: web::Json<RateLimitRequest>,
) -> Result<HttpResponse, ApiError> {
    let row = body.into_inner().validate(&admin, state.redis.is_some())?;
    let mut conn = state.conn().await?;
    audited(&mut conn, async |conn| {
        store::create(conn, &row).await.map_err(ApiError::internal)?;
        Ok(((), Audit::created(target(&row), &row)))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %row.id, scope = row.scope, tenant_id = row.tenant_id, by = %admin.principal().label(), "Created a rate limit.");
    publish(&state).await;
    Ok(HttpResponse::Created().json(row))
}

/// `DELETE /api/v1/rate-limits/{id}`.
pub async fn delete(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let not_found = || ApiError::new(Code::RateLimitNotFound, format!("no rate limit has id {raw:?}"));
    let id = Uuid::parse_str(&raw).map_err(|_| not_found())?;
    let mut conn = state.conn().await?;
    audited(&mut conn, async |conn| {
        let stored = store::get(conn, id).await.map_err(ApiError::internal)?;
        let Some(stored) = stored.filter(|r| admin.manages(Some(&r.tenant_id))) else {
            return Err(not_found());
        };
        if !store::delete(conn, id).await.map_err(ApiError::internal)? {
            return Err(not_found());
        }
        Ok(((), Audit::deleted(target(&stored), &stored)))
    })
    .await?;
    drop(conn);
    tracing::info!(%id, by = %admin.principal().label(), "Deleted a rate limit.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
