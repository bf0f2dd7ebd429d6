//! API key queries. Every proxy holds the keys' digests in its routing table, so creating and deleting a
//! key bump `routing_state.version` in the same transaction, like server changes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::api_keys;
use crate::model::{ApiKeyRow, ApiKeySpec, NewKey};

/// Stores a key (its digest and prefix, never the secret); returns the row and the new routing version.
pub async fn create(
    conn: &mut AsyncPgConnection,
    spec: &ApiKeySpec,
    key: &NewKey,
) -> QueryResult<(ApiKeyRow, i64)> {
    // Serializing plain strings cannot fail; `Null` would only be stored if it somehow did.
    let permissions = serde_json::to_value(&spec.permissions).unwrap_or_default();
    let digest = key.digest.to_vec();
    conn.transaction(async |conn| {
        let row = diesel::insert_into(api_keys::table)
            .values((
                api_keys::id.eq(Uuid::new_v4()),
                api_keys::name.eq(&spec.name),
                api_keys::tenant_id.eq(&spec.tenant_id),
                api_keys::role.eq(&spec.role),
                api_keys::permissions.eq(&permissions),
                api_keys::digest.eq(&digest),
                api_keys::prefix.eq(&key.prefix),
                api_keys::expires_at.eq(spec.expires_at),
            ))
            .returning(ApiKeyRow::as_returning())
            .get_result(conn)
            .await?;
        let version = bump_version(conn).await?;
        Ok((row, version))
    })
    .await
}

/// Every key, oldest first.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ApiKeyRow>> {
    api_keys::table
        .select(ApiKeyRow::as_select())
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .load(conn)
        .await
}

/// One key, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table.find(id).select(ApiKeyRow::as_select()).first(conn).await.optional()
}

/// The key whose SHA-256 digest is `digest` (expired or not).
pub async fn by_digest(conn: &mut AsyncPgConnection, digest: &[u8; 32]) -> QueryResult<Option<ApiKeyRow>> {
    api_keys::table
        .filter(api_keys::digest.eq(digest.as_slice()))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Deletes a key; the new routing version, or `None` when no key has this id (nothing written).
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<i64>> {
    conn.transaction(async |conn| {
        let deleted = diesel::delete(api_keys::table.find(id)).execute(conn).await?;
        if deleted == 0 {
            return Ok(None);
        }
        Ok(Some(bump_version(conn).await?))
    })
    .await
}

/// Deletes the keys that expired before `before`; how many, and the new routing version when there were
/// any (the version is not bumped for nothing).
pub async fn delete_expired(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
) -> QueryResult<(usize, Option<i64>)> {
    conn.transaction(async |conn| {
        let deleted =
            diesel::delete(api_keys::table.filter(api_keys::expires_at.lt(before))).execute(conn).await?;
        if deleted == 0 {
            return Ok((0, None));
        }
        Ok((deleted, Some(bump_version(conn).await?)))
    })
    .await
}
