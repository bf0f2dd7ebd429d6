//! `/api/v1/servers`: the registry CRUD. Requests are validated into a `ServerSpec` before anything is written.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use mcpgw_proto::validate;
use serde::Deserialize;
use uuid::Uuid;

use super::{ApiError, AppState, Code};
use crate::auth::AdminAuth;
use crate::db::store::{self, StoreError};
use crate::model::{ServerSpec, TransportType};

/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most tags on one server.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// Body of POST and PUT (PUT replaces every field; omitted optional fields are reset).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    pub name: String,
    pub endpoint_url: String,
    /// `streamable_http` (default; `http` is an alias) or `sse`.
    #[serde(default)]
    pub transport_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl ServerRequest {
    /// Checks every field; the first problem found is reported.
    pub fn validate(self) -> Result<ServerSpec, ApiError> {
        validate::server_name(&self.name).map_err(|e| {
            ApiError::new(Code::InvalidServerName, format!("invalid server name {:?}: {e}", self.name))
        })?;
        validate::endpoint_url(&self.endpoint_url)
            .map_err(|e| ApiError::new(Code::InvalidEndpointUrl, e.to_string()))?;
        let transport = match self.transport_type.as_deref() {
            None => TransportType::StreamableHttp,
            Some(raw) => TransportType::parse(raw).ok_or_else(|| {
                ApiError::new(
                    Code::InvalidTransportType,
                    format!(
                        "unknown transport_type {raw:?}; use \"streamable_http\" (or \"http\") or \"sse\""
                    ),
                )
            })?,
        };
        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(ApiError::new(
                Code::InvalidDescription,
                format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let tags = self.tags.unwrap_or_default();
        check_tags(&tags)?;
        Ok(ServerSpec {
            name: self.name,
            endpoint_url: self.endpoint_url,
            transport,
            description: self.description,
            tags,
        })
    }
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::new(Code::InvalidTags, why));
    if tags.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags are allowed, not {}", tags.len()));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.trim().is_empty() || tag.chars().any(char::is_control) {
            return bad(format!("tag {i} is empty or contains control characters"));
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return bad(format!("tag {tag:?} is longer than {MAX_TAG_CHARS} characters"));
        }
        if tags[..i].contains(tag) {
            return bad(format!("tag {tag:?} is listed twice"));
        }
    }
    Ok(())
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

fn not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::new(Code::ServerNotFound, format!("no server has id {id:?}", id = id.to_string()))
}

fn from_store(e: StoreError) -> ApiError {
    match e {
        StoreError::NameTaken(name) => {
            ApiError::new(Code::ServerNameTaken, format!("a server named {name:?} already exists"))
        }
        StoreError::NotFound(id) => not_found(id),
        StoreError::Db(e) => ApiError::internal(e),
    }
}

/// Publishes a committed change to the proxies connected here. A failure is only logged: the change is
/// committed, and the poller publishes it within a second.
async fn publish(state: &AppState) {
    if let Err(error) = state.hub.refresh().await {
        tracing::warn!(%error, "Could not publish a committed change; the poller will retry.");
    }
}

/// `GET /api/v1/servers`: every server, ordered by name.
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let servers = store::list(&mut conn).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(servers))
}

/// `GET /api/v1/servers/{id}`.
pub async fn get(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.conn().await?;
    match store::get(&mut conn, id).await.map_err(ApiError::internal)? {
        Some(server) => Ok(HttpResponse::Ok().json(server)),
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
    tracing::info!(server = %server.name, id = %server.id, version, "Registered a server.");
    publish(&state).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/servers/{}", server.id)))
        .json(server))
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
    tracing::info!(server = %server.name, %id, version, "Replaced a server.");
    publish(&state).await;
    Ok(HttpResponse::Ok().json(server))
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
