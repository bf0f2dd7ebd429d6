//! `/api/v1/servers`: the registry CRUD. Requests are validated into a `ServerSpec` (and through the SSRF
//! guard) before anything is written; every change is published to the proxies right after its commit.
//! Reads take `ServerReader`, changes `ServerManager`: administrators manage every server of their
//! tenants, holders of `server_owner` register servers in theirs and change the ones they registered.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::{ApiError, AppState, Code};
use crate::auth::{ServerManager, ServerReader};
use crate::db::store::{self, ServerWithInstances, StoreError};
use crate::model::{InstanceSpec, ServerSpec, ServerView};

pub mod list;
pub(crate) mod request;
pub mod views;

pub use list::{ListQuery, list};
pub(crate) use request::valid_tenant;
pub use request::{CommandRequest, InstanceRequest, SecretEnvRequest, ServerRequest, UpstreamAuthRequest};
pub use views::Include;

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

pub(crate) fn not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::ServerNotFound, format!("no server has id {id:?}", id = id.to_string()))
}

pub(crate) fn from_store(e: StoreError) -> ApiError {
    match e {
        StoreError::NameTaken(name) => {
            ApiError::new(Code::ServerNameTaken, format!("a server named {name:?} already exists"))
        }
        StoreError::NotFound(id) => not_found(id),
        StoreError::Changed(id) => ApiError::new(
            Code::ServerChanged,
            format!("server {id} changed since it was read: read it again (GET, its ETag) and retry"),
        ),
        StoreError::InstanceNotFound { server, instance } => ApiError::new(
            Code::InstanceNotFound,
            format!("server {server} has no instance with id \"{instance}\""),
        ),
        StoreError::EndpointTaken(url) => ApiError::new(
            Code::InstanceEndpointTaken,
            format!("the server already has an instance at {url:?}"),
        ),
        StoreError::CredentialMissing(owner) => ApiError::new(
            Code::InvalidUpstreamAuth,
            format!(
                "upstream_auth has no value and no credential is stored for {owner} to keep: give upstream_auth.value \
                 (reads and exports never carry it)"
            ),
        ),
        StoreError::SecretEnvMissing(name) => ApiError::new(
            Code::InvalidCommand,
            format!(
                "command.secret_env {name:?} has no value and none is stored to keep: give its value \
                 (reads and exports never carry it)"
            ),
        ),
        StoreError::NoSecretsKey => secrets_key_missing(),
        StoreError::Seal => ApiError::internal("sealing an upstream credential failed"),
        StoreError::Db(e) => ApiError::internal(e),
    }
}

fn secrets_key_missing() -> ApiError {
    ApiError::new(
        Code::SecretsKeyNotConfigured,
        "upstream credentials are stored encrypted, and this control plane has no key: start it with \
         --secrets-key (or MCPGW_SECRETS_KEY) set to 32 random bytes, e.g. `openssl rand -base64 32`",
    )
}

/// Refuses a request with a new upstream secret (`seals`) when there is no `--secrets-key` to seal it with.
pub(crate) fn check_secrets(state: &AppState, seals: bool) -> Result<(), ApiError> {
    if seals && state.secrets.is_none() {
        return Err(secrets_key_missing());
    }
    Ok(())
}

/// Refuses endpoints the SSRF guard does not allow (resolving host names briefly).
pub(crate) async fn check_endpoint(state: &AppState, url: &str, at: &str) -> Result<(), ApiError> {
    let Ok(parsed) = url::Url::parse(url) else { return Ok(()) };
    state.ssrf.check_url(&parsed).await.map_err(|refusal| {
        ApiError::new(
            Code::EndpointUrlNotAllowed,
            format!("{at}endpoint_url {url:?} is not allowed: {refusal}"),
        )
    })
}

pub(crate) async fn check_spec(state: &AppState, spec: &ServerSpec) -> Result<(), ApiError> {
    let many = spec.instances.len() > 1;
    for (i, instance) in spec.instances.iter().enumerate() {
        let at = if many { format!("instances[{i}]: ") } else { String::new() };
        check_instance(state, instance, &at).await?;
    }
    Ok(())
}

