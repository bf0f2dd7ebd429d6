//! One `kind = 'admin'` row of `audit_log`, and the day partition it goes to.

use std::sync::Mutex;

use chrono::{DateTime, Days, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::audit_log;

/// An admin change, or a refused one, as written.
#[derive(Debug, Insertable)]
#[diesel(table_name = audit_log)]
pub(super) struct AdminRow<'a> {
    pub time: DateTime<Utc>,
    /// UUIDv7: time-ordered, like the proxies' records.
    pub id: Uuid,
    pub kind: &'static str,
    pub tenant_id: &'a str,
    pub principal: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub outcome: &'a str,
    pub status: Option<i32>,
    pub client_addr: Option<&'a str>,
    pub before: Option<&'a Value>,
    pub after: Option<&'a Value>,
}

/// The last day whose partition this process created or found (the leader also creates them ahead).
static SEEN_DAY: Mutex<Option<NaiveDate>> = Mutex::new(None);

/// Makes sure the partition of `time`'s day exists, unless this process already saw it: outside any
/// transaction, so the `ACCESS EXCLUSIVE` lock creating it takes on `audit_log` is held for one statement.
/// A failure (another replica creating it at the same moment) is left to `insert`, which retries.
pub(super) async fn prepare(conn: &mut AsyncPgConnection, time: DateTime<Utc>) {
    let day = time.date_naive();
    if *SEEN_DAY.lock().unwrap_or_else(|e| e.into_inner()) == Some(day) {
        return;
    }
    if let Err(error) = create_partition(conn, day).await {
        tracing::warn!(%error, %day, "Could not create the day's audit partition; the insert retries.");
    }
}

/// Writes `row`. In a savepoint (or a transaction of its own outside one): a partition missing although
/// this process saw its day — another database, or dropped meanwhile — is created and the insert retried,
/// without aborting the caller's transaction.
pub(super) async fn insert(conn: &mut AsyncPgConnection, row: &AdminRow<'_>) -> QueryResult<()> {
    let attempt = conn
        .transaction(async |conn| diesel::insert_into(audit_log::table).values(row).execute(conn).await)
        .await;
    match attempt {
        Err(e) if missing_partition(&e) => {
            create_partition(conn, row.time.date_naive()).await?;
            diesel::insert_into(audit_log::table).values(row).execute(conn).await.map(drop)
        }
        other => other.map(drop),
    }
}

/// PostgreSQL routes a row no partition accepts to this check violation, which names no constraint.
fn missing_partition(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
        if info.constraint_name().is_none() && info.message().starts_with("no partition of relation"))
}

/// `audit_log_YYYYMMDD` for `[day, day + 1)` in UTC: the name and bounds the leader's partition task uses.
async fn create_partition(conn: &mut AsyncPgConnection, day: NaiveDate) -> QueryResult<()> {
    let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
    // Only dates are formatted into the statement: no bind parameters in DDL.
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS audit_log_{} PARTITION OF audit_log \
         FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
        day.format("%Y%m%d"),
        day.format("%Y-%m-%d"),
        next.format("%Y-%m-%d"),
    );
    diesel::sql_query(sql).execute(conn).await?;
    *SEEN_DAY.lock().unwrap_or_else(|e| e.into_inner()) = Some(day);
    Ok(())
}
