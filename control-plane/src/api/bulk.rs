//! Bulk registry as YAML: `GET /api/v1/admin/export` writes every server in its canonical registration
//! form; `POST /api/v1/admin/import` applies such a document idempotently (servers matched by name, all in
//! one transaction), `?dry_run=true` only reports the diff, `?prune=true` also deletes unlisted servers.
//!
//! Both are scoped like every other route: a tenant administrator exports its own tenant's servers, and
//! its import may only create, update or prune servers of its own tenant (a server naming another tenant is
//! 403, one whose name another tenant's server holds 409, and nothing is written).
//!
//! Upstream credentials are exported as set (type and header) without their value; an imported
//! `upstream_auth` without a value keeps the stored one, and one with a value is compared with the stored
//! secret (opened, never shown) to tell an update from no change. A stdio instance's `secret_env` is
//! exported as its names, and imported the same way: a name alone keeps the stored value.

use std::collections::{BTreeMap, HashSet};

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audited::{self, Audit, Target, audited};
use super::servers::{InstanceRequest, ServerRequest, check_secrets, check_spec, from_store, publish};
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::store;
use crate::model::{
    CredentialIndex, CredentialRow, InstanceRow, SecretInput, ServerRow, ServerSpec, UpstreamAuthSpec,
};

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
        list.sort_by_key(InstanceRequest::endpoint);
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

/// A stored server: its row, instances and canonical request.
struct Stored {
    row: ServerRow,
    instances: Vec<InstanceRow>,
    request: ServerRequest,
}

/// The stored servers of `tenant` (every tenant's when `None`).
async fn registry(
    state: &AppState,
    tenant: Option<&str>,
) -> Result<(Vec<Stored>, CredentialIndex), ApiError> {
    let mut conn = state.conn().await?;
    let servers = store::list_in(&mut conn, tenant).await.map_err(ApiError::internal)?;
    let mut instances = store::instances_of(&mut conn, None).await.map_err(ApiError::internal)?;
    let credentials = store::upstream_auth::all(&mut conn).await.map_err(ApiError::internal)?;
    let stored = servers
        .into_iter()
        .map(|row| {
            let instances = instances.remove(&row.id).unwrap_or_default();
            let request = ServerRequest::from_stored(&row, &instances, &credentials);
            Stored { row, instances, request }
        })
        .collect();
    Ok((stored, credentials))
}

