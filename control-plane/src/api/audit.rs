//! `GET /api/v1/audit`: the audit records of the tenants the administrator manages, newest first, filtered
//! on exact values, paged by an opaque keyset cursor, as JSON pages or one streamed CSV document.
//!
//! CSV (`format=csv`, or `Accept: text/csv` without `format`) streams every matching row — after `cursor`
//! when one is given, at most `limit` rows when one is given (any positive number there; JSON pages stop
//! at 1000) — read internally by keyset in chunks of [`CHUNK`] rows, so memory stays bounded whatever the
//! size. A database failure after the first chunk cuts the response short (no terminating chunk), so a
//! client cannot mistake a partial export for a whole one.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::servers::list::reject_nul;
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::DbPool;
use crate::db::store::audit::{self as store, AuditFilter, AuditRow, Cursor};

/// Default and largest JSON page.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Rows read per query while a CSV document streams.
pub const CHUNK: usize = 1000;

/// Query parameters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// RFC 3339; inclusive.
    pub since: Option<String>,
    /// RFC 3339; exclusive.
    pub until: Option<String>,
    pub tenant_id: Option<String>,
    pub principal: Option<String>,
    pub server: Option<String>,
    /// The tool, prompt or resource (the `target` column).
    pub tool: Option<String>,
    pub method: Option<String>,
    pub outcome: Option<String>,
    /// `mcp` or `admin`.
    pub kind: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidQuery, message)
}

fn time(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(format!("{name} {raw:?} is not an RFC 3339 date-time: {e}")))
    })
    .transpose()
}

impl AuditQuery {
    /// The filter `admin` may read: a tenant administrator's own tenant (403 naming another), a platform
    /// administrator's every tenant or the one named.
    fn filter(&self, admin: &Admin) -> Result<AuditFilter, ApiError> {
        reject_nul(&[
            &self.tenant_id,
            &self.principal,
            &self.server,
            &self.tool,
            &self.method,
            &self.outcome,
            &self.kind,
        ])?;
        if let (Some(own), Some(asked)) = (admin.tenant(), self.tenant_id.as_deref())
            && own != asked
        {
            return Err(ApiError::new(
                Code::InsufficientPermissions,
                format!(
                    "an administrator of tenant {own:?} cannot read the audit records of tenant {asked:?}"
                ),
            ));
        }
        if let Some(kind) = self.kind.as_deref().filter(|k| !matches!(*k, "mcp" | "admin")) {
            return Err(bad(format!("kind {kind:?} is not mcp or admin")));
        }
        let filter = AuditFilter {
            since: time("since", self.since.as_deref())?,
            until: time("until", self.until.as_deref())?,
            tenant_id: admin.scope(self.tenant_id.as_deref()),
            principal: self.principal.clone(),
            server: self.server.clone(),
            target: self.tool.clone(),
            method: self.method.clone(),
            outcome: self.outcome.clone(),
            kind: self.kind.clone(),
        };
        Ok(filter)
    }

    /// Whether the answer is CSV: `format` decides, else the `Accept` header.
    fn csv(&self, req: &HttpRequest) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            Some("csv") => Ok(true),
            Some("json") => Ok(false),
            Some(other) => Err(bad(format!("format {other:?} is not json or csv"))),
            None => Ok(req.headers().get_all(header::ACCEPT).filter_map(|v| v.to_str().ok()).any(|v| {
                v.split(',').any(|part| {
                    part.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
                })
            })),
        }
    }
}

/// The cursor of the page after `row`: base64url of its time (microseconds, big-endian) and id.
pub fn encode_cursor(row: &AuditRow) -> String {
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&row.time.timestamp_micros().to_be_bytes());
    bytes[8..].copy_from_slice(row.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(raw: &str) -> Result<Cursor, ApiError> {
    let invalid = || bad("cursor is not a cursor this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let bytes: [u8; 24] = bytes.try_into().map_err(|_| invalid())?;
    let micros = i64::from_be_bytes(bytes[..8].try_into().map_err(|_| invalid())?);
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    let id = Uuid::from_slice(&bytes[8..]).map_err(|_| invalid())?;
    Ok((time, id))
}

/// `GET /api/v1/audit`.
pub async fn list(
    admin: Admin,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let filter = q.filter(&admin)?;
    let cursor = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if q.limit == Some(0) {
        return Err(bad("limit must be at least 1"));
    }
    if q.csv(&req)? {
        return csv(state.pool.clone(), filter, cursor, q.limit).await;
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let mut conn = state.conn().await?;
    // One row more than the page tells whether another page follows.
    let mut items =
        store::query(&mut conn, &filter, cursor, limit as i64 + 1).await.map_err(ApiError::internal)?;
    let next_cursor = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(encode_cursor)
    });
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items, "next_cursor": next_cursor.flatten() })))
}

/// The CSV columns, in order: every field of [`AuditRow`].
pub const CSV_HEADER: &str = "time,id,kind,tenant_id,principal,server,instance,era,method,target,request_id,\
    outcome,status,rpc_error_code,duration_us,bytes_in,bytes_out,client_addr,session,trace_id,arguments,\
    proxy_id,before,after\r\n";

