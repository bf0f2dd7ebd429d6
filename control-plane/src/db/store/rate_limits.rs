//! Rate limits. Every proxy holds them in its routing table, so writes bump `routing_state.version` in the
//! same transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use mcpgw_proto::v1;
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::rate_limits;

/// A stored rate limit.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = rate_limits)]
pub struct RateLimitRow {
    pub id: Uuid,
    pub tenant_id: String,
    /// `tenant`, `user`, `api_key`, `server` or `tool`: what one bucket counts.
    pub scope: String,
    /// Server name or glob the limit applies to (empty: any).
    pub server: String,
    /// Tool name or glob (empty: any request; set: `tools/call` of matching tools only).
    pub tool: String,
    pub requests: i32,
    pub per_ms: i64,
    pub burst: i32,
    pub created_at: DateTime<Utc>,
    /// Shared by every proxy replica (budgets leased from Redis) rather than enforced by each on its own.
    pub global: bool,
    /// A global limit while no budget can be leased: `closed` refuses its requests, `open` lets each proxy
    /// enforce it on its own.
    pub fail_mode: String,
}

impl RateLimitRow {
    /// The limit as proxies receive it.
    pub fn resource(&self) -> v1::Resource {
        v1::Resource {
            kind: Some(v1::resource::Kind::RateLimit(v1::RateLimit {
                id: self.id.to_string(),
                tenant_id: self.tenant_id.clone(),
                scope: self.scope.clone(),
                server: self.server.clone(),
                tool: self.tool.clone(),
                requests: u32::try_from(self.requests).unwrap_or(1),
                per_ms: u64::try_from(self.per_ms).unwrap_or(1),
                burst: u32::try_from(self.burst).unwrap_or(1),
                global: self.global,
                fail_open: self.fail_mode == "open",
            })),
        }
    }
}

/// Every limit, oldest first.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<RateLimitRow>> {
    rate_limits::table
        .select(RateLimitRow::as_select())
        .order((rate_limits::created_at.asc(), rate_limits::id.asc()))
        .load(conn)
        .await
}

/// One limit, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<RateLimitRow>> {
    rate_limits::table.find(id).select(RateLimitRow::as_select()).first(conn).await.optional()
}

/// Stores a limit.
pub async fn create(conn: &mut AsyncPgConnection, row: &RateLimitRow) -> QueryResult<()> {
    conn.transaction(async |conn| {
        diesel::insert_into(rate_limits::table).values(row).execute(conn).await?;
        bump_version(conn).await.map(drop)
    })
    .await
}

/// Deletes a limit; whether it existed.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    conn.transaction(async |conn| {
        let deleted = diesel::delete(rate_limits::table.find(id)).execute(conn).await?;
        if deleted == 1 {
            bump_version(conn).await?;
        }
        Ok(deleted == 1)
    })
    .await
}
