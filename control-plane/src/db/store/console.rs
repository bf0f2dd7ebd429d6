//! Sessions of the web console (`console_sessions`): opened at sign-in, read on every request the console
//! makes, ended by sign-out, by their expiry, or with the API key or user they name.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::schema::console_sessions;

/// One session; `id_digest` is the SHA-256 of the id its cookie carries.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = console_sessions)]
pub struct ConsoleSessionRow {
    pub id_digest: Vec<u8>,
    /// `admin_token`, `api_key` or `user`: which of the three next columns names who signed in.
    pub kind: String,
    pub admin_token_digest: Option<Vec<u8>>,
    pub api_key_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session.
pub async fn create(conn: &mut AsyncPgConnection, row: &ConsoleSessionRow) -> QueryResult<()> {
    diesel::insert_into(console_sessions::table).values(row).execute(conn).await.map(drop)
}

/// The session whose id has this digest, unless it has expired.
pub async fn get(conn: &mut AsyncPgConnection, digest: &[u8]) -> QueryResult<Option<ConsoleSessionRow>> {
    console_sessions::table
        .find(digest)
        .filter(console_sessions::expires_at.gt(Utc::now()))
        .select(ConsoleSessionRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Ends a session; whether it existed.
pub async fn delete(conn: &mut AsyncPgConnection, digest: &[u8]) -> QueryResult<bool> {
    diesel::delete(console_sessions::table.find(digest)).execute(conn).await.map(|n| n > 0)
}

/// Deletes the sessions that expired before `now`; how many.
pub async fn delete_expired(conn: &mut AsyncPgConnection, now: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(console_sessions::table.filter(console_sessions::expires_at.le(now))).execute(conn).await
}
