//! The OpenAPI 3.1 document of the REST API, generated from the code by utoipa: the request and response
//! types derive their schemas, and each route is described here next to the others. The `Credential`
//! modifier marks every `/api/v1` operation as needing the admin credential, with its 401 and 403. A
//! tenant administrator (an `admin` API key) reads and changes its own tenant only; the routes for
//! platform administrators alone say so in their 403. The server routes also admit a `server_owner`
//! (`ServerReader`, `ServerManager`): each says in its description and 403 what that role may do there.
// The stub functions below only carry the `#[utoipa::path]` descriptions; they are never called.
#![allow(dead_code)]

use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::api_keys::ApiKeyRequest;
use super::bulk::RegistryDoc;
use super::errors::ErrorBody;
use super::identity_providers::{IdentityProviderRequest, IdentityProviderView};
use super::rate_limits::RateLimitRequest;
use super::roles::RoleRequest;
use super::servers::{CommandRequest, InstanceRequest, ServerRequest, UpstreamAuthRequest};
use super::trusted_issuers::{ClaimsRequest, TrustedIssuerRequest};
use super::users::UserView;
use crate::db::store::audit::AuditRow;
use crate::db::store::discovery::DiscoveryRow;
use crate::db::store::rate_limits::RateLimitRow;
use crate::db::store::roles::RoleRow;
use crate::model::{
    ApiKeyView, CircuitBreaker, ClaimsView, CommandView, CreatedApiKey, HealthCheck, HealthRecord,
    HealthStatus, InstanceView, KeyView, PassiveRow, PermissionRule, ServerView, TrustedIssuerView,
    UpstreamAuthView,
};
use crate::proxies::{Nack, ProxyInfo, Traffic};

/// A JSON merge patch (RFC 7396) of a registration: any `ServerRequest` fields; `null` resets one.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
pub struct MergePatch(serde_json::Value);

/// A JSON merge patch (RFC 7396) of a trusted issuer: any `TrustedIssuerRequest` fields (`claims` merges
/// member by member); `null` resets one to its default.
#[derive(utoipa::ToSchema)]
#[schema(value_type = Object)]
pub struct IssuerMergePatch(serde_json::Value);

/// Name of the security scheme every `/api/v1` operation requires.
const SCHEME: &str = "admin_token";

struct Credential;

impl Modify for Credential {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("--admin-token, an API key (`mcpgw_…`) with the `platform_admin` role (every tenant) or the `admin` role (its tenant), or a signed-in administrator's access token; on the server routes also a `server_owner` API key or signed-in user (its tenant's servers to read, the servers it registered to change)"))
                    .build(),
            ),
        );
        let error = |description: &str| -> RefOr<utoipa::openapi::Response> {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            ResponseBuilder::new().description(description).content("application/json", body).build().into()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                require_credential(operation, &error);
            }
        }
    }
}

fn require_credential(operation: &mut Operation, error: &dyn Fn(&str) -> RefOr<utoipa::openapi::Response>) {
    operation.security = Some(vec![SecurityRequirement::new(SCHEME, Vec::<String>::new())]);
    let responses = &mut operation.responses.responses;
    responses.entry("401".into()).or_insert_with(|| {
        error("no credential, or an invalid, revoked or expired one (missing_authorization, invalid_admin_token, invalid_api_key, admin_token_not_configured)")
    });
    responses
        .entry("403".into())
        .or_insert_with(|| error("a credential without an administrator's role (`server_owner` counts on the server routes only); a tenant administrator writing into another tenant or on a route for platform administrators: trusted issuers, identity providers, proxies (insufficient_permissions)"));
}

