//! The audit log (`audit_log`, partitioned by UTC day on `time`): MCP records written a whole batch per
//! statement, admin changes a row at a time, the daily partitions made before their first record and
//! dropped once older than the retention, and the keyset-paged read behind `GET /api/v1/audit`.
//!
//! `(time, id)` is the primary key: a batch sent again after a lost acknowledgement is written once (it
//! fails on the key and is written again `ON CONFLICT DO NOTHING`), and the answer counts what was new.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::dsl::sql;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Array, Bool, Int4, Int8, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use mcpgw_proto::v1::AuditRecord;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::audit_log;

/// `--audit-retention` when not given.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// `pg_advisory_xact_lock` key serializing partition creation across replicas ("mcpgwa" in ASCII): two
/// concurrent `CREATE TABLE IF NOT EXISTS` of one partition would otherwise both pass the check.
const PARTITION_LOCK: i64 = 0x6d63_7067_7761;

/// Prefix of the daily partitions: `audit_log_YYYYMMDD`.
const PARTITION_PREFIX: &str = "audit_log_";

/// What became of a batch's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// New rows.
    pub written: u64,
    /// Records already stored (a batch sent again).
    pub duplicate: u64,
    /// Records older than the retention, not written.
    pub expired: u64,
}

/// Why a batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A record no proxy of this version makes; the batch cannot be written as it is.
    #[error("audit record {index}: {why}")]
    Invalid { index: usize, why: &'static str },
    #[error(transparent)]
    Db(#[from] DieselError),
}

/// A batch of MCP records as the columns of one `unnest` insert, the expired ones left out.
#[derive(Debug, Default)]
pub struct McpBatch {
    time: Vec<DateTime<Utc>>,
    id: Vec<Uuid>,
    tenant_id: Vec<String>,
    principal: Vec<String>,
    server: Vec<Option<String>>,
    instance: Vec<Option<String>>,
    era: Vec<Option<String>>,
    method: Vec<String>,
    target: Vec<Option<String>>,
    request_id: Vec<Option<String>>,
    outcome: Vec<String>,
    status: Vec<Option<i32>>,
    rpc_error_code: Vec<Option<i64>>,
    duration_us: Vec<i64>,
    bytes_in: Vec<i64>,
    bytes_out: Vec<i64>,
    client_addr: Vec<Option<String>>,
    session: Vec<Option<String>>,
    trace_id: Vec<Option<String>>,
    arguments: Vec<Option<String>>,
    proxy_id: Vec<Option<String>>,
    /// The UTC days of the rows: their partitions must exist.
    days: BTreeSet<NaiveDate>,
    expired: u64,
}

impl McpBatch {
    /// Maps proto records to rows: empty strings become NULL in nullable columns (principal and tenant
    /// stay `''`), an empty `proxy_id` becomes `proxy_fallback`, records before `cutoff` are counted as
    /// expired. An id that is not 16 bytes or a time outside years 1970–9999 refuses the whole batch.
    pub fn from_records(
        records: &[AuditRecord],
        proxy_fallback: Option<&str>,
        cutoff: DateTime<Utc>,
    ) -> Result<Self, WriteError> {
        let mut batch = Self::default();
        for (index, r) in records.iter().enumerate() {
            let invalid = |why| WriteError::Invalid { index, why };
            let id = Uuid::from_slice(&r.id).map_err(|_| invalid("the id is not 16 bytes"))?;
            let time = DateTime::from_timestamp_micros(r.time_unix_us)
                .ok_or_else(|| invalid("time_unix_us is out of range"))?;
            if time < cutoff {
                batch.expired += 1;
                continue;
            }
            if !(1970..=9999).contains(&time.year()) {
                return Err(invalid("time_unix_us is outside the years 1970 to 9999"));
            }
            batch.days.insert(time.date_naive());
            batch.time.push(time);
            batch.id.push(id);
            batch.tenant_id.push(text(&r.tenant_id));
            batch.principal.push(text(&r.principal));
            batch.server.push(optional(&r.server));
            batch.instance.push(optional(&r.instance));
            batch.era.push(optional(&r.era));
            batch.method.push(text(&r.method));
            batch.target.push(optional(&r.target));
            batch.request_id.push(optional(&r.request_id));
            batch.outcome.push(text(&r.outcome));
            // 0: no status was sent (the connection closed).
            batch.status.push((r.status != 0).then(|| i32::try_from(r.status).unwrap_or(i32::MAX)));
            batch.rpc_error_code.push(r.rpc_error_code);
            batch.duration_us.push(i64::try_from(r.duration_us).unwrap_or(i64::MAX));
            batch.bytes_in.push(i64::try_from(r.bytes_in).unwrap_or(i64::MAX));
            batch.bytes_out.push(i64::try_from(r.bytes_out).unwrap_or(i64::MAX));
            batch.client_addr.push(optional(&r.client_addr));
            batch.session.push(optional(&r.session));
            batch.trace_id.push(optional(&r.trace_id));
            batch.arguments.push(optional(&r.arguments));
            batch.proxy_id.push(optional(&r.proxy_id).or_else(|| proxy_fallback.map(text)));
        }
        Ok(batch)
    }

    /// Rows to write (the expired ones are not among them).
    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }
}

