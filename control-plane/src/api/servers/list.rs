//! `GET /api/v1/servers`: filters (tenant, health status, tags, transport, name), offset pagination, and
//! the optional capability lists. The body stays a bare array; `X-Total-Count` and a `Link: rel="next"`
//! header describe the pages.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Deserialize;

use super::views::{self, Include};
use crate::api::{ApiError, AppState, Code};
use crate::auth::ServerReader;
use crate::db::schema::servers;
use crate::model::{HealthStatus, ServerRow, ServerView, TransportType};

/// Default and largest page size.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// Query parameters of the list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub tenant_id: Option<String>,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health_status: Option<String>,
    /// Comma-separated; a server must carry every one.
    pub tags: Option<String>,
    /// `streamable_http` (or `http`) or `sse`.
    pub transport_type: Option<String>,
    /// Exact server name.
    pub name: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    #[serde(default)]
    pub include_tools: bool,
    #[serde(default)]
    pub include_resources: bool,
    #[serde(default)]
    pub include_prompts: bool,
}

fn bad(message: String) -> ApiError {
    ApiError::new(Code::InvalidQuery, message)
}

/// PostgreSQL text cannot hold NUL, so a filter with one can match nothing: refuse it.
pub fn reject_nul(values: &[&Option<String>]) -> Result<(), ApiError> {
    if values.iter().any(|v| v.as_deref().is_some_and(|v| v.contains('\0'))) {
        return Err(bad("query values must not contain NUL characters".into()));
    }
    Ok(())
}

/// A comma-separated list, trimmed, without empty or repeated entries (first place kept).
/// Most entries a comma-separated query value may hold: each costs the database a query or a condition.
pub const MAX_LIST_ITEMS: usize = 50;

/// [`split_list`] refusing more than [`MAX_LIST_ITEMS`] entries in the query parameter `name`.
pub fn bounded_list(raw: Option<&str>, name: &str) -> Result<Vec<String>, ApiError> {
    let list = split_list(raw);
    if list.len() > MAX_LIST_ITEMS {
        return Err(bad(format!(
            "{name} lists {} values; at most {MAX_LIST_ITEMS} are accepted",
            list.len()
        )));
    }
    Ok(list)
}

pub fn split_list(raw: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in raw.unwrap_or_default().split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !out.iter().any(|seen| seen == item) {
            out.push(item.to_owned());
        }
    }
    out
}

/// `GET /api/v1/servers`.
pub async fn list(
    reader: ServerReader,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    reject_nul(&[&q.tenant_id, &q.health_status, &q.tags, &q.transport_type, &q.name])?;
    let health = q
        .health_status
        .as_deref()
        .map(|h| {
            HealthStatus::parse(h)
                .ok_or_else(|| bad(format!("health_status {h:?} is not healthy, unhealthy or unknown")))
        })
        .transpose()?;
    let transport = q
        .transport_type
        .as_deref()
        .map(|t| {
            TransportType::parse(t).ok_or_else(|| {
                bad(format!("transport_type {t:?} is not streamable_http, sse, websocket or stdio"))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let offset = q.offset.unwrap_or(0);
    let tags = split_list(q.tags.as_deref());

    let mut conn = state.conn().await?;
    // A tenant administrator or a server owner sees its own tenant only, whatever the query asks.
    let tenant = reader.tenant().map(str::to_owned).or(q.tenant_id.clone());
    let filtered = || {
        let mut sql = servers::table.into_boxed();
        if let Some(tenant) = &tenant {
            if tenant == crate::model::DEFAULT_TENANT {
                sql = sql.filter(servers::tenant_id.eq(tenant.clone()).or(servers::tenant_id.is_null()));
            } else {
                sql = sql.filter(servers::tenant_id.eq(tenant.clone()));
            }
        }
        if let Some(t) = transport {
            sql = sql.filter(servers::transport_type.eq(t.as_str()));
        }
        if let Some(name) = &q.name {
            sql = sql.filter(servers::name.eq(name.clone()));
        }
        if !tags.is_empty() {
            sql = sql.filter(servers::tags.contains(tags.clone()));
        }
        sql
    };
    let ordered = || filtered().select(ServerRow::as_select()).order(servers::name.asc());
    let (total, page): (usize, Vec<(ServerRow, ServerView)>) = match health {
        // Without a health filter the database pages: only the page's rows are read and built.
        None => {
            let total: i64 = filtered().count().get_result(&mut conn).await.map_err(ApiError::internal)?;
            let rows: Vec<ServerRow> = ordered()
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .offset(i64::try_from(offset).unwrap_or(i64::MAX))
                .load(&mut conn)
                .await
                .map_err(ApiError::internal)?;
            let views = views::build(&mut conn, rows.clone(), Include::default())
                .await
                .map_err(ApiError::internal)?;
            (usize::try_from(total).unwrap_or(0), rows.into_iter().zip(views).collect())
        }
        // Health is derived from the instances, so it is filtered after building the (cheap) views.
        Some(h) => {
            let rows: Vec<ServerRow> = ordered().load(&mut conn).await.map_err(ApiError::internal)?;
            let all = views::build(&mut conn, rows.clone(), Include::default())
                .await
                .map_err(ApiError::internal)?;
            let matching: Vec<_> = rows.into_iter().zip(all).filter(|(_, v)| v.health_status == h).collect();
            (matching.len(), matching.into_iter().skip(offset).take(limit).collect())
        }
    };
    let include = Include {
        include_tools: q.include_tools,
        include_resources: q.include_resources,
        include_prompts: q.include_prompts,
    };
    let body = if include == Include::default() {
        page.into_iter().map(|(_, v)| v).collect()
    } else {
        views::build(&mut conn, page.into_iter().map(|(r, _)| r).collect(), include)
            .await
            .map_err(ApiError::internal)?
    };
    let mut response = HttpResponse::Ok();
    response.insert_header(("X-Total-Count", total.to_string()));
    if offset.saturating_add(limit) < total {
        let next = next_link(&req, offset.saturating_add(limit));
        response.insert_header(("Link", format!("<{next}>; rel=\"next\"")));
    }
    Ok(response.json(body))
}

/// The request's own path and query with `offset` replaced.
fn next_link(req: &HttpRequest, offset: usize) -> String {
    let kept: Vec<&str> =
        req.query_string().split('&').filter(|p| !p.is_empty() && !p.starts_with("offset=")).collect();
    let mut query = kept.join("&");
    if !query.is_empty() {
        query.push('&');
    }
    format!("{}?{query}offset={offset}", req.path())
}
