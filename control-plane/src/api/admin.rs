//! `GET /api/v1/admin/stats`: servers by health status, transport and tenant, instances by status and
//! discovered capabilities, of the tenants the administrator manages; for a platform administrator also
//! what every tenant shares (the routing version, this replica's part: leader or not, proxies connected).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::servers::views::{self, Include};
use super::{ApiError, AppState};
use crate::auth::Admin;
use crate::db::store;
use crate::model::HealthStatus;

fn counts<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for key in keys {
        *map.entry(key.to_owned()).or_insert(0) += 1;
    }
    map
}

/// `GET /api/v1/admin/stats`.
pub async fn stats(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<super::extract::TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.scope(&admin)?;
    let mut conn = state.conn().await?;
    let rows = store::list_in(&mut conn, tenant.as_deref()).await.map_err(ApiError::internal)?;
    let all = Include { include_tools: true, include_resources: true, include_prompts: true };
    let servers = views::build(&mut conn, rows, all).await.map_err(ApiError::internal)?;
    let version = store::routing_version(&mut conn).await.map_err(ApiError::internal)?;
    let leader = store::health::leader(&mut conn).await.map_err(ApiError::internal)?;
    drop(conn);

    let mut by_status: BTreeMap<String, usize> =
        [HealthStatus::Healthy, HealthStatus::Unhealthy, HealthStatus::Unknown]
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
    for s in &servers {
        *by_status.entry(s.health_status.as_str().to_owned()).or_insert(0) += 1;
    }
    let mut instances_by_status = by_status.keys().map(|k| (k.clone(), 0usize)).collect::<BTreeMap<_, _>>();
    for i in servers.iter().flat_map(|s| &s.instances) {
        *instances_by_status.entry(i.health_status.as_str().to_owned()).or_insert(0) += 1;
    }
    let len = |f: fn(&crate::model::ServerView) -> &Option<Vec<serde_json::Value>>| -> usize {
        servers.iter().map(|s| f(s).as_ref().map_or(0, Vec::len)).sum()
    };
    let mut body = json!({
        "total_servers": servers.len(),
        "servers_by_status": by_status,
        "servers_by_transport": counts(servers.iter().map(|s| s.transport_type.as_str())),
        "servers_by_tenant": counts(servers.iter().map(|s| s.tenant_id.as_deref().unwrap_or("(none)"))),
        "total_instances": servers.iter().map(|s| s.instances.len()).sum::<usize>(),
        "instances_by_status": instances_by_status,
        "capabilities": {
            "tools": len(|s| &s.tools),
            "resources": len(|s| &s.resources),
            "resource_templates": len(|s| &s.resource_templates),
            "prompts": len(|s| &s.prompts),
            "servers_discovered": servers.iter().filter(|s| s.discovery.as_ref().is_some_and(|d| !d["discovered_at"].is_null())).count(),
        },
    });
    // The routing version, the replicas and the proxies are shared by every tenant.
    if admin.tenant().is_none() {
        body["routing_version"] = json!(version);
        body["health_checks"] = json!({
            "replica_id": state.replica_id,
            "leader": state.is_leader.load(Ordering::SeqCst),
            "leader_replica_id": leader.as_ref().map(|(r, _)| r),
            "leader_since": leader.as_ref().map(|(_, since)| since),
        });
        body["proxies_connected"] = json!(state.hub.proxies().len());
    }
    Ok(HttpResponse::Ok().json(body))
}
