//! Registry queries. Every mutation bumps `routing_state.version` in its own transaction, so a reader that
//! sees the new version also sees the change.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{routing_state, servers};
use crate::model::{Server, ServerSpec};

/// Name of the unique constraint on `servers.name` (see the migration).
const NAME_CONSTRAINT: &str = "servers_name_key";

/// Why a registry mutation did not happen. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a server named {0:?} already exists")]
    NameTaken(String),
    #[error("no server has id {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Db(#[from] DieselError),
}

/// Every server, ordered by name.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Server>> {
    servers::table.select(Server::as_select()).order(servers::name.asc()).load(conn).await
}

/// One server, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<Server>> {
    servers::table.find(id).select(Server::as_select()).first(conn).await.optional()
}

/// The current routing version.
pub async fn routing_version(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    routing_state::table.find(1i16).select(routing_state::version).first(conn).await
}

/// The routing version and every server, read from one consistent snapshot of the database.
pub async fn routing_snapshot(conn: &mut AsyncPgConnection) -> QueryResult<(i64, Vec<Server>)> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |conn| {
            let version = routing_version(conn).await?;
            let servers = list(conn).await?;
            Ok((version, servers))
        })
        .await
}

async fn bump_version(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    diesel::update(routing_state::table.find(1i16))
        .set(routing_state::version.eq(routing_state::version + 1))
        .returning(routing_state::version)
        .get_result(conn)
        .await
}

fn name_taken(error: DieselError, name: &str) -> StoreError {
    match &error {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
            if info.constraint_name() == Some(NAME_CONSTRAINT) =>
        {
            StoreError::NameTaken(name.to_owned())
        }
        _ => StoreError::Db(error),
    }
}

/// Registers a new server. A taken name is reported by the unique constraint, so two concurrent
/// registrations of one name cannot both succeed.
pub async fn create(conn: &mut AsyncPgConnection, spec: &ServerSpec) -> Result<(Server, i64), StoreError> {
    let spec = spec.clone();
    conn.transaction(async |conn| {
        let server = diesel::insert_into(servers::table)
            .values((
                servers::id.eq(Uuid::new_v4()),
                servers::name.eq(&spec.name),
                servers::endpoint_url.eq(&spec.endpoint_url),
                servers::transport_type.eq(spec.transport.as_str()),
                servers::description.eq(&spec.description),
                servers::tags.eq(&spec.tags),
            ))
            .returning(Server::as_returning())
            .get_result(conn)
            .await
            .map_err(|e| name_taken(e, &spec.name))?;
        let version = bump_version(conn).await?;
        Ok((server, version))
    })
    .await
}

/// Replaces every writable field of a server.
pub async fn replace(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    spec: &ServerSpec,
) -> Result<(Server, i64), StoreError> {
    let spec = spec.clone();
    conn.transaction(async |conn| {
        let server = diesel::update(servers::table.find(id))
            .set((
                servers::name.eq(&spec.name),
                servers::endpoint_url.eq(&spec.endpoint_url),
                servers::transport_type.eq(spec.transport.as_str()),
                servers::description.eq(&spec.description),
                servers::tags.eq(&spec.tags),
                servers::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Server::as_returning())
            .get_result(conn)
            .await
            .optional()
            .map_err(|e| name_taken(e, &spec.name))?
            .ok_or(StoreError::NotFound(id))?;
        let version = bump_version(conn).await?;
        Ok((server, version))
    })
    .await
}

/// Removes a server; returns the new routing version.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> Result<i64, StoreError> {
    conn.transaction(async |conn| {
        let deleted = diesel::delete(servers::table.find(id)).execute(conn).await?;
        if deleted == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(bump_version(conn).await?)
    })
    .await
}
