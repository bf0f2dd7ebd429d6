//! Database bootstrap: create the database when it is missing, apply the embedded migrations, report pending ones.

use std::collections::BTreeSet;

use diesel::Connection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::Text;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::{DbError, quote_ident};
use crate::config::DatabaseUrl;

/// Every migration under `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Creates the database if it does not exist and applies pending migrations; returns the versions applied.
pub async fn prepare(db: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    if create_database_if_missing(db).await? {
        tracing::info!(database = db.name(), "Created the database.");
    }
    run_migrations(db).await
}

async fn connect(url: &str, redacted: String) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|source| DbError::Connect { url: redacted, source })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "Bootstrap connection closed with an error.");
        }
    });
    Ok(client)
}

/// Creates the database unless it exists; `true` when this call created it. Tolerates a concurrent creator
/// (another replica starting at the same moment).
pub async fn create_database_if_missing(db: &DatabaseUrl) -> Result<bool, DbError> {
    // Connecting to the database itself first needs no access to the maintenance database.
    match tokio_postgres::connect(db.as_str(), NoTls).await {
        Ok(_) => return Ok(false),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(source) => return Err(DbError::Connect { url: db.redacted(), source }),
    }
    let client = connect(&db.maintenance(), db.redacted()).await?;
    let statement = format!("CREATE DATABASE {}", quote_ident(db.name()));
    match client.batch_execute(&statement).await {
        Ok(()) => Ok(true),
        // 42P04, or a unique violation in pg_database when two creators race past the catalog check.
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(false)
        }
        Err(source) => Err(DbError::Create { name: db.name().to_owned(), source }),
    }
}

/// Drops the database, disconnecting its sessions (tests use it to clean up their throwaway databases).
pub async fn drop_database(db: &DatabaseUrl) -> Result<(), DbError> {
    let client = connect(&db.maintenance(), db.redacted()).await?;
    let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db.name()));
    client
        .batch_execute(&statement)
        .await
        .map_err(|source| DbError::Drop { name: db.name().to_owned(), source })
}

/// Applies pending migrations and returns their versions. diesel's harness is synchronous, so it runs on
/// a blocking thread through `AsyncConnectionWrapper` (the async harness needs a multi-thread runtime,
/// and actix runs current-thread runtimes).
pub async fn run_migrations(db: &DatabaseUrl) -> Result<Vec<String>, DbError> {
    let url = db.as_str().to_owned();
    tokio::task::spawn_blocking(move || migrate_locked(&url))
        .await
        .map_err(|e| DbError::Migration(format!("the migration task failed: {e}")))?
}

/// Advisory lock key held while migrating ("mcpgw" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x006d_6370_6777;

type SyncPgConnection = AsyncConnectionWrapper<AsyncPgConnection>;

fn migrate_locked(url: &str) -> Result<Vec<String>, DbError> {
    let mut conn =
        SyncPgConnection::establish(url).map_err(|e| DbError::Migration(format!("cannot connect: {e}")))?;
    // Replicas starting together would race on the same DDL: one migrates, the others wait for the lock
    // and find nothing left to do. The session lock also ends with the connection if anything fails.
    advisory(&mut conn, "pg_advisory_lock")?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect())
        .map_err(|e| DbError::Migration(e.to_string()));
    advisory(&mut conn, "pg_advisory_unlock")?;
    applied
}

fn advisory(conn: &mut SyncPgConnection, function: &str) -> Result<(), DbError> {
    let query = diesel::sql_query(format!("SELECT {function}({MIGRATION_LOCK_KEY})"));
    diesel::RunQueryDsl::execute(query, conn)
        .map(drop)
        .map_err(|e| DbError::Migration(format!("{function} failed: {e}")))
}

/// Versions of every embedded migration.
pub fn embedded_versions() -> Result<BTreeSet<String>, DbError> {
    let migrations =
        MigrationSource::<Pg>::migrations(&MIGRATIONS).map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(migrations.iter().map(|m| m.name().version().to_string()).collect())
}

#[derive(diesel::QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = Text)]
    version: String,
}

/// Embedded migrations the database has not applied yet (empty when it is up to date).
pub async fn pending_migrations(
    conn: &mut AsyncPgConnection,
    embedded: &BTreeSet<String>,
) -> Result<Vec<String>, DbError> {
    let applied: Vec<AppliedVersion> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations").load(conn).await?;
    let applied: BTreeSet<String> = applied.into_iter().map(|v| v.version).collect();
    Ok(embedded.difference(&applied).cloned().collect())
}
