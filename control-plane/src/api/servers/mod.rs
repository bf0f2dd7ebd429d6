//! `/api/v1/servers`: the registry CRUD. Requests are validated into a `ServerSpec` before anything is written.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use uuid::Uuid;

use super::{ApiError, AppState, Code};
use crate::auth::AdminAuth;
use crate::db::store::{self, ServerWithInstances, StoreError};
use crate::model::{HealthStatus, ServerView};

mod request;

pub use request::{InstanceRequest, ServerRequest};

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
        StoreError::InstanceNotFound { server, instance } => ApiError::new(
            Code::InstanceNotFound,
            format!("server {server} has no instance with id \"{instance}\""),
        ),
        StoreError::EndpointTaken(url) => ApiError::new(
            Code::InstanceEndpointTaken,
            format!("the server already has an instance at {url:?}"),
        ),
        StoreError::Db(e) => ApiError::internal(e),
    }
}

/// Publishes a committed change to the proxies connected here. A failure is only logged: the change is
/// committed, and the poller publishes it shortly.
pub(crate) async fn publish(state: &AppState) {
    if let Err(error) = state.hub.refresh().await {
        tracing::warn!(%error, "Could not publish a committed change; the poller will retry.");
    }
}

pub(crate) fn view((server, instances): &ServerWithInstances) -> ServerView {
    ServerView::new(server, instances, |_| HealthStatus::Unknown)
}

/// `GET /api/v1/servers`: every server, ordered by name.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let servers = store::list(&mut conn).await.map_err(ApiError::internal)?;
    let ids: Vec<Uuid> = servers.iter().map(|s| s.id).collect();
    let mut instances = store::instances_of(&mut conn, Some(&ids)).await.map_err(ApiError::internal)?;
    let views: Vec<ServerView> = servers
        .into_iter()
        .map(|s| {
            let own = instances.remove(&s.id).unwrap_or_default();
            view(&(s, own))
        })
        .collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /api/v1/servers/{id}`.
pub async fn get(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.conn().await?;
    match store::get(&mut conn, id).await.map_err(ApiError::internal)? {
        Some(server) => Ok(HttpResponse::Ok().json(view(&server))),
        None => Err(not_found(id)),
    }
}

/// `POST /api/v1/servers`: 201 with the server and its `Location`.
pub async fn create(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    body: web::Json<ServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let spec = body.into_inner().validate()?;
    let mut conn = state.conn().await?;
    let (server, version) = store::create(&mut conn, &spec).await.map_err(from_store)?;
    drop(conn);
    tracing::info!(server = %server.0.name, id = %server.0.id, instances = server.1.len(), version,
        "Registered a server.");
    publish(&state).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{}", server.0.id)))
        .json(view(&server)))
}

/// `PUT /api/v1/servers/{id}`: full replacement.
pub async fn replace(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<ServerRequest>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let spec = body.into_inner().validate()?;
    let mut conn = state.conn().await?;
    let (server, version) = store::replace(&mut conn, id, &spec).await.map_err(from_store)?;
    drop(conn);
    tracing::info!(server = %server.0.name, %id, version, "Replaced a server.");
    publish(&state).await;
    Ok(HttpResponse::Ok().json(view(&server)))
}

/// `DELETE /api/v1/servers/{id}`: 204.
pub async fn delete(
    _admin: AdminAuth,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.conn().await?;
    let version = store::delete(&mut conn, id).await.map_err(from_store)?;
    drop(conn);
    tracing::info!(%id, version, "Deleted a server.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests;
