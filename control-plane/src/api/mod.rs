//! The admin REST API: shared state and the route table; every answer that is not 2xx comes from `errors`.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};

use crate::auth::AdminToken;
use crate::db::{DbConn, DbPool};
use crate::hub::RoutingHub;

pub mod errors;
mod extract;
mod health;
mod instances;
mod servers;

pub use errors::{ApiError, Code, ERROR_DOCS_LINK, ErrorType};
pub use servers::{InstanceRequest, ServerRequest};

/// Pool of Redis connections used by readiness.
pub type RedisPool = bb8::Pool<bb8_redis::RedisConnectionManager>;

/// Everything the handlers share.
pub struct AppState {
    pub pool: DbPool,
    pub hub: Arc<RoutingHub>,
    /// `None` refuses every mutation.
    pub admin_token: Option<AdminToken>,
    /// Checked by /ready when configured.
    pub redis: Option<RedisPool>,
    /// Migration versions this binary embeds; /ready requires all of them applied.
    pub migrations: BTreeSet<String>,
    /// Largest accepted JSON body in bytes.
    pub body_limit: usize,
}

impl AppState {
    /// A pooled database connection, or 503 database_unavailable.
    pub async fn conn(&self) -> Result<DbConn<'_>, ApiError> {
        self.pool.get().await.map_err(ApiError::database_unavailable)
    }
}

/// Registers every route, the extractor configs that map actix's errors into the error table, and the
/// fallbacks for unknown paths and methods.
pub fn routes(cfg: &mut ServiceConfig, state: web::Data<AppState>) {
    let body_limit = state.body_limit;
    cfg.app_data(state)
        .app_data(extract::json_config(body_limit))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .service(web::resource("/health").get(health::health).default_service(web::to(method_not_allowed)))
        .service(web::resource("/ready").get(health::ready).default_service(web::to(method_not_allowed)))
        .service(
            web::resource("/api/v1/servers")
                .get(servers::list)
                .post(servers::create)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/servers/{id}")
                .get(servers::get)
                .put(servers::replace)
                .delete(servers::delete)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/servers/{id}/instances")
                .post(instances::add)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/servers/{id}/instances/{instance_id}")
                .delete(instances::remove)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/proxies")
                .get(health::proxies)
                .default_service(web::to(method_not_allowed)),
        )
        .default_service(web::to(route_not_found));
}

async fn route_not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Code::RouteNotFound, format!("no route matches {} {}", req.method(), req.path())))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::new(Code::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.path())))
}