#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, description = "the process is up")))]
fn health() {}
#[utoipa::path(get, path = "/ready", tag = "health", responses((status = 200, description = "ready"), (status = 503, description = "not ready, with the failed checks")))]
fn ready() {}
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format: REST requests and latency by route pattern, audit ingest, health checks, discovery runs, routing versions published, connected and lagging proxies, the database pool (README, Metrics)", content_type = "text/plain")))]
fn metrics() {}
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers",
    description = "Permission: read servers (`ServerReader`): administrators, and `server_owner` holders, who see every server of their tenant.",
    params(("tenant_id" = Option<String>, Query), ("health_status" = Option<HealthStatus>, Query), ("tags" = Option<String>, Query, description = "comma-separated, all required"),
        ("transport_type" = Option<String>, Query), ("name" = Option<String>, Query), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000),
        ("offset" = Option<u32>, Query), ("include_tools" = Option<bool>, Query), ("include_resources" = Option<bool>, Query), ("include_prompts" = Option<bool>, Query)),
    responses((status = 200, description = "servers by name; X-Total-Count and Link headers page them", body = Vec<ServerView>), (status = 400, description = "see the error table", body = ErrorBody),
        (status = 403, description = "neither an administrator nor a `server_owner` (insufficient_permissions)", body = ErrorBody)))]
fn list_servers() {}
#[utoipa::path(post, path = "/api/v1/servers", tag = "servers", request_body = ServerRequest,
    description = "Permission: manage servers (`ServerManager`): administrators, and `server_owner` holders into their own tenant. The caller becomes the server's `owner` (null for the admin token). Transports: `streamable_http` and `sse` take http(s) endpoint URLs, `websocket` ws:// or wss:// ones, `stdio` a `command` instead (its program must be listed in the control plane's `--stdio-programs`: 400 `stdio_not_allowed` otherwise; `command.secret_env` values are sealed with `--secrets-key` and never returned).",
    responses((status = 201, body = ServerView),
        (status = 403, description = "neither an administrator nor a `server_owner`, or a `tenant_id` other than the caller's own tenant (insufficient_permissions)", body = ErrorBody), (status = 400, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody), (status = 413, description = "see the error table", body = ErrorBody), (status = 415, description = "see the error table", body = ErrorBody)))]
fn create_server() {}
#[utoipa::path(get, path = "/api/v1/servers/{id}", tag = "servers",
    description = "Permission: read servers (`ServerReader`): administrators, and `server_owner` holders, who see every server of their tenant.",
    params(("id" = String, Path), ("include_tools" = Option<bool>, Query), ("include_resources" = Option<bool>, Query), ("include_prompts" = Option<bool>, Query)),
    responses((status = 200, body = ServerView), (status = 404, description = "missing, or of a tenant the caller does not see (server_not_found)", body = ErrorBody), (status = 403, description = "neither an administrator nor a `server_owner` (insufficient_permissions)", body = ErrorBody)))]
fn get_server() {}
#[utoipa::path(put, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = String, Path)), request_body = ServerRequest,
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`. The owner stays.",
    responses((status = 200, body = ServerView), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 400, description = "see the error table", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody)))]
fn replace_server() {}
#[utoipa::path(patch, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = String, Path)), request_body = MergePatch,
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`. The owner stays.",
    responses((status = 200, body = ServerView), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 400, description = "see the error table", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody)))]
fn patch_server() {}
#[utoipa::path(delete, path = "/api/v1/servers/{id}", tag = "servers", params(("id" = String, Path)),
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`.",
    responses((status = 204, description = "deleted"), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody)))]
fn delete_server() {}
#[utoipa::path(post, path = "/api/v1/servers/{id}/instances", tag = "instances", params(("id" = String, Path)), request_body = InstanceRequest,
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`. The instance follows its server's transport: an `endpoint_url` (ws:// or wss:// for `websocket`), or a `command` for `stdio` (one instance per program).",
    responses((status = 201, body = InstanceView), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 400, description = "see the error table", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody)))]
