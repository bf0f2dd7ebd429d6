//! Health records: the active checks' results (a status change bumps the routing version, so proxies get
//! it as an `InstanceHealth` delta), the proxies' passive reports, and who leads the checks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::{instance_health, leader_state, passive_health};
use crate::model::{HealthIndex, InstanceHealthRow, PassiveRow};

/// Active health rows of `ids` (all when `None`).
pub async fn active(
    conn: &mut AsyncPgConnection,
    ids: Option<&[Uuid]>,
) -> QueryResult<HashMap<Uuid, InstanceHealthRow>> {
    let mut query = instance_health::table.select(InstanceHealthRow::as_select()).into_boxed();
    if let Some(ids) = ids {
        query = query.filter(instance_health::instance_id.eq_any(ids.to_vec()));
    }
    let rows: Vec<InstanceHealthRow> = query.load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.instance_id, r)).collect())
}

/// Active and passive health of `ids`.
pub async fn index(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<HealthIndex> {
    let active = active(conn, Some(ids)).await?;
    let rows: Vec<PassiveRow> = passive_health::table
        .filter(passive_health::instance_id.eq_any(ids.to_vec()))
        .order(passive_health::proxy_id.asc())
        .select(PassiveRow::as_select())
        .load(conn)
        .await?;
    let mut passive: HashMap<Uuid, Vec<PassiveRow>> = HashMap::new();
    for row in rows {
        passive.entry(row.instance_id).or_default().push(row);
    }
    Ok(HealthIndex { active, passive })
}

fn is_fk_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _))
}

/// Stores one probe's outcome. When `status_changed`, the routing version is bumped in the same
/// transaction; returns the new version then. An instance deleted meanwhile is skipped.
pub async fn record(
    conn: &mut AsyncPgConnection,
    row: &InstanceHealthRow,
    status_changed: bool,
) -> QueryResult<Option<i64>> {
    let row = row.clone();
    let outcome = conn
        .transaction(async |conn| {
            diesel::insert_into(instance_health::table)
                .values(&row)
                .on_conflict(instance_health::instance_id)
                .do_update()
                .set(&row)
                .execute(conn)
                .await?;
            if status_changed { bump_version(conn).await.map(Some) } else { Ok(None) }
        })
        .await;
    match outcome {
        Err(e) if is_fk_violation(&e) => Ok(None),
        other => other,
    }
}

/// Forgets the active results of `ids` (checks turned off: the instances are unknown again, and take
/// traffic). Bumps the routing version when a row went; returns it then.
pub async fn clear(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<Option<i64>> {
    let ids = ids.to_vec();
    conn.transaction(async |conn| {
        let gone = diesel::delete(instance_health::table.filter(instance_health::instance_id.eq_any(ids)))
            .execute(conn)
            .await?;
        if gone > 0 { bump_version(conn).await.map(Some) } else { Ok(None) }
    })
    .await
}

/// One proxy's report: its rows are replaced by `rows` (instances that no longer exist are skipped).
pub async fn record_passive(
    conn: &mut AsyncPgConnection,
    proxy_id: &str,
    rows: Vec<PassiveRow>,
) -> QueryResult<()> {
    let proxy_id = proxy_id.to_owned();
    conn.transaction(async |conn| {
        diesel::delete(passive_health::table.filter(passive_health::proxy_id.eq(&proxy_id)))
            .execute(conn)
            .await?;
        for row in rows {
            // One statement per row: a row for a deleted instance fails alone (savepoint), not the report.
            let inserted = conn
                .transaction(async |conn| {
                    diesel::insert_into(passive_health::table).values(&row).execute(conn).await
                })
                .await;
            match inserted {
                Err(e) if is_fk_violation(&e) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    })
    .await
}

/// Drops passive reports older than `before` (proxies that went away).
pub async fn prune_passive(conn: &mut AsyncPgConnection, before: DateTime<Utc>) -> QueryResult<usize> {
    diesel::delete(passive_health::table.filter(passive_health::reported_at.lt(before))).execute(conn).await
}

/// Records that `replica_id` leads the health checks from now on.
pub async fn set_leader(conn: &mut AsyncPgConnection, replica_id: &str) -> QueryResult<()> {
    diesel::insert_into(leader_state::table)
        .values((
            leader_state::id.eq(1i16),
            leader_state::replica_id.eq(replica_id),
            leader_state::since.eq(Utc::now()),
        ))
        .on_conflict(leader_state::id)
        .do_update()
        .set((leader_state::replica_id.eq(replica_id), leader_state::since.eq(Utc::now())))
        .execute(conn)
        .await
        .map(drop)
}

/// The replica that last took the lead, and since when.
pub async fn leader(conn: &mut AsyncPgConnection) -> QueryResult<Option<(String, DateTime<Utc>)>> {
    leader_state::table
        .find(1i16)
        .select((leader_state::replica_id, leader_state::since))
        .first(conn)
        .await
        .optional()
}
