//! Instance mutations: reconciling a server's instances with a spec, adding one, removing one.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::{StoreError, bump_version, constraint_error, upstream_auth};
use crate::db::schema::{instances, servers};
use crate::model::{InstanceRow, InstanceSpec, Owner};
use crate::secrets::SecretsKey;

fn metadata_json(spec: &InstanceSpec) -> Value {
    Value::Object(spec.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

fn weight(spec: &InstanceSpec) -> i32 {
    i32::try_from(spec.weight).unwrap_or(i32::MAX)
}

fn command_json(spec: &InstanceSpec) -> Option<Value> {
    spec.command.as_ref().map(|c| c.stored().to_json())
}

/// Writes an instance's own credential, or a stdio instance's secret environment (inside the caller's
/// transaction).
async fn write_credential(
    conn: &mut AsyncPgConnection,
    instance: &InstanceRow,
    spec: &InstanceSpec,
    key: Option<&SecretsKey>,
) -> Result<(), StoreError> {
    if let Some(command) = &spec.command {
        return upstream_auth::write_secret_env(conn, instance.id, &command.secret_env, key).await;
    }
    let what = format!("the instance at {}", mcpgw_proto::validate::redacted_str(&spec.endpoint_url));
    upstream_auth::write(conn, Owner::Instance(instance.id), &spec.upstream_auth, key, &what).await
}

async fn insert(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    spec: &InstanceSpec,
) -> Result<InstanceRow, StoreError> {
    diesel::insert_into(instances::table)
        .values((
            instances::id.eq(Uuid::new_v4()),
            instances::server_id.eq(server_id),
            instances::endpoint_url.eq(&spec.endpoint_url),
            instances::weight.eq(weight(spec)),
            instances::metadata.eq(metadata_json(spec)),
            instances::command.eq(command_json(spec)),
        ))
        .returning(InstanceRow::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| constraint_error(e, "", Some(&spec.endpoint_url)))
}

/// Makes the server's instances match `wanted` (by endpoint URL); returns them in `seq` order. Runs inside
/// the caller's transaction.
pub(super) async fn reconcile(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    existing: &[InstanceRow],
    wanted: &[InstanceSpec],
    key: Option<&SecretsKey>,
) -> Result<Vec<InstanceRow>, StoreError> {
    let gone: Vec<Uuid> = existing
        .iter()
        .filter(|row| !wanted.iter().any(|w| w.endpoint_url == row.endpoint_url))
        .map(|row| row.id)
        .collect();
    if !gone.is_empty() {
        diesel::delete(instances::table.filter(instances::id.eq_any(gone))).execute(conn).await?;
    }
    let mut result = Vec::with_capacity(wanted.len());
    for spec in wanted {
        let row = match existing.iter().find(|row| row.endpoint_url == spec.endpoint_url) {
            Some(row)
                if row.weight == weight(spec)
                    && row.metadata == metadata_json(spec)
                    && row.command == command_json(spec) =>
            {
                row.clone()
            }
            Some(row) => {
                diesel::update(instances::table.find(row.id))
                    .set((
                        instances::weight.eq(weight(spec)),
                        instances::metadata.eq(metadata_json(spec)),
                        instances::command.eq(command_json(spec)),
                    ))
                    .returning(InstanceRow::as_returning())
                    .get_result(conn)
                    .await?
            }
            None => insert(conn, server_id, spec).await?,
        };
        write_credential(conn, &row, spec, key).await?;
        result.push(row);
    }
    result.sort_by_key(|row| row.seq);
    Ok(result)
}

async fn lock_server(conn: &mut AsyncPgConnection, server_id: Uuid) -> Result<(), StoreError> {
    // Row lock: a concurrent delete of the server waits for (or fails) this mutation cleanly.
    servers::table
        .find(server_id)
        .select(servers::id)
        .for_update()
        .first::<Uuid>(conn)
        .await
        .optional()?
        .ok_or(StoreError::NotFound(server_id))
        .map(drop)
}

/// Adds one instance (with its own credential, if any); returns it and the new routing version.
pub async fn add_instance(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    spec: &InstanceSpec,
    key: Option<&SecretsKey>,
) -> Result<(InstanceRow, i64), StoreError> {
    let spec = spec.clone();
    conn.transaction(async |conn| {
        lock_server(conn, server_id).await?;
        let row = insert(conn, server_id, &spec).await?;
        write_credential(conn, &row, &spec, key).await?;
        diesel::update(servers::table.find(server_id))
            .set(servers::updated_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        Ok((row, bump_version(conn).await?))
    })
    .await
}

/// Removes one instance (the last one too: the proxy then answers 503); returns the new routing version.
pub async fn remove_instance(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    instance_id: Uuid,
) -> Result<i64, StoreError> {
    conn.transaction(async |conn| {
        lock_server(conn, server_id).await?;
        let deleted = diesel::delete(
            instances::table.filter(instances::id.eq(instance_id)).filter(instances::server_id.eq(server_id)),
        )
        .execute(conn)
        .await?;
        if deleted == 0 {
            return Err(StoreError::InstanceNotFound { server: server_id, instance: instance_id });
        }
        diesel::update(servers::table.find(server_id))
            .set(servers::updated_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        Ok(bump_version(conn).await?)
    })
    .await
}
