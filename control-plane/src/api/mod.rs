//! The admin REST API: shared state and the route table; every answer that is not 2xx comes from `errors`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix_web::web::{self, ServiceConfig};

use crate::auth::AdminToken;
use crate::db::{DbConn, DbPool};
use crate::discovery::Discoverer;
use crate::hub::RoutingHub;
use crate::ssrf::SsrfPolicy;

mod admin;
mod bulk;
mod discovery;
mod docs;
pub mod errors;
mod extract;
mod health;
mod instances;
pub mod openapi;
pub mod servers;

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
    /// Endpoints the control plane refuses to register.
    pub ssrf: Arc<SsrfPolicy>,
    /// Runs discovery on registration and on demand.
    pub discoverer: Discoverer,
    /// This replica's name, and whether it leads the health checks now.
    pub replica_id: String,
    pub is_leader: Arc<AtomicBool>,
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
                .patch(servers::patch)
                .delete(servers::delete)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/servers/{id}/refresh")
                .post(servers::refresh)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/servers/{id}/health")
                .get(servers::health)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/discovery/tools")
                .get(discovery::tools)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/discovery/resources")
                .get(discovery::resources)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/admin/stats")
                .get(admin::stats)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/admin/export")
                .get(bulk::export)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/admin/import")
                .post(bulk::import)
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/v1/openapi.json")
                .get(openapi::document)
                .default_service(web::to(method_not_allowed)),
        )
        .service(web::resource("/docs").get(docs::page).default_service(web::to(method_not_allowed)))
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
