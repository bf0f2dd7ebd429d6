//! The admin REST API: shared state and the route table; every answer that is not 2xx comes from `errors`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix_web::middleware::from_fn;
use actix_web::web::{self, ServiceConfig};

use crate::auth::{SecretToken, authenticate};
use crate::db::{DbConn, DbPool};
use crate::discovery::Discoverer;
use crate::hub::RoutingHub;
use crate::jwks::JwksFetcher;
use crate::oauth::{AuthServer, OAuthError};
use crate::secrets::SecretsKey;
use crate::ssrf::SsrfPolicy;

mod admin;
pub mod api_keys;
pub mod audit;
pub mod audited;
pub mod bulk;
mod discovery;
mod docs;
pub mod errors;
mod extract;
mod health;
pub mod identity_providers;
mod instances;
pub mod openapi;
pub mod rate_limits;
pub mod roles;
pub mod servers;
pub mod trusted_issuers;
pub mod users;

pub use api_keys::ApiKeyRequest;
pub use errors::{ApiError, Code, ERROR_DOCS_LINK, ErrorType};
pub use servers::{CommandRequest, InstanceRequest, SecretEnvRequest, ServerRequest, UpstreamAuthRequest};
pub use trusted_issuers::TrustedIssuerRequest;

/// Pool of Redis connections used by readiness.
pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

/// Everything the handlers share.
pub struct AppState {
    pub pool: DbPool,
    pub hub: Arc<RoutingHub>,
    /// The bootstrap admin credential; without it only admin API keys are accepted.
    pub admin_token: Option<SecretToken>,
    /// Checked by /ready when configured.
    pub redis: Option<RedisPool>,
    /// Migration versions this binary embeds; /ready requires all of them applied.
    pub migrations: BTreeSet<String>,
    /// Largest accepted JSON body in bytes.
    pub body_limit: usize,
    /// Endpoints the control plane refuses to register.
    pub ssrf: Arc<SsrfPolicy>,
    /// Runs discovery on registration and on demand.
    pub discoverer: Discoverer,
    /// This replica's name, and whether it leads the health checks now.
    pub replica_id: String,
    pub is_leader: Arc<AtomicBool>,
    /// Seals new upstream credentials; without it they are refused (`secrets_key_not_configured`).
    pub secrets: Option<SecretsKey>,
    /// Fetches trusted issuers' metadata and JWKS when they are registered.
    pub jwks: JwksFetcher,
    /// The authorization server; `None` without `--secrets-key` (it could not keep signing keys).
    pub oauth: Option<Arc<AuthServer>>,
    /// The proxies' public base URL (`--public-url`), which the console shows MCP clients.
    pub public_url: String,
}

impl AppState {
    /// A pooled database connection, or 503 database_unavailable.
    pub async fn conn(&self) -> Result<DbConn<'_>, ApiError> {
        self.pool.get().await.map_err(ApiError::database_unavailable)
    }

    /// The authorization server, or 404 `not_configured` when it is off.
    pub fn oauth(&self) -> Result<&AuthServer, OAuthError> {
        self.oauth.as_deref().ok_or_else(crate::oauth::not_configured)
    }
}

/// The REST application: every route of [`routes`], behind the metrics middleware (request counts and
/// latency by route pattern).
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new().wrap(from_fn(crate::metrics::track)).configure(|cfg| routes(cfg, state))
}

/// Registers every route, the extractor configs that map actix's errors into the error table, and the
/// fallbacks for unknown paths and methods. Everything under `/api/v1` passes the `audited::track`
/// middleware (request id, audit records of changes), then the `authenticate` middleware, and every
/// handler there but the OpenAPI document takes a permission extractor (`Admin`, `PlatformAdmin`,
/// or for servers `ServerReader` / `ServerManager`); `/health`, `/ready`,
/// `/docs`, `/metrics` and `/api/v1/openapi.json` are public.
pub fn routes(cfg: &mut ServiceConfig, state: web::Data<AppState>) {
    let body_limit = state.body_limit;
    let issuer_path = state
        .oauth
        .as_ref()
        .and_then(|o| url::Url::parse(&o.issuer).ok())
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    crate::oauth::routes(cfg, &issuer_path);
    cfg.app_data(state)
        .app_data(extract::json_config(body_limit))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .service(resource("/health").get(health::health))
        .service(resource("/ready").get(health::ready))
        .service(resource("/docs").get(docs::page))
        .service(resource("/metrics").get(crate::metrics::serve))
        .configure(crate::console::routes)
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(authenticate))
                .wrap(from_fn(audited::track))
                .service(resource("/openapi.json").get(openapi::document))
                .service(resource("/servers").get(servers::list).post(servers::create))
                .service(
                    resource("/servers/{id}")
                        .get(servers::get)
                        .put(servers::replace)
                        .patch(servers::patch)
                        .delete(servers::delete),
                )
                .service(resource("/servers/{id}/refresh").post(servers::refresh))
                .service(resource("/servers/{id}/health").get(servers::health))
                .service(resource("/servers/{id}/instances").post(instances::add))
                .service(resource("/servers/{id}/instances/{instance_id}").delete(instances::remove))
                .service(resource("/discovery/tools").get(discovery::tools))
                .service(resource("/discovery/resources").get(discovery::resources))
                .service(resource("/admin/stats").get(admin::stats))
                .service(resource("/admin/export").get(bulk::export))
                .service(resource("/admin/import").post(bulk::import))
                .service(resource("/proxies").get(health::proxies))
                .service(resource("/api-keys").get(api_keys::list).post(api_keys::create))
                .service(resource("/api-keys/{id}").get(api_keys::get).delete(api_keys::delete))
                .service(
                    resource("/trusted-issuers").get(trusted_issuers::list).post(trusted_issuers::create),
                )
                .service(
                    resource("/trusted-issuers/{id}")
                        .get(trusted_issuers::get)
                        .patch(trusted_issuers::patch)
                        .delete(trusted_issuers::delete),
                )
                .service(resource("/users").get(users::list))
                .service(
                    resource("/identity-providers")
                        .get(identity_providers::list)
                        .post(identity_providers::create),
                )
                .service(resource("/identity-providers/{id}").delete(identity_providers::delete))
                .service(resource("/roles").get(roles::list).post(roles::create))
                .service(resource("/roles/{id}").delete(roles::delete))
                .service(resource("/rate-limits").get(rate_limits::list).post(rate_limits::create))
                .service(resource("/rate-limits/{id}").delete(rate_limits::delete))
                .service(resource("/audit").get(audit::list))
                .default_service(web::to(route_not_found)),
        )
        .default_service(web::to(route_not_found));
}

/// A resource whose other methods answer 405 from the error table.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn route_not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Code::RouteNotFound, format!("no route matches {} {}", req.method(), req.path())))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Code::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.path())))
}