/// PostgreSQL text cannot hold NUL: a record carrying one is kept with U+FFFD in its place.
fn text(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s.to_owned() }
}

fn optional(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| text(s))
}

/// The rows of a batch as 21 arrays: one statement, one plan whatever the batch size (prepared once per
/// connection), no bind-parameter limit; 20 ms per 1,000 rows against 37 ms for diesel's multi-row
/// `VALUES` insert of the same rows (BENCHMARKS.md, "Audit ingest").
macro_rules! insert_mcp {
    ($tail:literal) => {
        concat!(
            "INSERT INTO audit_log (time, id, tenant_id, principal, server, instance, era, method, target, \
             request_id, outcome, status, rpc_error_code, duration_us, bytes_in, bytes_out, client_addr, \
             session, trace_id, arguments, proxy_id, kind) \
             SELECT *, 'mcp' FROM unnest($1::timestamptz[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int4[], $13::int8[], \
             $14::int8[], $15::int8[], $16::int8[], $17::text[], $18::text[], $19::text[], $20::text[], \
             $21::text[])",
            $tail
        )
    };
}

/// A batch none of whose records is stored yet: every batch but one sent again.
const INSERT_MCP: &str = insert_mcp!("");
/// A batch sent again (after a lost acknowledgement): what is stored already is left as it is. Checking
/// each row's key before inserting it costs PostgreSQL ~23 % more a row, so only batches that need it pay it
/// (BENCHMARKS.md, "Audit ingest").
const INSERT_MCP_AGAIN: &str = insert_mcp!(" ON CONFLICT DO NOTHING");

/// Writes a batch in one statement (so in one transaction); its partitions must exist. A batch that holds
/// a stored record fails as a whole and is written again, its stored records left out.
pub async fn insert_mcp(conn: &mut AsyncPgConnection, batch: &McpBatch) -> QueryResult<Inserted> {
    let expired = batch.expired;
    if batch.is_empty() {
        return Ok(Inserted { expired, ..Inserted::default() });
    }
    let written = match insert_with(INSERT_MCP, conn, batch).await {
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            insert_with(INSERT_MCP_AGAIN, conn, batch).await?
        }
        written => written?,
    };
    Ok(Inserted { written, duplicate: batch.len() as u64 - written, expired })
}

/// Runs one of the batch's statements: how many rows it wrote.
async fn insert_with(
    statement: &'static str,
    conn: &mut AsyncPgConnection,
    batch: &McpBatch,
) -> QueryResult<u64> {
    let written = diesel::sql_query(statement)
        .bind::<Array<Timestamptz>, _>(&batch.time)
        .bind::<Array<SqlUuid>, _>(&batch.id)
        .bind::<Array<Text>, _>(&batch.tenant_id)
        .bind::<Array<Text>, _>(&batch.principal)
        .bind::<Array<Nullable<Text>>, _>(&batch.server)
        .bind::<Array<Nullable<Text>>, _>(&batch.instance)
        .bind::<Array<Nullable<Text>>, _>(&batch.era)
        .bind::<Array<Text>, _>(&batch.method)
        .bind::<Array<Nullable<Text>>, _>(&batch.target)
        .bind::<Array<Nullable<Text>>, _>(&batch.request_id)
        .bind::<Array<Text>, _>(&batch.outcome)
        .bind::<Array<Nullable<Int4>>, _>(&batch.status)
        .bind::<Array<Nullable<Int8>>, _>(&batch.rpc_error_code)
        .bind::<Array<Int8>, _>(&batch.duration_us)
        .bind::<Array<Int8>, _>(&batch.bytes_in)
        .bind::<Array<Int8>, _>(&batch.bytes_out)
        .bind::<Array<Nullable<Text>>, _>(&batch.client_addr)
        .bind::<Array<Nullable<Text>>, _>(&batch.session)
        .bind::<Array<Nullable<Text>>, _>(&batch.trace_id)
        .bind::<Array<Nullable<Text>>, _>(&batch.arguments)
        .bind::<Array<Nullable<Text>>, _>(&batch.proxy_id)
        .execute(conn)
        .await?;
    Ok(written as u64)
}

