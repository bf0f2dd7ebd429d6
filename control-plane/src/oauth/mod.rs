//! The control plane as an OAuth 2.1 authorization server for MCP clients, signing users in at the
//! company IdP. Design and endpoints: `README.md` next to this file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, ResponseError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcpgw_proto::v1::resource::Kind;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::OauthConfig;
use crate::hub::RoutingHub;
use crate::jwks::JwksFetcher;

pub mod authorize;
mod clients;
pub mod exchange;
pub mod idp;
pub mod keys;
mod metadata;
pub use metadata::not_configured;
mod token;

pub use idp::IdentityProvider;
pub use keys::Keys;
pub use token::{AccessClaims, admin_resource, redeem_code, verify_admin_token};

/// Scopes the authorization server grants (`mcp` when a client asks for none).
pub const SCOPES: &[&str] = &["mcp", "offline_access"];
/// How long a user has to sign in and consent.
const REQUEST_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code may wait to be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);

/// Everything the authorization server's handlers share.
pub struct AuthServer {
    /// The exact issuer string.
    pub issuer: String,
    /// The proxies' public base URL (no trailing slash).
    pub public_url: String,
    pub config: OauthConfig,
    pub keys: Arc<Keys>,
    /// The company IdP of the `--oidc-*` flags (named `default`).
    pub flag_idp: Option<Arc<IdentityProvider>>,
    /// IdPs registered through REST, by id, built once (their discovery is cached in them).
    pub registered_idps: std::sync::Mutex<HashMap<uuid::Uuid, Arc<IdentityProvider>>>,
    /// Opens registered IdPs' client secrets.
    pub secrets: crate::secrets::SecretsKey,
    /// The HTTP client of IdP discovery and code redemption (the SSRF guard of registrations).
    pub idp_fetcher: JwksFetcher,
    /// Client ID metadata documents are fetched with this (stricter SSRF policy: no private addresses).
    pub documents: JwksFetcher,
    pub hub: Arc<RoutingHub>,
}

impl AuthServer {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Where the IdP sends users back.
    fn callback_url(&self) -> String {
        self.endpoint("/oauth/callback")
    }

    /// Whether `resource` is one tokens may be issued for: `<public-url>/mcp`, `<public-url>/mcp/{server}`
    /// of a registered server, or the admin API.
    fn known_resource(&self, resource: &str) -> bool {
        if resource == admin_resource(&self.issuer) {
            return true;
        }
        let Some(rest) = resource.strip_prefix(&self.public_url).and_then(|r| r.strip_prefix("/mcp")) else {
            return false;
        };
        match rest {
            "" => true,
            name => name.strip_prefix('/').is_some_and(|name| {
                self.hub.current().iter().any(|r| matches!(&r.kind, Some(Kind::Server(s)) if s.name == name))
            }),
        }
    }
}

impl AuthServer {
    /// Every IdP users may sign in at, by name: the flag one and those registered through REST.
    pub async fn providers(
        &self,
        pool: &crate::db::DbPool,
    ) -> Result<Vec<Arc<IdentityProvider>>, OAuthError> {
        let mut conn = pool.get().await.map_err(OAuthError::server_error)?;
        let rows =
            crate::db::store::oauth::identity_providers(&mut conn).await.map_err(OAuthError::server_error)?;
        drop(conn);
        let mut cache = self.registered_idps.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|id, _| rows.iter().any(|r| r.id == *id));
        let mut all: Vec<Arc<IdentityProvider>> = self.flag_idp.iter().cloned().collect();
        for row in rows {
            if let Some(idp) = cache.get(&row.id) {
                all.push(idp.clone());
                continue;
            }
            let secret = match self.secrets.open(&idp_secret_context(row.id), &row.client_secret) {
                Ok(secret) => String::from_utf8_lossy(&secret).into_owned(),
                Err(error) => {
                    tracing::error!(idp = row.name, %error, "An identity provider's client secret cannot be opened; it is left out.");
                    continue;
                }
            };
            let config = crate::config::OidcProvider {
                issuer: row.issuer,
                client_id: row.client_id,
                client_secret: secret,
                scopes: row.scopes,
            };
            let idp = Arc::new(IdentityProvider::new(&row.name, config, self.idp_fetcher.clone()));
            cache.insert(row.id, idp.clone());
            all.push(idp);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }
}

/// The sealing context of a registered IdP's client secret.
pub fn idp_secret_context(id: uuid::Uuid) -> String {
    format!("identity-provider:{id}")
}

/// SHA-256 of a secret, as stored.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The PKCE S256 challenge of a verifier.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// An OAuth error answered as JSON (`{"error", "error_description"}`, RFC 6749 §5.2), never cached.
#[derive(Debug, Clone)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into() }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub fn server_error(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "The authorization server failed.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the authorization server failed; see its log",
        )
    }

    pub fn unavailable(description: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", description)
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"mcpgw\""));
        }
        response.json(json!({"error": self.error, "error_description": self.description}))
    }
}

/// Form or query parameters; a repeated parameter is refused (RFC 6749 §3.1).
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(raw: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(raw) {
            if map.insert(name.to_string(), value.to_string()).is_some() {
                return Err(OAuthError::invalid_request(format!("the parameter {name:?} is repeated")));
            }
        }
        Ok(Self(map))
    }

    /// A parameter; empty counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("the parameter {name:?} is missing")))
    }
}

/// The routes of the authorization server (public: they authenticate clients and users themselves).
pub fn routes(cfg: &mut ServiceConfig, issuer_path: &str) {
    let path = issuer_path.trim_end_matches('/');
    cfg.service(
        web::resource(format!("/.well-known/oauth-authorization-server{path}"))
            .get(metadata::authorization_server),
    )
    .service(
        web::resource(format!("{path}/.well-known/openid-configuration")).get(metadata::openid_configuration),
    )
    .service(web::resource(format!("{path}/oauth/jwks")).get(metadata::jwks))
    .service(web::resource(format!("{path}/oauth/register")).post(clients::register))
    .service(web::resource(format!("{path}/oauth/authorize")).get(authorize::authorize))
    .service(web::resource(format!("{path}/oauth/callback")).get(authorize::callback))
    .service(web::resource(format!("{path}/oauth/login")).get(authorize::login))
    .service(
        web::resource(format!("{path}/oauth/consent")).get(authorize::consent_page).post(authorize::consent),
    )
    .service(web::resource(format!("{path}/oauth/token")).post(token::token));
    if !path.is_empty() {
        // OIDC discovery for an issuer with a path also at the origin form.
        cfg.service(
            web::resource(format!("/.well-known/openid-configuration{path}"))
                .get(metadata::openid_configuration),
        );
    }
}