fn add_instance() {}
#[utoipa::path(delete, path = "/api/v1/servers/{id}/instances/{instance_id}", tag = "instances", params(("id" = String, Path), ("instance_id" = String, Path)),
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`.",
    responses((status = 204, description = "removed"), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody)))]
fn remove_instance() {}
#[utoipa::path(post, path = "/api/v1/servers/{id}/refresh", tag = "discovery", params(("id" = String, Path)),
    description = "Permission: manage this server (`ServerManager`): an administrator of its tenant, or its `owner` holding `server_owner`.",
    responses((status = 200, description = "discovered; the server with its tools, resources and prompts", body = ServerView), (status = 403, description = "neither an administrator nor a `server_owner`, or a `server_owner` that did not register this server (insufficient_permissions)", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody), (status = 502, description = "see the error table", body = ErrorBody)))]
fn refresh_server() {}
#[utoipa::path(get, path = "/api/v1/servers/{id}/health", tag = "health", params(("id" = String, Path)),
    description = "Permission: read servers (`ServerReader`): administrators, and `server_owner` holders, who see every server of their tenant.",
    responses((status = 200, description = "instances with status, recent history and each proxy's breaker state"), (status = 403, description = "neither an administrator nor a `server_owner` (insufficient_permissions)", body = ErrorBody), (status = 404, description = "see the error table", body = ErrorBody)))]
fn server_health() {}
#[utoipa::path(get, path = "/api/v1/discovery/tools", tag = "discovery",
    params(("tools" = Option<String>, Query, description = "comma-separated; servers offering all"), ("tags" = Option<String>, Query), ("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's search; a tenant administrator searches its own tenant")),
    responses((status = 200, description = "{tools, servers: [{id, name, endpoint_url, health_status, tools}]}, among the servers of the tenants the caller manages"), (status = 400, description = "see the error table", body = ErrorBody)))]
fn discover_tools() {}
#[utoipa::path(get, path = "/api/v1/discovery/resources", tag = "discovery",
    params(("resources" = Option<String>, Query, description = "comma-separated URI patterns (* wildcard; else prefix)"), ("tags" = Option<String>, Query), ("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's search; a tenant administrator searches its own tenant")),
    responses((status = 200, description = "{resources, servers: [{..., resources}]}, among the servers of the tenants the caller manages"), (status = 400, description = "see the error table", body = ErrorBody)))]
fn discover_resources() {}
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "admin",
    params(("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's counts; a tenant administrator counts its own tenant")),
    responses((status = 200, description = "servers by status, transport and tenant, instances and capabilities of the tenants the caller manages; for platform administrators also routing_version, health_checks (leader) and proxies_connected"),
        (status = 400, description = "see the error table", body = ErrorBody)))]
fn stats() {}
#[utoipa::path(get, path = "/api/v1/admin/export", tag = "admin",
    params(("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's export; a tenant administrator exports its own tenant")),
    responses((status = 200, description = "the servers of the tenants the caller manages as YAML", body = RegistryDoc, content_type = "application/yaml"),
        (status = 400, description = "see the error table", body = ErrorBody)))]
fn export() {}
#[utoipa::path(post, path = "/api/v1/admin/import", tag = "admin",
    params(("dry_run" = Option<bool>, Query), ("prune" = Option<bool>, Query)),
    request_body(content = RegistryDoc, content_type = "application/yaml"),
    responses((status = 200, description = "{dry_run, created, updated, deleted, unchanged, changes}; a tenant administrator's prune deletes its own tenant's servers only"), (status = 400, description = "see the error table", body = ErrorBody),
        (status = 403, description = "a tenant administrator's document names another tenant (insufficient_permissions); nothing is written", body = ErrorBody),
        (status = 409, description = "a tenant administrator's document names a server of another tenant (server_name_taken); nothing is written", body = ErrorBody)))]
fn import() {}
#[utoipa::path(get, path = "/api/v1/proxies", tag = "health", responses((status = 200, body = Vec<ProxyInfo>),
    (status = 403, description = "proxies are shared by every tenant: platform administrators only (insufficient_permissions)", body = ErrorBody)))]
fn proxies() {}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = ApiKeyRequest,
    responses((status = 201, description = "the key, with its secret `key` shown only in this answer", body = CreatedApiKey), (status = 400, description = "see the error table", body = ErrorBody), (status = 413, description = "see the error table", body = ErrorBody), (status = 415, description = "see the error table", body = ErrorBody)))]
fn create_api_key() {}
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    responses((status = 200, description = "every key, oldest first, without secrets", body = Vec<ApiKeyView>)))]
fn list_api_keys() {}
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyView), (status = 404, description = "see the error table", body = ErrorBody)))]
fn get_api_key() {}
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 204, description = "deleted: refused by this API at once and by every proxy within a second"), (status = 404, description = "see the error table", body = ErrorBody)))]
fn delete_api_key() {}

#[utoipa::path(post, path = "/api/v1/trusted-issuers", tag = "trusted-issuers", request_body = TrustedIssuerRequest,
    responses((status = 201, description = "trusted: its metadata and JWKS were fetched and checked; every proxy accepts its tokens", body = TrustedIssuerView),
        (status = 400, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody),
        (status = 502, description = "the metadata or JWKS could not be fetched or used (jwks_fetch_failed); nothing was written", body = ErrorBody)))]
fn create_trusted_issuer() {}
#[utoipa::path(get, path = "/api/v1/trusted-issuers", tag = "trusted-issuers",
    responses((status = 200, description = "every trusted issuer, oldest first, with its keys and the last refresh's outcome", body = Vec<TrustedIssuerView>)))]
fn list_trusted_issuers() {}
#[utoipa::path(get, path = "/api/v1/trusted-issuers/{id}", tag = "trusted-issuers", params(("id" = String, Path)),
    responses((status = 200, body = TrustedIssuerView), (status = 404, description = "see the error table", body = ErrorBody)))]
fn get_trusted_issuer() {}
#[utoipa::path(patch, path = "/api/v1/trusted-issuers/{id}", tag = "trusted-issuers", params(("id" = String, Path)), request_body = IssuerMergePatch,
    responses((status = 200, body = TrustedIssuerView), (status = 400, description = "see the error table", body = ErrorBody),
        (status = 404, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody),
        (status = 502, description = "a changed issuer or jwks_uri could not be fetched; nothing was written", body = ErrorBody)))]
fn patch_trusted_issuer() {}
#[utoipa::path(delete, path = "/api/v1/trusted-issuers/{id}", tag = "trusted-issuers", params(("id" = String, Path)),
    responses((status = 204, description = "removed: its tokens are refused by every proxy"), (status = 404, description = "see the error table", body = ErrorBody)))]
fn delete_trusted_issuer() {}

/// The users' list answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UserList {
    items: Vec<UserView>,
}
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's list; a tenant administrator lists its own tenant")),
    responses((status = 200, description = "the users of the tenants the caller manages who signed in through the authorization server, oldest first", body = UserList),
        (status = 400, description = "see the error table", body = ErrorBody)))]
fn list_users() {}

/// The identity providers' list answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct IdentityProviderList {
    items: Vec<IdentityProviderView>,
}
#[utoipa::path(get, path = "/api/v1/identity-providers", tag = "users",
    responses((status = 200, description = "the IdPs registered through REST (the --oidc-* one is not listed)", body = IdentityProviderList),
        (status = 403, description = "platform administrators only (insufficient_permissions)", body = ErrorBody)))]
fn list_identity_providers() {}
#[utoipa::path(post, path = "/api/v1/identity-providers", tag = "users", request_body = IdentityProviderRequest,
    responses((status = 201, description = "registered after its discovery worked; the secret is never shown", body = IdentityProviderView),
        (status = 400, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody),
        (status = 403, description = "platform administrators only (insufficient_permissions)", body = ErrorBody),
        (status = 502, description = "its metadata or keys could not be fetched; nothing was written", body = ErrorBody)))]
fn create_identity_provider() {}
#[utoipa::path(delete, path = "/api/v1/identity-providers/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204, description = "removed: nobody can sign in there any more"), (status = 404, description = "see the error table", body = ErrorBody),
        (status = 403, description = "platform administrators only (insufficient_permissions)", body = ErrorBody)))]
fn delete_identity_provider() {}

/// The roles' list answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RoleList {
    items: Vec<RoleRow>,
}
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    responses((status = 200, description = "every custom role (built-in roles are not listed)", body = RoleList)))]
fn list_roles() {}
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles", request_body = RoleRequest,
    responses((status = 201, description = "created and published to every proxy", body = RoleRow),
        (status = 400, description = "see the error table", body = ErrorBody), (status = 409, description = "see the error table", body = ErrorBody)))]
fn create_role() {}
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "roles", params(("id" = String, Path)),
    responses((status = 204, description = "deleted: its holders lose what it allowed on every proxy"), (status = 404, description = "see the error table", body = ErrorBody)))]
fn delete_role() {}

/// The rate limits' list answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RateLimitList {
    items: Vec<RateLimitRow>,
}
#[utoipa::path(get, path = "/api/v1/rate-limits", tag = "rate-limits",
    responses((status = 200, description = "every rate limit of the tenants the caller manages", body = RateLimitList)))]
fn list_rate_limits() {}
#[utoipa::path(post, path = "/api/v1/rate-limits", tag = "rate-limits", request_body = RateLimitRequest,
    responses((status = 201, description = "created and published to every proxy", body = RateLimitRow),
        (status = 400, description = "see the error table", body = ErrorBody)))]
fn create_rate_limit() {}
#[utoipa::path(delete, path = "/api/v1/rate-limits/{id}", tag = "rate-limits", params(("id" = String, Path)),
    responses((status = 204, description = "deleted on every proxy"), (status = 404, description = "see the error table", body = ErrorBody)))]
fn delete_rate_limit() {}

/// A page of audit records.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditPage {
    items: Vec<AuditRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    description = "One record per MCP request through any proxy (`kind` `mcp`) and per admin change (`admin`), newest first (`time`, then `id`, descending). Every filter but `since`/`until` matches exactly; an empty `server` or `tool` matches records without one. A tenant administrator reads its own tenant's records; a platform administrator every tenant's (records of unauthenticated requests have an empty `tenant_id`), or the one `tenant_id` names. `format=csv` (or `Accept: text/csv`) streams every matching row as RFC 4180 CSV (header row; after `cursor`, at most `limit` rows when given, any positive number); a database failure mid-stream cuts the response short.",
    params(("since" = Option<String>, Query, description = "RFC 3339, inclusive"), ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("tenant_id" = Option<String>, Query, description = "narrows a platform administrator's read; a tenant administrator naming another tenant gets 403"),
        ("principal" = Option<String>, Query), ("server" = Option<String>, Query), ("tool" = Option<String>, Query, description = "the tool, prompt or resource (`target`)"),
        ("method" = Option<String>, Query), ("outcome" = Option<String>, Query), ("kind" = Option<String>, Query, description = "`mcp` or `admin`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, default 100"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`")),
    responses((status = 200, description = "a page of records; or the CSV document", body = AuditPage), (status = 400, description = "a bad date-time, kind, format, limit or cursor, or an unknown parameter (invalid_query)", body = ErrorBody),
        (status = 403, description = "not an administrator, or a tenant administrator naming another tenant (insufficient_permissions)", body = ErrorBody)))]
