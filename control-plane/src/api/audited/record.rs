//! One `kind = 'admin'` row of `audit_log`, and the day partition it goes to.

use std::collections::BTreeSet;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use serde_json::Value;
use uuid::Uuid;

use crate::db::store::audit as store;

/// An admin change, or a refused one, as written.
#[derive(Debug)]
pub(super) struct AdminRow<'a> {
    pub time: DateTime<Utc>,
    /// UUIDv7: time-ordered, like the proxies' records.
    pub id: Uuid,
    pub tenant_id: &'a str,
    pub principal: &'a str,
    pub method: &'a str,
    pub target: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub outcome: &'a str,
    pub status: Option<i32>,
    pub client_addr: Option<&'a str>,
    /// The request's trace (`traceparent` continued, or the one it started).
    pub trace_id: Option<String>,
    pub before: Option<&'a Value>,
    pub after: Option<&'a Value>,
}

impl AdminRow<'_> {
    fn to_record(&self) -> store::AdminRecord {
        let text = |v: Option<&str>| v.map(str::to_owned);
        store::AdminRecord {
            time: self.time,
            id: self.id,
            tenant_id: self.tenant_id.to_owned(),
            principal: self.principal.to_owned(),
            method: self.method.to_owned(),
            target: text(self.target),
            request_id: text(self.request_id),
            outcome: self.outcome.to_owned(),
            status: self.status,
            client_addr: text(self.client_addr),
            trace_id: self.trace_id.clone(),
            before: self.before.cloned(),
            after: self.after.cloned(),
        }
    }
}

/// The last day whose partition this process made sure of (the leader also creates them ahead).
static SEEN_DAY: Mutex<Option<NaiveDate>> = Mutex::new(None);

/// Makes sure the partition of `time`'s day exists, unless this process already saw it: outside any
/// transaction, so the `ACCESS EXCLUSIVE` lock creating it takes on `audit_log` is held for one statement.
/// A failure is left to `insert`, which makes sure again.
pub(super) async fn prepare(conn: &mut AsyncPgConnection, time: DateTime<Utc>) {
    let day = time.date_naive();
    if *SEEN_DAY.lock().unwrap_or_else(|e| e.into_inner()) == Some(day) {
        return;
    }
    match store::ensure_partitions(conn, &BTreeSet::from([day])).await {
        Ok(_) => *SEEN_DAY.lock().unwrap_or_else(|e| e.into_inner()) = Some(day),
        Err(error) => {
            tracing::warn!(%error, %day, "Could not create the day's audit partition; the insert retries.")
        }
    }
}

/// Writes `row` through the audit store (which makes its day's partition if it is still missing — another
/// database, or dropped meanwhile).
pub(super) async fn insert(conn: &mut AsyncPgConnection, row: &AdminRow<'_>) -> QueryResult<()> {
    store::insert_admin(conn, &row.to_record()).await
}
