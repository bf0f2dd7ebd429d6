//! `/api/v1/roles`: custom roles of a tenant — permission rules the proxies decide every named MCP message
//! with, and the IdP roles or groups whose members get the role when they sign in. Built-in roles
//! (`admin`, `server_owner`, `user` — every server of the tenant —, `platform_admin` — every tenant) are not
//! stored. Changes are published to the proxies right after their commit.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::servers::publish;
use super::{ApiError, AppState, Code};
use crate::auth::Admin;
use crate::db::store::roles::{self as store, RoleRow};
use crate::model::{DEFAULT_TENANT, PermissionRule};

/// Role names the proxies give a meaning of their own.
pub const BUILT_IN_ROLES: [&str; 4] = ["admin", "server_owner", "user", "platform_admin"];
/// Most IdP roles or groups one role is granted by.
const MAX_IDP_GROUPS: usize = 50;

/// A new custom role.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `[a-z0-9_-]{1,64}`, not a built-in role.
    pub name: String,
    /// Default `default`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// What the role allows; a list left out allows every item of its kind on the matching servers.
    pub rules: Vec<PermissionRule>,
    /// IdP roles or groups (Entra ID app roles or group object ids) whose members get this role.
    #[serde(default)]
    pub idp_groups: Vec<String>,
}

fn target(row: &RoleRow) -> Target {
    Target::new("role", row.id, Some(&row.tenant_id))
}

fn invalid(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl RoleRequest {
    fn validate(self) -> Result<RoleRow, ApiError> {
        if !super::api_keys::request::valid_role(&self.name) || BUILT_IN_ROLES.contains(&self.name.as_str()) {
            return Err(invalid(
                Code::InvalidRole,
                format!(
                    "name {:?} must be [a-z0-9_-]{{1,64}} and not a built-in role ({BUILT_IN_ROLES:?})",
                    self.name
                ),
            ));
        }
        let tenant_id = match self.tenant_id.as_deref().map(str::trim) {
            None => DEFAULT_TENANT.to_owned(),
            Some(t) if super::servers::request::valid_tenant(t) => t.to_owned(),
            Some(t) => {
                return Err(invalid(Code::InvalidTenant, format!("tenant_id {t:?} is not a tenant name")));
            }
        };
        super::api_keys::request::check_permissions(&self.rules)?;
        if self.rules.is_empty() {
            return Err(invalid(Code::InvalidPermissions, "rules must allow something (at least one rule)"));
        }
        let group_ok = |g: &String| !g.is_empty() && g.len() <= 256 && !g.chars().any(char::is_control);
        if self.idp_groups.len() > MAX_IDP_GROUPS || !self.idp_groups.iter().all(group_ok) {
            return Err(invalid(
                Code::InvalidRole,
                format!("idp_groups must be at most {MAX_IDP_GROUPS} names of 1-256 characters"),
            ));
        }
        Ok(RoleRow {
            id: Uuid::new_v4(),
            tenant_id,
            name: self.name,
            rules: serde_json::to_value(&self.rules).unwrap_or_default(),
            idp_groups: self.idp_groups,
            created_at: Utc::now(),
        })
    }
}

/// `GET /api/v1/roles`.
pub async fn list(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let mut rows = store::list(&mut conn).await.map_err(ApiError::internal)?;
    rows.retain(|r| admin.manages(Some(&r.tenant_id)));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": rows })))
}

/// `POST /api/v1/roles`: 201, published to every proxy.
pub async fn create(
    admin: Admin,
    state: web::Data<AppState>,
    body: web::Json<RoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let mut request = body.into_inner();
    if admin.tenant().is_some() {
        request.tenant_id = Some(admin.tenant_for(request.tenant_id.as_deref())?);
    }
    let row = request.validate()?;
    let mut conn = state.conn().await?;
    audited(&mut conn, async |conn| {
        if !store::create(conn, &row).await.map_err(ApiError::internal)? {
            return Err(invalid(
                Code::RoleTaken,
                format!("tenant {:?} already has a role named {:?}", row.tenant_id, row.name),
            ));
        }
        Ok(((), Audit::created(target(&row), &row)))
    })
    .await?;
    drop(conn);
    tracing::info!(id = %row.id, name = row.name, tenant_id = row.tenant_id, by = %admin.principal().label(), "Created a role.");
    publish(&state).await;
    Ok(HttpResponse::Created().json(row))
}

/// `DELETE /api/v1/roles/{id}`.
pub async fn delete(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let not_found = || invalid(Code::RoleNotFound, format!("no role has id {raw:?}"));
    let id = Uuid::parse_str(&raw).map_err(|_| not_found())?;
    let mut conn = state.conn().await?;
    audited(&mut conn, async |conn| {
        let stored = store::get(conn, id).await.map_err(ApiError::internal)?;
        let Some(stored) = stored.filter(|r| admin.manages(Some(&r.tenant_id))) else {
            return Err(not_found());
        };
        if !store::delete(conn, id).await.map_err(ApiError::internal)? {
            return Err(not_found());
        }
        Ok(((), Audit::deleted(target(&stored), &stored)))
    })
    .await?;
    drop(conn);
    tracing::info!(%id, by = %admin.principal().label(), "Deleted a role.");
    publish(&state).await;
    Ok(HttpResponse::NoContent().finish())
}