fn list_audit() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "mcpgw control plane", description = "Registry of MCP servers, health and discovery; errors: control-plane/README.md#errors"),
    paths(health, ready, metrics, list_servers, create_server, get_server, replace_server, patch_server, delete_server, add_instance,
        remove_instance, refresh_server, server_health, discover_tools, discover_resources, stats, export, import, proxies,
        create_api_key, list_api_keys, get_api_key, delete_api_key, create_trusted_issuer, list_trusted_issuers,
        get_trusted_issuer, patch_trusted_issuer, delete_trusted_issuer, list_users, list_identity_providers,
        create_identity_provider, delete_identity_provider, list_roles, create_role, delete_role,
        list_rate_limits, create_rate_limit, delete_rate_limit, list_audit),
    components(schemas(ServerRequest, InstanceRequest, CommandRequest, CommandView, ServerView, InstanceView, CircuitBreaker, HealthCheck, HealthStatus,
        HealthRecord, PassiveRow, DiscoveryRow, ErrorBody, RegistryDoc, ProxyInfo, Nack, Traffic, MergePatch, ApiKeyRequest, ApiKeyView,
        CreatedApiKey, PermissionRule, UpstreamAuthRequest, UpstreamAuthView, TrustedIssuerRequest, ClaimsRequest,
        TrustedIssuerView, ClaimsView, KeyView, IssuerMergePatch, UserView, UserList, IdentityProviderRequest, IdentityProviderView, IdentityProviderList, RoleRequest, RoleRow, RoleList, RateLimitRequest, RateLimitRow, RateLimitList, AuditRow, AuditPage)),
    modifiers(&Credential),
    tags((name = "servers"), (name = "instances"), (name = "discovery"), (name = "health"), (name = "admin"), (name = "api-keys"), (name = "trusted-issuers"), (name = "users"), (name = "roles"), (name = "rate-limits"), (name = "audit"))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