/// Refuses an instance the control plane may not reach: an endpoint the SSRF guard refuses, or a stdio
/// program outside `--stdio-programs`.
pub(crate) async fn check_instance(
    state: &AppState,
    instance: &InstanceSpec,
    at: &str,
) -> Result<(), ApiError> {
    let Some(command) = &instance.command else {
        return check_endpoint(state, &instance.endpoint_url, at).await;
    };
    let programs = state.discoverer.client.stdio_programs();
    if programs.allows(&command.program) {
        return Ok(());
    }
    let listed = if programs.is_empty() {
        "which is empty: stdio servers are refused until their programs are listed there".to_owned()
    } else {
        "which does not list it (exact match of the program as given)".to_owned()
    };
    Err(ApiError::new(
        Code::StdioNotAllowed,
        format!(
            "{at}command.program {:?} is not allowed: this control plane starts only the programs of \
             --stdio-programs (MCPGW_STDIO_PROGRAMS), {listed}",
            command.program
        ),
    ))
}

/// Publishes a committed change to the proxies connected here. A failure is only logged: the change is
/// committed, and the NOTIFY listener or the poller publishes it shortly.
pub(crate) async fn publish(state: &AppState) {
    if let Err(error) = state.hub.refresh().await {
        tracing::warn!(%error, "Could not publish a committed change; the poller will retry.");
    }
}

/// A server of a tenant the caller does not see does not exist for them (404).
async fn visible(state: &AppState, reader: &ServerReader, id: Uuid) -> Result<(), ApiError> {
    if reader.tenant().is_none() {
        return Ok(());
    }
    let mut conn = state.conn().await?;
    let (server, _) =
        store::get(&mut conn, id).await.map_err(ApiError::internal)?.ok_or_else(|| not_found(id))?;
    if reader.sees(server.tenant_id.as_deref()) { Ok(()) } else { Err(not_found(id)) }
}

/// The server `id`, with its instances, if the caller may change it: 404 when it is missing or of a
/// tenant the caller does not see, 403 when a `server_owner` did not register it.
pub(crate) async fn manageable(
    state: &AppState,
    manager: &ServerManager,
    id: Uuid,
) -> Result<ServerWithInstances, ApiError> {
    let mut conn = state.conn().await?;
    let found = store::get(&mut conn, id).await.map_err(ApiError::internal)?.ok_or_else(|| not_found(id))?;
    manager.may_manage(&found.0)?;
    Ok(found)
}

/// The servers of a caller confined to one tenant belong to that tenant (403 for another one).
fn scope_spec(manager: &ServerManager, spec: &mut ServerSpec) -> Result<(), ApiError> {
    if manager.tenant().is_some() {
        spec.tenant_id = Some(manager.tenant_for(spec.tenant_id.as_deref())?);
    }
    Ok(())
}

/// The server as the API shows it (without capability lists): what its audit records hold.
pub(crate) async fn server_view(
    conn: &mut diesel_async::AsyncPgConnection,
    id: Uuid,
) -> Result<ServerView, ApiError> {
    views::one(conn, id, Include::default()).await.map_err(ApiError::internal)?.ok_or_else(|| not_found(id))
}

async fn respond(state: &AppState, id: Uuid, include: Include) -> Result<Value, ApiError> {
    let mut conn = state.conn().await?;
    let view =
        views::one(&mut conn, id, include).await.map_err(ApiError::internal)?.ok_or_else(|| not_found(id))?;
    serde_json::to_value(view).map_err(ApiError::internal)
}

/// `GET /api/v1/servers/{id}` (`?include_tools=true`, `include_resources`, `include_prompts`).
pub async fn get(
    reader: ServerReader,
    state: web::Data<AppState>,
    id: web::Path<String>,
    include: web::Query<Include>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    visible(&state, &reader, id).await?;
    let view = respond(&state, id, *include).await?;
    let tag = view.get("updated_at").and_then(Value::as_str).and_then(etag_of_text);
    let mut resp = HttpResponse::Ok();
    if let Some(tag) = tag {
        resp.insert_header((header::ETAG, tag));
    }
    Ok(resp.json(view))
}

/// The entity tag of a server's registration: its `updated_at`, which every write changes.
pub(crate) fn etag(updated_at: chrono::DateTime<chrono::Utc>) -> String {
    format!("\"{}\"", updated_at.timestamp_micros())
}