/// Diff entries for the secrets `spec` sets that differ from the stored ones (values never shown), or
/// the refusal of a credential without value where none is stored to keep.
fn secret_changes(
    state: &AppState,
    spec: &ServerSpec,
    stored: Option<&Stored>,
    credentials: &CredentialIndex,
) -> Result<Vec<Value>, ApiError> {
    let key = state.secrets.as_ref();
    let mut owners: Vec<(String, &UpstreamAuthSpec, Option<&CredentialRow>)> = vec![(
        "upstream_auth".to_owned(),
        &spec.upstream_auth,
        stored.and_then(|s| credentials.servers.get(&s.row.id)),
    )];
    for instance in &spec.instances {
        let row = stored
            .and_then(|s| s.instances.iter().find(|i| i.endpoint_url == instance.endpoint_url))
            .and_then(|i| credentials.instances.get(&i.id));
        let field = format!("instances[{}].upstream_auth", instance.endpoint_url);
        owners.push((field, &instance.upstream_auth, row));
    }
    let mut changes = secret_env_changes(spec, stored, credentials, key)?;
    for (field, auth, row) in owners {
        if auth.kind().is_none() {
            continue;
        }
        let same = match row {
            // A stored secret that cannot be opened (another key) is replaced, not compared.
            Some(row) => row.matches(auth, key).unwrap_or(false),
            None => false,
        };
        match (auth.new_secret(), row) {
            (None, row) if row.is_none_or(|r| Some(r.kind.as_str()) != auth.kind()) => {
                return Err(ApiError::new(
                    Code::InvalidUpstreamAuth,
                    format!(
                        "{field} has no value and none is stored to keep (exports never carry secrets): \
                         give {field}.value"
                    ),
                ));
            }
            (Some(_), _) if !same => {
                changes.push(
                    json!({"field": format!("{field}.value"), "from": "(sealed)", "to": "(new value)"}),
                );
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// Diff entries for the stdio secret environment values `spec` gives that differ from the stored ones
/// (values never shown), or the refusal of a name kept without a stored value.
fn secret_env_changes(
    spec: &ServerSpec,
    stored: Option<&Stored>,
    credentials: &CredentialIndex,
    key: Option<&crate::secrets::SecretsKey>,
) -> Result<Vec<Value>, ApiError> {
    let mut changes = Vec::new();
    for instance in &spec.instances {
        let Some(command) = &instance.command else { continue };
        let row = stored
            .and_then(|s| s.instances.iter().find(|i| i.endpoint_url == instance.endpoint_url))
            .and_then(|i| credentials.secret_env.get(&i.id));
        let names = row.map(CredentialRow::secret_env_names).unwrap_or_default();
        // A stored environment that cannot be opened (another key) is replaced, not compared.
        let values = row.and_then(|r| r.secret_env(key).ok()).unwrap_or_default();
        for (name, input) in &command.secret_env {
            let field = format!("instances[{}].command.secret_env.{name}", instance.endpoint_url);
            match input {
                SecretInput::Keep if !names.contains(name) => {
                    return Err(ApiError::new(
                        Code::InvalidCommand,
                        format!(
                            "{field} has no value and none is stored to keep (exports never carry secrets): give \
                             its value"
                        ),
                    ));
                }
                SecretInput::New(value) if values.get(name) != Some(value) => {
                    changes.push(json!({"field": field, "from": "(sealed)", "to": "(new value)"}));
                }
                _ => {}
            }
        }
    }
    Ok(changes)
}

/// `GET /api/v1/admin/export`: the registry of the tenants the administrator manages as YAML
/// (`application/yaml`).
pub async fn export(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<super::extract::TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.scope(&admin)?;
    let stored = registry(&state, tenant.as_deref()).await?.0;
    let doc = RegistryDoc { servers: stored.into_iter().map(|s| s.request).collect() };
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
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<ImportQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = super::extract::read_body(payload, state.body_limit).await?;
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
        let mut spec = request.validate().map_err(at)?;
        // A server without a tenant goes to a tenant administrator's own (none stands for `default`).
        if !admin.manages(spec.tenant_id.as_deref()) {
            spec.tenant_id = Some(admin.tenant_for(spec.tenant_id.as_deref()).map_err(at)?);
        }
        check_secrets(&state, spec.has_new_secret()).map_err(at)?;
        check_spec(&state, &spec).await.map_err(at)?;
        specs.push(spec);
    }
    // Every tenant's servers: names are unique across tenants.
    let (stored, credentials) = registry(&state, None).await?;
    let current: BTreeMap<String, Stored> = stored.into_iter().map(|s| (s.row.name.clone(), s)).collect();
    let (mut actions, mut changes, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    for (i, spec) in specs.into_iter().enumerate() {
        let wanted = comparable(&ServerRequest::from_spec(&spec));
        let existing = current.get(&spec.name);
        // Another tenant's server does not exist for a tenant administrator, but its name is taken.
        if existing.is_some_and(|s| !admin.manages(s.row.tenant_id.as_deref())) {
            return Err(ApiError::new(
                Code::ServerNameTaken,
                format!("servers[{i}] ({:?}): another server has this name", spec.name),
            ));
        }
        let secrets = secret_changes(&state, &spec, existing, &credentials).map_err(|e| {
            ApiError::new(e.code(), format!("servers[{i}] ({:?}): {}", spec.name, e.message()))
        })?;
        match existing {
            None => {
                changes.push(
                    json!({"name": spec.name, "action": "create", "diff": diff(&Value::Null, &wanted)}),
                );
                actions.push(Action::Create(spec));
            }
            Some(stored) => {
                let existing = comparable(&stored.request);
                if existing == wanted && secrets.is_empty() {
                    unchanged.push(spec.name.clone());
                } else {
                    let mut fields = diff(&existing, &wanted);
                    fields.extend(secrets);
                    changes.push(json!({"name": spec.name, "action": "update", "diff": fields}));
                    actions.push(Action::Update(stored.row.id, spec));
                }
            }
        }
    }
    if query.prune {
        for (name, stored) in &current {
            if !names.contains(name) && admin.manages(stored.row.tenant_id.as_deref()) {
                changes.push(json!({"name": name, "action": "delete", "diff": []}));
                actions.push(Action::Delete(stored.row.id));
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
        audited::unchanged();
        return Ok(HttpResponse::Ok().json(summary));
    }
    let mut conn = state.conn().await?;
    let key = state.secrets.as_ref();
    // The importer owns the servers it creates; those it updates keep their owner.
    let owner = admin.principal().owner_label();
    // One record for the whole import: its summary (no secret: changed ones show as "(new value)").
    let target = Target::new("registry", admin.tenant().unwrap_or("*"), admin.tenant());
    let created: Vec<(uuid::Uuid, bool)> = audited(&mut conn, async |conn| {
        let mut created = Vec::new();
        for action in &actions {
            match action {
                Action::Create(spec) => {
                    let ((server, _), _) =
                        store::create(conn, spec, owner.as_deref(), key).await.map_err(from_store)?;
                    created.push((server.id, spec.auto_discover));
                }
                Action::Update(id, spec) => {
                    drop(store::replace(conn, *id, spec, key, None).await.map_err(from_store)?)
                }
                Action::Delete(id) => drop(store::delete(conn, *id).await.map_err(from_store)?),
            }
        }
        Ok((created, Audit::applied(target, &summary)))
    })
    .await?;
    drop(conn);
    tracing::info!(changes = actions.len(), by = %admin.principal().label(), "Imported a registry document.");
    publish(&state).await;
    for (id, discover) in created {
        if discover {
            state.discoverer.spawn(id);
        }
    }
    Ok(HttpResponse::Ok().json(summary))
}
