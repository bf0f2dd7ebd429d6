//! `/api/v1/users`: the people who signed in through the authorization server, as their IdP last
//! described them (recorded at every sign-in), of the tenants the administrator manages.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::auth::Admin;
use crate::db::store::oauth::{self as store, UserRow};

/// A user as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    /// The IdP's issuer and the user's subject there (Entra ID: `oid`).
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub tenant_id: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The IdP left groups out of the token (Entra ID group overage).
    pub groups_overage: bool,
    /// The ID token's claims at the last sign-in.
    #[schema(value_type = Object)]
    pub claims: Value,
    pub created_at: DateTime<Utc>,
    pub last_login_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(u: UserRow) -> Self {
        Self {
            id: u.id,
            issuer: u.issuer,
            subject: u.subject,
            email: u.email,
            name: u.name,
            tenant_id: u.tenant_id,
            roles: u.roles,
            groups: u.groups,
            groups_overage: u.groups_overage,
            claims: u.claims,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// `GET /api/v1/users`: the users of the tenants the administrator manages, oldest first.
pub async fn list(
    admin: Admin,
    state: web::Data<AppState>,
    query: web::Query<super::extract::TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = query.scope(&admin)?;
    let mut conn = state.conn().await?;
    let rows = store::users(&mut conn, tenant.as_deref()).await.map_err(ApiError::internal)?;
    let items: Vec<UserView> = rows.into_iter().map(UserView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}