/// An admin change (or a refused one), written by the store function that makes it, in its transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminRecord {
    pub time: DateTime<Utc>,
    /// UUIDv7 (`Uuid::now_v7()`).
    pub id: Uuid,
    pub tenant_id: String,
    /// `admin-token`, `api-key:<id>`, `user:<id>` (`Principal::label`).
    pub principal: String,
    /// `<HTTP method> <route>`.
    pub method: String,
    /// The changed object, `<kind>:<id>`.
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub outcome: String,
    pub status: Option<i32>,
    pub client_addr: Option<String>,
    pub trace_id: Option<String>,
    /// The object before and after the change (secrets never included).
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// Writes one admin record (`kind = 'admin'`), making its day's partition first when it is missing.
pub async fn insert_admin(conn: &mut AsyncPgConnection, record: &AdminRecord) -> QueryResult<()> {
    ensure_partitions(conn, &BTreeSet::from([record.time.date_naive()])).await?;
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::time.eq(record.time),
            audit_log::id.eq(record.id),
            audit_log::kind.eq("admin"),
            audit_log::tenant_id.eq(&record.tenant_id),
            audit_log::principal.eq(&record.principal),
            audit_log::method.eq(&record.method),
            audit_log::target.eq(&record.target),
            audit_log::request_id.eq(&record.request_id),
            audit_log::outcome.eq(&record.outcome),
            audit_log::status.eq(record.status),
            audit_log::client_addr.eq(&record.client_addr),
            audit_log::trace_id.eq(&record.trace_id),
            audit_log::before.eq(&record.before),
            audit_log::after.eq(&record.after),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The partition holding `day`.
pub fn partition_name(day: NaiveDate) -> String {
    format!("{PARTITION_PREFIX}{}", day.format("%Y%m%d"))
}

fn partition_day(name: &str) -> Option<NaiveDate> {
    let digits = name.strip_prefix(PARTITION_PREFIX)?;
    (digits.len() == 8).then(|| NaiveDate::parse_from_str(digits, "%Y%m%d").ok())?
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Creates the partitions of `days` that do not exist yet; returns those it had to create. One query when
/// they all exist; otherwise the creation runs under an advisory lock, so replicas do not race.
pub async fn ensure_partitions(
    conn: &mut AsyncPgConnection,
    days: &BTreeSet<NaiveDate>,
) -> QueryResult<Vec<NaiveDate>> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = days.iter().map(|d| partition_name(*d)).collect();
    let existing: Vec<Name> =
        diesel::sql_query("SELECT n AS name FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL")
            .bind::<Array<Text>, _>(&names)
            .load(conn)
            .await?;
    let existing: BTreeSet<String> = existing.into_iter().map(|n| n.name).collect();
    let missing: Vec<NaiveDate> =
        days.iter().copied().filter(|d| !existing.contains(&partition_name(*d))).collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    conn.transaction(async |conn| {
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({PARTITION_LOCK})")).execute(conn).await?;
        for day in &missing {
            let next = day.succ_opt().unwrap_or(NaiveDate::MAX);
            // Dates only (no caller text), so the statement is safe to format.
            diesel::sql_query(format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF audit_log \
                 FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')",
                partition_name(*day)
            ))
            .execute(conn)
            .await?;
        }
        QueryResult::Ok(())
    })
    .await?;
    Ok(missing)
}

