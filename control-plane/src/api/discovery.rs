//! `/api/v1/discovery/*`: which servers offer given tools, or resources matching patterns, from the
//! capabilities discovery stored — among the servers of the tenants the administrator manages.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::servers::list::{bounded_list, reject_nul, split_list};
use super::servers::views::{self, Include};
use super::{ApiError, AppState};
use crate::auth::Admin;
use crate::db::schema::servers;
use crate::db::store::{self, capabilities};
use crate::model::ServerRow;

/// Query of both discovery endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryQuery {
    /// Comma-separated tool names; a server must offer every one (tools endpoint).
    pub tools: Option<String>,
    /// Comma-separated URI patterns (`*` matches anything; a pattern without `*` is a prefix).
    pub resources: Option<String>,
    /// Comma-separated tags a server must carry.
    pub tags: Option<String>,
    /// Narrows a platform administrator's search to one tenant (a tenant administrator's is its own).
    pub tenant_id: Option<String>,
}

/// A URI pattern as SQL LIKE: `%`, `_` and `\` escaped, `*` → `%`, a prefix match without `*`.
pub fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 1);
    for c in pattern.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '*' => out.push('%'),
            c => out.push(c),
        }
    }
    if !pattern.contains('*') {
        out.push('%');
    }
    out
}

/// Whether `uri` matches `pattern` by the same rule as `like_pattern`.
pub fn matches(pattern: &str, uri: &str) -> bool {
    if !pattern.contains('*') {
        return uri.starts_with(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !uri.starts_with(first) || uri.len() < first.len() + last.len() || !uri.ends_with(last) {
        return false;
    }
    let mut rest = &uri[first.len()..uri.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

async fn servers_by_id(
    state: &AppState,
    ids: Vec<Uuid>,
    q: &DiscoveryQuery,
    tenant: Option<&str>,
    include: Include,
) -> Result<Vec<crate::model::ServerView>, ApiError> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let mut conn = state.conn().await?;
    let mut sql = servers::table
        .filter(servers::id.eq_any(ids))
        .order(servers::name.asc())
        .select(ServerRow::as_select())
        .into_boxed();
    if let Some(tenant) = tenant {
        sql = sql.filter(store::in_tenant(tenant));
    }
    let tags = split_list(q.tags.as_deref());
    if !tags.is_empty() {
        sql = sql.filter(servers::tags.contains(tags));
    }
    let rows: Vec<ServerRow> = sql.load(&mut conn).await.map_err(ApiError::internal)?;
    views::build(&mut conn, rows, include).await.map_err(ApiError::internal)
}

fn summary(view: &crate::model::ServerView, key: &str, items: Vec<Value>) -> Value {
    json!({
        "id": view.id, "name": view.name, "endpoint_url": view.endpoint_url, "tenant_id": view.tenant_id,
        "tags": view.tags, "health_status": view.health_status, key: items,
    })
}

/// `GET /api/v1/discovery/tools?tools=a,b`: servers offering all of them, with those tools.
pub async fn tools(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<DiscoveryQuery>,
) -> Result<HttpResponse, ApiError> {
    reject_nul(&[&query.tools, &query.resources, &query.tags, &query.tenant_id])?;
    let tenant = admin.scope(query.tenant_id.as_deref());
    let names = bounded_list(query.tools.as_deref(), "tools")?;
    let ids = {
        let mut conn = state.conn().await?;
        if names.is_empty() {
            store::list_in(&mut conn, tenant.as_deref())
                .await
                .map_err(ApiError::internal)?
                .into_iter()
                .map(|s| s.id)
                .collect()
        } else {
            capabilities::servers_with_tools(&mut conn, &names).await.map_err(ApiError::internal)?
        }
    };
    let include = Include { include_tools: true, ..Default::default() };
    let found = servers_by_id(&state, ids, &query, tenant.as_deref(), include).await?;
    let servers: Vec<Value> = found
        .into_iter()
        .filter(|v| v.tools.as_ref().is_some_and(|t| !t.is_empty()))
        .map(|v| {
            let tools: Vec<Value> = v
                .tools
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| {
                    names.is_empty()
                        || t.get("name").and_then(Value::as_str).is_some_and(|n| names.iter().any(|w| w == n))
                })
                .collect();
            summary(&v, "tools", tools)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"tools": names, "servers": servers})))
}

/// `GET /api/v1/discovery/resources?resources=file://*,ui://`: servers with a resource or template URI
/// matching any pattern, with the matches.
pub async fn resources(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<DiscoveryQuery>,
) -> Result<HttpResponse, ApiError> {
    reject_nul(&[&query.tools, &query.resources, &query.tags, &query.tenant_id])?;
    let tenant = admin.scope(query.tenant_id.as_deref());
    let mut patterns = bounded_list(query.resources.as_deref(), "resources")?;
    if patterns.is_empty() {
        patterns.push("*".to_owned());
    }
    let mut ids = Vec::new();
    {
        let mut conn = state.conn().await?;
        for pattern in &patterns {
            ids.extend(
                capabilities::servers_with_resources(&mut conn, &like_pattern(pattern))
                    .await
                    .map_err(ApiError::internal)?,
            );
        }
    }
    ids.sort();
    ids.dedup();
    let include = Include { include_resources: true, ..Default::default() };
    let found = servers_by_id(&state, ids, &query, tenant.as_deref(), include).await?;
    let uri = |item: &Value, key: &str| {
        item.get(key).and_then(Value::as_str).map(str::to_owned).unwrap_or_default()
    };
    let servers: Vec<Value> = found
        .into_iter()
        .map(|v| {
            let mut hits: Vec<Value> = v
                .resources
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| patterns.iter().any(|p| matches(p, &uri(r, "uri"))))
                .collect();
            hits.extend(
                v.resource_templates
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| patterns.iter().any(|p| matches(p, &uri(r, "uriTemplate")))),
            );
            summary(&v, "resources", hits)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"resources": patterns, "servers": servers})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(like_pattern("file://a_b%"), "file://a\\_b\\%%");
        assert_eq!(like_pattern("demo://*/x"), "demo://%/x");
        assert!(matches("demo://resource/", "demo://resource/static/1"));
        assert!(matches("*static*", "demo://resource/static/1"));
        assert!(matches("demo://*/1", "demo://resource/static/1"));
        assert!(!matches("demo://*/2", "demo://resource/static/1"));
        assert!(matches("*", "anything"));
    }
}
