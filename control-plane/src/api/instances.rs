//! `/api/v1/servers/{id}/instances`: add one instance to a server (an endpoint URL of its transport, or a
//! stdio server's command), remove one. Both change the server, so
//! both take `ServerManager`: an administrator of its tenant or its owner.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::servers::{InstanceRequest, check_secrets, from_store, parse_id, publish};
use super::{ApiError, AppState, Code};
use crate::auth::ServerManager;
use crate::db::store;
use crate::model::{CommandSpec, HealthIndex, InstanceView, TransportType, UpstreamAuthSpec};

/// An instance's audit target; the tenant is its server's.
fn instance_target(id: Uuid, tenant: Option<&str>) -> Target {
    Target::new("instance", id, Some(tenant.unwrap_or(crate::model::DEFAULT_TENANT)))
}

fn parse_instance_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::new(Code::InstanceNotFound, format!("no instance has id {raw:?}")))
}

/// `POST /api/v1/servers/{id}/instances`: 201 with the new instance.
pub async fn add(
    manager: ServerManager,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<InstanceRequest>,
) -> Result<HttpResponse, ApiError> {
    let server_id = parse_id(&id)?;
    let (server, _) = super::servers::manageable(&state, &manager, server_id).await?;
    let transport = TransportType::parse(&server.transport_type).unwrap_or(TransportType::StreamableHttp);
    let spec = body.into_inner().validate(None, transport)?;
    check_secrets(&state, spec.upstream_auth.new_secret().is_some() || spec.has_new_secret_env())?;
    super::servers::check_instance(&state, &spec, "").await?;
    let mut conn = state.conn().await?;
    let (row, view, version) = audited(&mut conn, async |conn| {
        let (row, version) =
            store::add_instance(conn, server_id, &spec, state.secrets.as_ref()).await.map_err(from_store)?;
        let mut view = InstanceView::new(&row, &HealthIndex::default());
        view.upstream_auth =
            (spec.upstream_auth != UpstreamAuthSpec::None).then(|| spec.upstream_auth.view());
        view.command = spec.command.as_ref().map(CommandSpec::view);
        let audit = Audit::created(instance_target(row.id, server.tenant_id.as_deref()), &view);
        Ok(((row, view, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(server_id = %server_id, instance_id = %row.id, version, by = %manager.principal().label(),
        "Added an instance.");
    publish(&state).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{server_id}/instances/{}", row.id)))
        .json(view))
}

/// `DELETE /api/v1/servers/{id}/instances/{instance_id}`: 204.
pub async fn remove(
    manager: ServerManager,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, instance) = path.into_inner();
    let server_id = parse_id(&id)?;
    let (server, _) = super::servers::manageable(&state, &manager, server_id).await?;
    let instance_id = parse_instance_id(&instance)?;
    let mut conn = state.conn().await?;
    let version = audited(&mut conn, async |conn| {
        let view = super::servers::server_view(conn, server_id).await?;
        let before = view.instances.iter().find(|i| i.id == instance_id);
        let version = store::remove_instance(conn, server_id, instance_id).await.map_err(from_store)?;
        Ok((version, Audit::deleted(instance_target(instance_id, server.tenant_id.as_deref()), &before)))
    })
    .await?;
    drop(conn);
    tracing::info!(server_id = %server_id, instance_id = %instance_id, version,
        by = %manager.principal().label(), "Removed an instance.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
