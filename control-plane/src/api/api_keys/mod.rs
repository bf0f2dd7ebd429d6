//! `/api/v1/api-keys`: create (the key is shown once), list, read and delete API keys. Creation and
//! deletion are published to the proxies right after their commit, so a deleted key is refused everywhere
//! within a second.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::Utc;
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::servers::publish;
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::store;
use crate::model::{ApiKeyView, CreatedApiKey, NewKey};

pub(crate) mod request;

pub use request::ApiKeyRequest;

fn not_found(id: &str) -> ApiError {
    ApiError::new(Code::ApiKeyNotFound, format!("no API key has id {id:?}"))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

fn target(row: &crate::model::ApiKeyRow) -> Target {
    Target::new("api-key", row.id, Some(&row.tenant_id))
}

/// `POST /api/v1/api-keys`: 201 with the key; the secret is in this answer only.
pub async fn create(
    admin: Admin,
    state: web::Data<AppState>,
    body: web::Json<ApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut request = body.into_inner();
    if admin.tenant().is_some() {
        // A tenant administrator's keys belong to its tenant and cannot be platform administrators.
        request.tenant_id = Some(admin.tenant_for(request.tenant_id.as_deref())?);
        if request.role.as_deref() == Some(crate::auth::PLATFORM_ADMIN_ROLE) {
            return Err(ApiError::new(
                Code::InsufficientPermissions,
                "a tenant administrator cannot create platform_admin keys",
            ));
        }
    }
    let mut spec = request.validate(Utc::now())?;
    let mut conn = state.conn().await?;
    inherit_narrowing(&mut conn, &admin, &mut spec).await?;
    let key = NewKey::generate().map_err(|_| ApiError::internal("the system random generator failed"))?;
    let (row, version) = audited(&mut conn, async |conn| {
        let (row, version) = store::api_keys::create(conn, &spec, &key).await.map_err(ApiError::internal)?;
        // The view, never the created key: the secret is in the answer only.
        let audit = Audit::created(target(&row), &row.view());
        Ok(((row, version), audit))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %row.id, name = %row.name, tenant_id = %row.tenant_id, role = %row.role,
        by = %admin.principal().label(), version, "Created an API key.");
    publish(&state).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/api-keys/{}", row.id)))
        .json(CreatedApiKey::new(&row, key)))
}

/// A key's permissions may only narrow its creator's: a key created by an API key whose own permissions
/// narrow it carries the same permissions (copied when none are given; another list is refused, since
/// globs cannot be proven narrower). Other creators (the admin token, signed-in administrators, keys
/// without permissions) hold everything of the tenants they manage.
async fn inherit_narrowing(
    conn: &mut diesel_async::AsyncPgConnection,
    admin: &Admin,
    spec: &mut crate::model::ApiKeySpec,
) -> Result<(), ApiError> {
    let crate::auth::Principal::ApiKey { id, .. } = admin.principal() else { return Ok(()) };
    let Some(creator) = store::api_keys::get(conn, *id).await.map_err(ApiError::internal)? else {
        return Ok(());
    };
    let own: Vec<crate::model::PermissionRule> =
        serde_json::from_value(creator.permissions).unwrap_or_default();
    if own.is_empty() {
        return Ok(());
    }
    if spec.permissions.is_empty() {
        spec.permissions = own;
    } else if spec.permissions != own {
        return Err(ApiError::new(
            Code::InsufficientPermissions,
            "this API key's permissions narrow it, and a key it creates may only narrow its creator's: give \
             the same permissions or none (they are copied)",
        ));
    }
    Ok(())
}

/// `GET /api/v1/api-keys`: every key, oldest first, without secrets.
pub async fn list(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let rows = store::api_keys::list(&mut conn).await.map_err(ApiError::internal)?;
    let views: Vec<ApiKeyView> =
        rows.iter().filter(|r| admin.manages(Some(&r.tenant_id))).map(|r| r.view()).collect();
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /api/v1/api-keys/{id}`.
pub async fn get(
    admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_id(&id)?;
    let mut conn = state.conn().await?;
    let row = store::api_keys::get(&mut conn, uuid).await.map_err(ApiError::internal)?;
    let row = row.filter(|r| admin.manages(Some(&r.tenant_id))).ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(row.view()))
}

/// `DELETE /api/v1/api-keys/{id}`: 204; the key stops working on this API at once and on every proxy
/// with the routing update published before this answer.
pub async fn delete(
    admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let uuid = parse_id(&id)?;
    let mut conn = state.conn().await?;
    let version = audited(&mut conn, async |conn| {
        let stored = store::api_keys::get(conn, uuid).await.map_err(ApiError::internal)?;
        let Some(stored) = stored.filter(|r| admin.manages(Some(&r.tenant_id))) else {
            return Err(not_found(&id));
        };
        let version = store::api_keys::delete(conn, uuid)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| not_found(&id))?;
        Ok((version, Audit::deleted(target(&stored), &stored.view())))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %uuid, by = %admin.principal().label(), version, "Deleted an API key.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
