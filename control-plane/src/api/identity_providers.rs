//! `/api/v1/identity-providers`: company IdPs users may sign in at besides the `--oidc-*` one. A new one is
//! checked by discovery (metadata and keys fetched through the SSRF guard) before it is stored; its client
//! secret is sealed with `--secrets-key` and never shown. With more than one IdP, the sign-in page lets
//! the user choose. Its users belong to the tenant its `TenantRule` gives (`tenant_claim`, `tenant_id`),
//! fixed at each user's first sign-in.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audited::{Audit, Target, audited};
use super::{ApiError, AppState, Code};
use crate::auth::PlatformAdmin;
use crate::config::OidcProvider;
use crate::db::store::oauth::{self as store, IdentityProviderRow};
use crate::oauth::idp::TenantRule;
use crate::oauth::{IdentityProvider, idp_secret_context};

/// A registration.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderRequest {
    /// Shown on the sign-in page: `[a-z0-9-]`, 1-63 characters; `default` is the `--oidc-*` IdP's.
    pub name: String,
    /// The OpenID provider's issuer, exactly as its metadata and tokens name it (Entra ID:
    /// `https://login.microsoftonline.com/<tenant>/v2.0`).
    pub issuer: String,
    /// The control plane's client id there (register `<issuer-url>/oauth/callback` as its redirect URI).
    pub client_id: String,
    /// Write-only.
    #[schema(write_only)]
    pub client_secret: String,
    /// Scopes asked at sign-in (default `openid email profile`; must include `openid`).
    #[serde(default)]
    pub scopes: Option<String>,
    /// The tenant of everyone signing in there; with `tenant_claim`, of those whose ID token lacks the
    /// claim. Default: `default` (without `tenant_claim`).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// An ID token claim whose value is the user's tenant (Entra ID: `tid`; or e.g. `org`): 1-100
    /// characters. A value that is not a tenant id refuses the sign-in.
    #[serde(default)]
    pub tenant_claim: Option<String>,
}

/// An identity provider as the API shows it (never the secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityProviderView {
    pub id: Uuid,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub scopes: String,
    /// The tenant of its users (with `tenant_claim`: of those whose ID token lacks the claim); `null`
    /// without `tenant_claim` is `default`.
    pub tenant_id: Option<String>,
    /// The ID token claim naming each user's tenant.
    pub tenant_claim: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<IdentityProviderRow> for IdentityProviderView {
    fn from(r: IdentityProviderRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            issuer: r.issuer,
            client_id: r.client_id,
            scopes: r.scopes,
            tenant_id: r.tenant_id,
            tenant_claim: r.tenant_claim,
            created_at: r.created_at,
        }
    }
}

/// Identity providers concern every tenant: their records go to the caller's.
fn target(id: Uuid) -> Target {
    Target::new("identity-provider", id, None)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidIdentityProvider, message)
}

impl IdentityProviderRequest {
    fn validate(self) -> Result<(OidcProvider, TenantRule), ApiError> {
        let name_ok = |n: &str| {
            (1..=63).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !n.starts_with('-')
        };
        if !name_ok(&self.name) || self.name == "default" {
            return Err(invalid(format!(
                "name {:?} must be 1-63 of [a-z0-9-] and not \"default\"",
                self.name
            )));
        }
        match url::Url::parse(&self.issuer) {
            Ok(u) if crate::jwks::secure_or_loopback(&u) && u.query().is_none() && u.fragment().is_none() => {
            }
            _ => {
                return Err(invalid(format!(
                    "issuer {:?} must be an https URL (http on loopback) without query",
                    self.issuer
                )));
            }
        }
        let text_ok =
            |v: &str, max: usize| !v.is_empty() && v.len() <= max && !v.chars().any(char::is_control);
        if !text_ok(&self.client_id, 256) {
            return Err(invalid("client_id must be 1-256 characters without control characters"));
        }
        if !text_ok(&self.client_secret, 4096) {
            return Err(invalid("client_secret must be 1-4096 characters without control characters"));
        }
        let scopes = self
            .scopes
            .unwrap_or_else(|| "openid email profile".into())
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !scopes.split(' ').any(|s| s == "openid") {
            return Err(invalid("scopes must include openid"));
        }
        if let Some(t) = self.tenant_id.as_deref().filter(|t| !super::servers::valid_tenant(t)) {
            return Err(ApiError::new(Code::InvalidTenant, format!("tenant_id {t:?} is not a tenant name")));
        }
        if self.tenant_claim.as_deref().is_some_and(|c| !text_ok(c, 100)) {
            return Err(invalid(
                "tenant_claim must be a claim name of 1-100 characters without control characters",
            ));
        }
        let provider = OidcProvider {
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: self.client_secret,
            scopes,
        };
        Ok((provider, TenantRule { claim: self.tenant_claim, tenant_id: self.tenant_id }))
    }
}