fn etag_of_text(updated_at: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(updated_at).ok().map(|t| etag(t.with_timezone(&chrono::Utc)))
}

/// The `updated_at` a write must find (`If-Match`): `Ok(None)` without the header; 412 when it names
/// another version than `current`'s (`*` matches any).
fn if_match(
    req: &HttpRequest,
    current: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else { return Ok(None) };
    let value = value.to_str().unwrap_or_default().trim();
    let tag = etag(current);
    if value == "*" || value.split(',').any(|t| t.trim().trim_start_matches("W/") == tag) {
        return Ok(Some(current));
    }
    Err(ApiError::new(
        Code::ServerChanged,
        format!("If-Match {value} is not the server's current version {tag}: read it again and retry"),
    ))
}

/// `POST /api/v1/servers`: 201 with the server and its `Location`. The caller becomes its `owner`.
pub async fn create(
    manager: ServerManager,
    state: web::Data<AppState>,
    body: web::Json<ServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut spec = body.into_inner().validate()?;
    scope_spec(&manager, &mut spec)?;
    check_secrets(&state, spec.has_new_secret())?;
    check_spec(&state, &spec).await?;
    let owner = manager.owner();
    let mut conn = state.conn().await?;
    let (view, version) = audited(&mut conn, async |conn| {
        let ((server, _), version) =
            store::create(conn, &spec, owner.as_deref(), state.secrets.as_ref()).await.map_err(from_store)?;
        let view = server_view(conn, server.id).await?;
        let audit = Audit::created(Target::server(server.id, server.tenant_id.as_deref()), &view);
        Ok(((view, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(server = %view.name, id = %view.id, instances = view.instances.len(), version,
        by = %manager.principal().label(), "Registered a server.");
    publish(&state).await;
    if spec.auto_discover {
        state.discoverer.spawn(view.id);
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{}", view.id)))
        .json(view))
}

async fn write(
    state: &AppState,
    manager: &ServerManager,
    id: Uuid,
    spec: ServerSpec,
    expected: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<HttpResponse, ApiError> {
    check_secrets(state, spec.has_new_secret())?;
    check_spec(state, &spec).await?;
    let mut conn = state.conn().await?;
    let (view, version) = audited(&mut conn, async |conn| {
        let before = server_view(conn, id).await?;
        let ((server, _), version) =
            store::replace(conn, id, &spec, state.secrets.as_ref(), expected).await.map_err(from_store)?;
        let after = server_view(conn, id).await?;
        let audit = Audit::updated(Target::server(id, server.tenant_id.as_deref()), &before, &after);
        Ok(((after, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(server = %view.name, %id, version, by = %manager.principal().label(), "Updated a server.");
    publish(state).await;
    Ok(HttpResponse::Ok().insert_header((header::ETAG, etag(view.updated_at))).json(view))
}

/// `PUT /api/v1/servers/{id}`: full replacement (the owner stays).
pub async fn replace(
    manager: ServerManager,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<ServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let (server, _) = manageable(&state, &manager, id).await?;
    let expected = if_match(&req, server.updated_at)?;
    let mut spec = body.into_inner().validate()?;
    scope_spec(&manager, &mut spec)?;
    write(&state, &manager, id, spec, expected).await
}

/// `PATCH /api/v1/servers/{id}`: a JSON merge patch (RFC 7396) of the registration: given fields replace,
/// `null` resets a field to its default. `endpoint_url`, `command` and `instances` each replace the
/// instance list.
/// An `upstream_auth` without `value` keeps the stored secret; `"upstream_auth": null` removes it.
pub async fn patch(
    manager: ServerManager,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let Value::Object(patch) = body.into_inner() else {
        return Err(ApiError::new(Code::MalformedJson, "a PATCH body must be a JSON object"));
    };
    let (server, instances) = manageable(&state, &manager, id).await?;
    if_match(&req, server.updated_at)?;
    // The patch applies to the server as read here: written only if it is still that version.
    let read_at = server.updated_at;
    let mut conn = state.conn().await?;
    let instance_ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
    let credentials =
        store::upstream_auth::of(&mut conn, &[id], &instance_ids).await.map_err(ApiError::internal)?;
    drop(conn);
    let mut current = serde_json::to_value(ServerRequest::from_stored(&server, &instances, &credentials))
        .map_err(ApiError::internal)?;
    if let Value::Object(map) = &mut current {
        if patch.contains_key("endpoint_url") || patch.contains_key("command") {
            map.remove("instances");
        }
        for (key, value) in patch {
            if value.is_null() {
                map.remove(&key);
            } else {
                map.insert(key, value);
            }
        }
    }
    let request: ServerRequest =
        serde_json::from_value(current).map_err(|e| super::extract::from_serde(&e))?;
    let mut spec = request.validate()?;
    scope_spec(&manager, &mut spec)?;
    write(&state, &manager, id, spec, Some(read_at)).await
}

/// `DELETE /api/v1/servers/{id}`: 204.
pub async fn delete(
    manager: ServerManager,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    manageable(&state, &manager, id).await?;
    let mut conn = state.conn().await?;
    let version = audited(&mut conn, async |conn| {
        let before = server_view(conn, id).await?;
        let version = store::delete(conn, id).await.map_err(from_store)?;
        Ok((version, Audit::deleted(Target::server(id, before.tenant_id.as_deref()), &before)))
    })
    .await?;
    drop(conn);
    tracing::info!(%id, version, by = %manager.principal().label(), "Deleted a server.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/servers/{id}/refresh`: discovers the server now; 200 with the server and everything it
/// offers, or 502 `discovery_failed` (the last known capabilities stay, the failed attempt is stored).
/// The capabilities found are stored with the change's audit record (the server's view before and after).
pub async fn refresh(
    manager: ServerManager,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    use crate::discovery::{DiscoverError, Probe};
    let id = parse_id(&id)?;
    let (server, _) = manageable(&state, &manager, id).await?;
    let failed = |e: DiscoverError| match e {
        DiscoverError::NotFound(id) => not_found(id),
        DiscoverError::Db(e) => ApiError::internal(e),
        e @ (DiscoverError::Failed(_) | DiscoverError::NoInstance) => {
            ApiError::new(Code::DiscoveryFailed, format!("discovery failed: {e}"))
        }
    };
    let probe = state.discoverer.probe(id).await.map_err(failed)?;
    let mut conn = state.conn().await?;
    if let Probe::Failed { .. } = probe {
        // Only the failed attempt is stored (`save` answers `Failed`); the audit middleware records the 502.
        let stored = probe.save(&mut conn, id).await;
        return Err(stored.map_or_else(failed, |_| ApiError::internal("a failed probe was saved as found")));
    }
    let found = audited(&mut conn, async |conn| {
        let before = server_view(conn, id).await?;
        let found = probe.save(conn, id).await.map_err(failed)?;
        let after = server_view(conn, id).await?;
        Ok((found, Audit::updated(Target::server(id, server.tenant_id.as_deref()), &before, &after)))
    })
    .await?;
    drop(conn);
    if found.changed {
        // The catalog is part of the routing table: publish it now that it is committed.
        publish(&state).await;
    }
    let all = Include { include_tools: true, include_resources: true, include_prompts: true };
    Ok(HttpResponse::Ok().json(respond(&state, id, all).await?))
}

/// `GET /api/v1/servers/{id}/health`: every instance's active status with recent history, and each
/// proxy's breaker state.
pub async fn health(
    reader: ServerReader,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    visible(&state, &reader, id).await?;
    let mut conn = state.conn().await?;
    let (_, instances) =
        store::get(&mut conn, id).await.map_err(ApiError::internal)?.ok_or_else(|| not_found(id))?;
    let mut view = views::one(&mut conn, id, Include::default())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(id))?;
    let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
    let rows = store::health::active(&mut conn, Some(&ids)).await.map_err(ApiError::internal)?;
    for instance in &mut view.instances {
        instance.history = Some(rows.get(&instance.id).map(|r| r.history()).unwrap_or_default());
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "server_id": view.id,
        "name": view.name,
        "health_status": view.health_status,
        "health_check": view.health_check,
        "instances": view.instances,
    })))
}

#[cfg(test)]
mod tests;
