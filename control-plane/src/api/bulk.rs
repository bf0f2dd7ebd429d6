//! Bulk registry as YAML: `GET /api/v1/admin/export` writes every server in its canonical registration
//! form; `POST /api/v1/admin/import` applies such a document idempotently (servers matched by name, all in
//! one transaction), `?dry_run=true` only reports the diff, `?prune=true` also deletes unlisted servers.

use std::collections::{BTreeMap, HashSet};

use actix_web::{HttpResponse, web};
use diesel_async::AsyncConnection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::servers::{ServerRequest, check_spec, from_store, publish};
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::store::{self, StoreError};
use crate::model::{ServerRow, ServerSpec};

/// The YAML document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryDoc {
    #[serde(default)]
    pub servers: Vec<ServerRequest>,
}

/// Query of the import.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub prune: bool,
}

/// Compares two canonical forms ignoring instance order (PUT keeps the stored order anyway).
fn comparable(r: &ServerRequest) -> Value {
    let mut r = r.clone();
    if let Some(list) = &mut r.instances {
        list.sort_by(|a, b| a.endpoint_url.cmp(&b.endpoint_url));
    }
    serde_json::to_value(r).unwrap_or_default()
}

/// Field-level differences between two canonical forms.
fn diff(from: &Value, to: &Value) -> Vec<Value> {
    let keys: std::collections::BTreeSet<&String> =
        from.as_object().into_iter().chain(to.as_object()).flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .filter(|k| from.get(*k) != to.get(*k))
        .map(|k| json!({"field": k, "from": from.get(k), "to": to.get(k)}))
        .collect()
}

async fn registry(state: &AppState) -> Result<Vec<(ServerRow, ServerRequest)>, ApiError> {
    let mut conn = state.conn().await?;
    let servers = store::list(&mut conn).await.map_err(ApiError::internal)?;
    let mut instances = store::instances_of(&mut conn, None).await.map_err(ApiError::internal)?;
    Ok(servers
        .into_iter()
        .map(|s| {
            let own = instances.remove(&s.id).unwrap_or_default();
            let request = ServerRequest::from_stored(&s, &own);
            (s, request)
        })
        .collect())
}

/// `GET /api/v1/admin/export`: the registry as YAML (`application/yaml`).
pub async fn export(_admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let doc = RegistryDoc { servers: registry(&state).await?.into_iter().map(|(_, r)| r).collect() };
    let yaml = serde_yaml::to_string(&doc).map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type("application/yaml").body(yaml))
}

enum Action {
    Create(ServerSpec),
    Update(uuid::Uuid, ServerSpec),
    Delete(uuid::Uuid),
}

/// `POST /api/v1/admin/import`: applies a YAML (or JSON) registry document.
pub async fn import(
    _admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ImportQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let doc: RegistryDoc = serde_yaml::from_slice(&body).map_err(|e| {
        ApiError::new(Code::InvalidImport, format!("the document is not a valid registry: {e}"))
    })?;
    let mut names = HashSet::new();
    let mut specs = Vec::with_capacity(doc.servers.len());
    for (i, request) in doc.servers.into_iter().enumerate() {
        let name = request.name.clone();
        if !names.insert(name.clone()) {
            return Err(ApiError::new(
                Code::InvalidImport,
                format!("servers[{i}]: the name {name:?} is listed twice"),
            ));
        }
        let at = |e: ApiError| ApiError::new(e.code(), format!("servers[{i}] ({name:?}): {}", e.message()));
        let spec = request.validate().map_err(at)?;
        check_spec(&state, &spec).await.map_err(at)?;
        specs.push(spec);
    }
    let current: BTreeMap<String, (ServerRow, ServerRequest)> =
        registry(&state).await?.into_iter().map(|(row, req)| (row.name.clone(), (row, req))).collect();
    let (mut actions, mut changes, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    for spec in specs {
        let wanted = comparable(&ServerRequest::from_spec(&spec));
        match current.get(&spec.name) {
            None => {
                changes.push(
                    json!({"name": spec.name, "action": "create", "diff": diff(&Value::Null, &wanted)}),
                );
                actions.push(Action::Create(spec));
            }
            Some((row, existing)) => {
                let existing = comparable(existing);
                if existing == wanted {
                    unchanged.push(spec.name.clone());
                } else {
                    changes.push(
                        json!({"name": spec.name, "action": "update", "diff": diff(&existing, &wanted)}),
                    );
                    actions.push(Action::Update(row.id, spec));
                }
            }
        }
    }
    if query.prune {
        for (name, (row, _)) in &current {
            if !names.contains(name) {
                changes.push(json!({"name": name, "action": "delete", "diff": []}));
                actions.push(Action::Delete(row.id));
            }
        }
    }
    let count = |what: &str| changes.iter().filter(|c| c["action"] == what).count();
    let summary = json!({
        "dry_run": query.dry_run,
        "created": count("create"), "updated": count("update"), "deleted": count("delete"),
        "unchanged": unchanged.len(), "changes": changes,
    });
    if query.dry_run || actions.is_empty() {
        return Ok(HttpResponse::Ok().json(summary));
    }
    let mut conn = state.conn().await?;
    let created: Vec<(uuid::Uuid, bool)> = conn
        .transaction(async |conn| {
            let mut created = Vec::new();
            for action in &actions {
                match action {
                    Action::Create(spec) => {
                        let ((server, _), _) = store::create(conn, spec).await?;
                        created.push((server.id, spec.auto_discover));
                    }
                    Action::Update(id, spec) => drop(store::replace(conn, *id, spec).await?),
                    Action::Delete(id) => drop(store::delete(conn, *id).await?),
                }
            }
            Ok::<_, StoreError>(created)
        })
        .await
        .map_err(from_store)?;
    drop(conn);
    tracing::info!(changes = actions.len(), "Imported a registry document.");
    publish(&state).await;
    for (id, discover) in created {
        if discover {
            state.discoverer.spawn(id);
        }
    }
    Ok(HttpResponse::Ok().json(summary))
}