/// `GET /api/v1/identity-providers`.
pub async fn list(_admin: PlatformAdmin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let rows = store::identity_providers(&mut conn).await.map_err(ApiError::internal)?;
    let items: Vec<IdentityProviderView> = rows.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// `POST /api/v1/identity-providers`: 201 once its discovery works.
pub async fn create(
    admin: PlatformAdmin,
    state: web::Data<AppState>,
    body: web::Json<IdentityProviderRequest>,
) -> Result<HttpResponse, ApiError> {
    let name = body.name.clone();
    let (provider, tenants) = body.into_inner().validate()?;
    let server = state.oauth.as_ref().ok_or_else(|| {
        ApiError::new(
            Code::IdentityProviderUnavailable,
            "the authorization server is off: start with --secrets-key",
        )
    })?;
    let probe = IdentityProvider::new(&name, provider.clone(), server.idp_fetcher.clone());
    probe.check().await.map_err(|e| ApiError::new(Code::IdentityProviderUnavailable, e.to_string()))?;
    let id = Uuid::new_v4();
    let sealed = server
        .secrets
        .seal(&idp_secret_context(id), provider.client_secret.as_bytes())
        .map_err(|_| ApiError::internal("cannot seal the client secret"))?;
    let row = IdentityProviderRow {
        id,
        name: name.clone(),
        issuer: provider.issuer,
        client_id: provider.client_id,
        client_secret: sealed,
        scopes: provider.scopes,
        created_at: Utc::now(),
        tenant_id: tenants.tenant_id,
        tenant_claim: tenants.claim,
    };
    let mut conn = state.conn().await?;
    let view = audited(&mut conn, async |conn| {
        if !store::create_identity_provider(conn, &row).await.map_err(ApiError::internal)? {
            return Err(ApiError::new(
                Code::IdentityProviderTaken,
                format!("an identity provider is already named {name:?}"),
            ));
        }
        let view = IdentityProviderView::from(row);
        let audit = Audit::created(target(id), &view);
        Ok((view, audit))
    })
    .await?;
    tracing::info!(%id, name, by = %admin.principal().label(), "Added an identity provider.");
    Ok(HttpResponse::Created().json(view))
}

/// `DELETE /api/v1/identity-providers/{id}`.
pub async fn delete(
    admin: PlatformAdmin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let not_found =
        || ApiError::new(Code::IdentityProviderNotFound, format!("no identity provider has id {raw:?}"));
    let id = Uuid::parse_str(&raw).map_err(|_| not_found())?;
    let mut conn = state.conn().await?;
    audited(&mut conn, async |conn| {
        let before = store::identity_providers(conn)
            .await
            .map_err(ApiError::internal)?
            .into_iter()
            .find(|p| p.id == id)
            .map(IdentityProviderView::from)
            .ok_or_else(not_found)?;
        if !store::delete_identity_provider(conn, id).await.map_err(ApiError::internal)? {
            return Err(not_found());
        }
        Ok(((), Audit::deleted(target(id), &before)))
    })
    .await?;
    tracing::info!(%id, by = %admin.principal().label(), "Removed an identity provider.");
    Ok(HttpResponse::NoContent().finish())
}