/// Streams the CSV document. The first chunk is read before answering, so a database that cannot be
/// reached is still a 503 with an error body.
async fn csv(
    pool: DbPool,
    filter: AuditFilter,
    cursor: Option<Cursor>,
    limit: Option<usize>,
) -> Result<HttpResponse, ApiError> {
    let mut reader = CsvReader { pool, filter, cursor, remaining: limit.unwrap_or(usize::MAX), done: false };
    let mut first = CSV_HEADER.as_bytes().to_vec();
    first.extend_from_slice(&reader.next_chunk().await?);
    let rest = futures_util::stream::unfold(reader, |mut reader| async move {
        if reader.done {
            return None;
        }
        let chunk = reader.next_chunk().await;
        // An error ends the body there (actix then drops the connection).
        reader.done |= chunk.is_err();
        Some((chunk.map(Bytes::from), reader))
    });
    let body = futures_util::StreamExt::chain(
        futures_util::stream::once(std::future::ready(Ok::<_, ApiError>(Bytes::from(first)))),
        rest,
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""))
        .streaming(body))
}

/// Where a CSV document's reading stands.
struct CsvReader {
    pool: DbPool,
    filter: AuditFilter,
    cursor: Option<Cursor>,
    remaining: usize,
    done: bool,
}

impl CsvReader {
    /// The next chunk's rows as CSV lines, a pooled connection held only for its query.
    async fn next_chunk(&mut self) -> Result<Vec<u8>, ApiError> {
        let size = CHUNK.min(self.remaining);
        let rows = {
            let mut conn = self.pool.get().await.map_err(ApiError::database_unavailable)?;
            store::query(&mut conn, &self.filter, self.cursor, size as i64)
                .await
                .map_err(ApiError::internal)?
        };
        self.remaining -= rows.len();
        self.done = rows.len() < size || self.remaining == 0;
        self.cursor = rows.last().map(|r| (r.time, r.id));
        let mut out = Vec::with_capacity(rows.len() * 256);
        for row in &rows {
            csv_row(&mut out, row);
        }
        Ok(out)
    }
}

/// One record as an RFC 4180 line (CRLF); NULL is an empty field, `before`/`after` are JSON text, the time
/// is written as in JSON.
fn csv_row(out: &mut Vec<u8>, r: &AuditRow) {
    let number = |n: Option<i64>| n.map(|n| n.to_string());
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(ToString::to_string);
    let fields: [Option<String>; 24] = [
        Some(r.time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Some(r.id.to_string()),
        Some(r.kind.clone()),
        Some(r.tenant_id.clone()),
        Some(r.principal.clone()),
        r.server.clone(),
        r.instance.clone(),
        r.era.clone(),
        Some(r.method.clone()),
        r.target.clone(),
        r.request_id.clone(),
        Some(r.outcome.clone()),
        number(r.status.map(i64::from)),
        number(r.rpc_error_code),
        number(r.duration_us),
        number(r.bytes_in),
        number(r.bytes_out),
        r.client_addr.clone(),
        r.session.clone(),
        r.trace_id.clone(),
        r.arguments.clone(),
        r.proxy_id.clone(),
        json(&r.before),
        json(&r.after),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(field) = field {
            csv_field(out, field);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A field, quoted (quotes doubled) when it holds a comma, a quote or a line break.
fn csv_field(out: &mut Vec<u8>, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            time: DateTime::from_timestamp_micros(1_795_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
            kind: "mcp".into(),
            tenant_id: "acme".into(),
            principal: "jwt:https://idp#a,b".into(),
            server: None,
            instance: None,
            era: None,
            method: "tools/call".into(),
            target: Some("say \"hi\"\r\nthere".into()),
            request_id: None,
            outcome: "ok".into(),
            status: Some(200),
            rpc_error_code: None,
            duration_us: Some(5),
            bytes_in: None,
            bytes_out: None,
            client_addr: None,
            session: None,
            trace_id: None,
            arguments: None,
            proxy_id: None,
            before: None,
            after: Some(serde_json::json!({"a": 1})),
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let row = row();
        assert_eq!(decode_cursor(&encode_cursor(&row)).expect("decodes"), (row.time, row.id));
        for bad in ["", "x", "AAAA", &URL_SAFE_NO_PAD.encode([0u8; 25]), "!!!!"] {
            assert_eq!(decode_cursor(bad).expect_err(bad).code(), Code::InvalidQuery, "{bad}");
        }
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let mut out = Vec::new();
        let row = row();
        csv_row(&mut out, &row);
        let line = String::from_utf8(out).expect("utf-8");
        let expected = format!(
            "2026-11-18T11:06:40.123456Z,{},mcp,acme,\"jwt:https://idp#a,b\",,,,tools/call,\
             \"say \"\"hi\"\"\r\nthere\",,ok,200,,5,,,,,,,,,\"{{\"\"a\"\":1}}\"\r\n",
            row.id
        );
        assert_eq!(line, expected);
        assert_eq!(CSV_HEADER.split(',').count(), 24);
    }
}