/// The oldest time still kept.
pub fn cutoff(now: DateTime<Utc>, retention: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| now.checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Drops every daily partition whose whole day is older than now − `retention`; returns their days.
pub async fn drop_expired(conn: &mut AsyncPgConnection, retention: Duration) -> QueryResult<Vec<NaiveDate>> {
    let cutoff = cutoff(Utc::now(), retention);
    let partitions: Vec<Name> = diesel::sql_query(
        "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'audit_log'::regclass",
    )
    .load(conn)
    .await?;
    let mut days: Vec<NaiveDate> = partitions.iter().filter_map(|p| partition_day(&p.name)).collect();
    days.sort_unstable();
    let mut dropped = Vec::new();
    for day in days {
        if day.succ_opt().is_some_and(|next| day_start(next) <= cutoff) {
            diesel::sql_query(format!("DROP TABLE IF EXISTS {}", partition_name(day))).execute(conn).await?;
            dropped.push(day);
        }
    }
    Ok(dropped)
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub created: Vec<NaiveDate>,
    pub dropped: Vec<NaiveDate>,
}

/// The retention and the partitions this process knows exist, shared by every audit write of a replica
/// (held by the hub), so a batch normally costs no partition check at all.
#[derive(Debug)]
pub struct AuditLog {
    retention_secs: AtomicU64,
    known: Mutex<BTreeSet<NaiveDate>>,
    /// Audit batches written at once, over every proxy's stream: at most half the database pool, so that
    /// ingest from many proxies never leaves the REST API without connections.
    writers: tokio::sync::Semaphore,
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl AuditLog {
    pub fn new(retention: Duration) -> Self {
        Self {
            retention_secs: AtomicU64::new(retention.as_secs()),
            known: Mutex::default(),
            // Half the default pool (`--db-pool-size 10`) until `set_pool_size`.
            writers: tokio::sync::Semaphore::new(5),
        }
    }

    /// Sizes the write limit for a database pool of `pool_size` connections (half of it, at least one).
    pub fn set_pool_size(&self, pool_size: u32) {
        let want = (pool_size as usize / 2).max(1);
        let have = self.writers.available_permits();
        if want > have {
            self.writers.add_permits(want - have);
        } else {
            self.writers.forget_permits(have - want);
        }
    }

    /// A place among the concurrent audit writers (waits while half the pool is writing audit batches).
    pub async fn writer(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.writers.acquire().await.expect("the semaphore is never closed")
    }

    /// `--audit-retention`.
    pub fn retention(&self) -> Duration {
        // (`AtomicU64::load` by path: diesel's `RunQueryDsl::load` is in scope.)
        Duration::from_secs(AtomicU64::load(&self.retention_secs, Ordering::Relaxed))
    }

    pub fn set_retention(&self, retention: Duration) {
        self.retention_secs.store(retention.as_secs(), Ordering::Relaxed);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<NaiveDate>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a proxy's batch: expired records counted and left out, the partitions of its days made when
    /// this process does not know them, then one insert.
    pub async fn write_mcp(
        &self,
        conn: &mut AsyncPgConnection,
        proxy_fallback: Option<&str>,
        records: &[AuditRecord],
    ) -> Result<Inserted, WriteError> {
        let batch = McpBatch::from_records(records, proxy_fallback, cutoff(Utc::now(), self.retention()))?;
        self.prepare(conn, &batch.days).await?;
        match insert_mcp(conn, &batch).await {
            // A partition this process knew was dropped since (another replica's retention pass, with
            // another --audit-retention): find out again and retry once.
            Err(error) if no_partition(&error) => {
                self.known().retain(|d| !batch.days.contains(d));
                self.prepare(conn, &batch.days).await?;
                Ok(insert_mcp(conn, &batch).await?)
            }
            outcome => Ok(outcome?),
        }
    }

    async fn prepare(&self, conn: &mut AsyncPgConnection, days: &BTreeSet<NaiveDate>) -> QueryResult<()> {
        let unknown: BTreeSet<NaiveDate> = days.difference(&self.known()).copied().collect();
        if unknown.is_empty() {
            return Ok(());
        }
        ensure_partitions(conn, &unknown).await?;
        self.known().extend(unknown);
        Ok(())
    }

    /// The leader's pass: partitions for yesterday to the day after tomorrow, and the expired ones dropped.
    pub async fn maintain(&self, conn: &mut AsyncPgConnection) -> QueryResult<Maintenance> {
        let today = Utc::now().date_naive();
        let days: BTreeSet<NaiveDate> =
            (-1..=2).filter_map(|d| today.checked_add_signed(chrono::Duration::days(d))).collect();
        let created = ensure_partitions(conn, &days).await?;
        self.known().extend(days);
        let dropped = drop_expired(conn, self.retention()).await?;
        self.known().retain(|d| !dropped.contains(d));
        Ok(Maintenance { created, dropped })
    }
}

/// `no partition of relation "audit_log" found for row`.
fn no_partition(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info)
        if info.message().starts_with("no partition of relation"))
}

/// One stored record as the API shows it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = audit_log, check_for_backend(Pg))]
pub struct AuditRow {
    pub time: DateTime<Utc>,
    pub id: Uuid,
    /// `mcp` or `admin`.
    pub kind: String,
    pub tenant_id: String,
    /// `key:<id>`, `jwt:<issuer>#<subject>`, `anonymous`, `admin-token`, `api-key:<id>`, `user:<id>`; empty
    /// when the caller was not authenticated.
    pub principal: String,
    pub server: Option<String>,
    pub instance: Option<String>,
    pub era: Option<String>,
    /// JSON-RPC method (MCP) or `<HTTP method> <route>` (admin).
    pub method: String,
    /// The tool, prompt or resource (MCP); the changed object (admin).
    pub target: Option<String>,
    pub request_id: Option<String>,
    /// `ok`, `error`, `http_<status>` or the refusal reason.
    pub outcome: String,
    pub status: Option<i32>,
    pub rpc_error_code: Option<i64>,
    pub duration_us: Option<i64>,
    pub bytes_in: Option<i64>,
    pub bytes_out: Option<i64>,
    pub client_addr: Option<String>,
    pub session: Option<String>,
    pub trace_id: Option<String>,
    pub arguments: Option<String>,
    pub proxy_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// The filters of a read; each given one must match exactly. An empty value of a nullable column
/// (`server`, `target`) matches the records without one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    pub tenant_id: Option<String>,
    pub principal: Option<String>,
    pub server: Option<String>,
    pub target: Option<String>,
    pub method: Option<String>,
    pub outcome: Option<String>,
    pub kind: Option<String>,
}

/// Where a page starts: strictly after this `(time, id)` in the order newest first.
pub type Cursor = (DateTime<Utc>, Uuid);

/// Up to `limit` records matching `filter`, newest first (`time DESC, id DESC`), after `cursor`.
pub async fn query(
    conn: &mut AsyncPgConnection,
    filter: &AuditFilter,
    cursor: Option<Cursor>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let mut q = audit_log::table
        .select(AuditRow::as_select())
        .order((audit_log::time.desc(), audit_log::id.desc()))
        .limit(limit)
        .into_boxed();
    if let Some(since) = filter.since {
        q = q.filter(audit_log::time.ge(since));
    }
    if let Some(until) = filter.until {
        q = q.filter(audit_log::time.lt(until));
    }
    if let Some(tenant) = &filter.tenant_id {
        q = q.filter(audit_log::tenant_id.eq(tenant.clone()));
    }
    if let Some(principal) = &filter.principal {
        q = q.filter(audit_log::principal.eq(principal.clone()));
    }
    if let Some(method) = &filter.method {
        q = q.filter(audit_log::method.eq(method.clone()));
    }
    if let Some(outcome) = &filter.outcome {
        q = q.filter(audit_log::outcome.eq(outcome.clone()));
    }
    if let Some(kind) = &filter.kind {
        q = q.filter(audit_log::kind.eq(kind.clone()));
    }
    match filter.server.as_deref() {
        None => {}
        Some("") => q = q.filter(audit_log::server.is_null()),
        Some(server) => q = q.filter(audit_log::server.eq(server.to_owned())),
    }
    match filter.target.as_deref() {
        None => {}
        Some("") => q = q.filter(audit_log::target.is_null()),
        Some(target) => q = q.filter(audit_log::target.eq(target.to_owned())),
    }
    if let Some((time, id)) = cursor {
        // A row comparison, so the (…, time, id) indexes serve it (read backward).
        q = q.filter(
            sql::<Bool>("(audit_log.time, audit_log.id) < (")
                .bind::<Timestamptz, _>(time)
                .sql(", ")
                .bind::<SqlUuid, _>(id)
                .sql(")"),
        );
    }
    q.load(conn).await
}
