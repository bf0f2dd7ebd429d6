//! Registry queries. Every mutation bumps `routing_state.version` in its own transaction, so a reader that
//! sees the new version also sees the change.

use std::collections::HashMap;

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{Bool, Nullable};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{instances, routing_state, servers};
use crate::model::{
    ApiKeyRow, CatalogCache, CredentialIndex, DEFAULT_TENANT, InstanceRow, Owner, ServerRow, ServerSpec,
    StoredCatalog, TrustedIssuerRow,
};
use crate::secrets::SecretsKey;

pub mod api_keys;
pub mod audit;
pub mod capabilities;
pub mod console;
pub mod discovery;
pub mod health;
mod instances_ops;
pub mod oauth;
pub mod rate_limits;
pub mod roles;
pub mod trusted_issuers;
pub mod upstream_auth;

pub use instances_ops::{add_instance, remove_instance};

/// Name of the unique constraint on `servers.name` (see the migrations).
const NAME_CONSTRAINT: &str = "servers_name_key";
/// Name of the unique constraint on `(instances.server_id, instances.endpoint_url)`.
const ENDPOINT_CONSTRAINT: &str = "instances_server_endpoint_key";

/// Why a registry mutation did not happen. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a server named {0:?} already exists")]
    NameTaken(String),
    #[error("no server has id {0}")]
    NotFound(Uuid),
    /// The server changed since the version the write was based on (`If-Match`, a PATCH's read).
    #[error("server {0} changed since it was read")]
    Changed(Uuid),
    #[error("server {server} has no instance {instance}")]
    InstanceNotFound { server: Uuid, instance: Uuid },
    #[error("the server already has an instance at {0}")]
    EndpointTaken(String),
    /// `upstream_auth` without a value, and no credential stored to keep (the string names the owner).
    #[error("no upstream credential is stored for {0}")]
    CredentialMissing(String),
    /// A stdio instance's `secret_env` keeps a value none is stored for (the string is its name).
    #[error("no value is stored for the secret environment variable {0}")]
    SecretEnvMissing(String),
    #[error("a new upstream credential needs --secrets-key")]
    NoSecretsKey,
    #[error("the upstream credential could not be sealed")]
    Seal,
    #[error(transparent)]
    Db(#[from] DieselError),
}

/// A server with its instances in `seq` order.
pub type ServerWithInstances = (ServerRow, Vec<InstanceRow>);

/// Every server, ordered by name.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ServerRow>> {
    list_in(conn, None).await
}

/// A condition on `servers` that holds for the servers of one tenant.
pub type TenantFilter = Box<dyn BoxableExpression<servers::table, Pg, SqlType = Nullable<Bool>>>;

/// The servers of `tenant`; a server stored without a tenant belongs to `default`.
pub fn in_tenant(tenant: &str) -> TenantFilter {
    if tenant == DEFAULT_TENANT {
        Box::new(servers::tenant_id.eq(tenant.to_owned()).or(servers::tenant_id.is_null()))
    } else {
        Box::new(servers::tenant_id.eq(tenant.to_owned()))
    }
}

/// The servers of `tenant` (every tenant's when `None`), ordered by name.
pub async fn list_in(conn: &mut AsyncPgConnection, tenant: Option<&str>) -> QueryResult<Vec<ServerRow>> {
    let mut query = servers::table.select(ServerRow::as_select()).order(servers::name.asc()).into_boxed();
    if let Some(tenant) = tenant {
        query = query.filter(in_tenant(tenant));
    }
    query.load(conn).await
}

/// The instances of `ids` (all servers when `None`), grouped by server, each group in `seq` order.
pub async fn instances_of(
    conn: &mut AsyncPgConnection,
    ids: Option<&[Uuid]>,
) -> QueryResult<HashMap<Uuid, Vec<InstanceRow>>> {
    let mut query =
        instances::table.select(InstanceRow::as_select()).order(instances::seq.asc()).into_boxed();
    if let Some(ids) = ids {
        query = query.filter(instances::server_id.eq_any(ids.to_vec()));
    }
    let rows: Vec<InstanceRow> = query.load(conn).await?;
    let mut grouped: HashMap<Uuid, Vec<InstanceRow>> = HashMap::new();
    for row in rows {
        grouped.entry(row.server_id).or_default().push(row);
    }
    Ok(grouped)
}

/// One server with its instances, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<ServerWithInstances>> {
    let Some(server) = servers::table.find(id).select(ServerRow::as_select()).first(conn).await.optional()?
    else {
        return Ok(None);
    };
    let instances = instances_of(conn, Some(&[id])).await?.remove(&id).unwrap_or_default();
    Ok(Some((server, instances)))
}

/// The current routing version.
pub async fn routing_version(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    routing_state::table.find(1i16).select(routing_state::version).first(conn).await
}

/// Everything the routing table is built from, read in one snapshot.
pub struct RoutingSnapshot {
    pub version: i64,
    pub servers: Vec<ServerRow>,
    pub instances: HashMap<Uuid, Vec<InstanceRow>>,
    /// Active health status per instance (instances without a row are unknown).
    pub health: HashMap<Uuid, String>,
    /// Every API key, expired ones included (proxies check the expiry themselves).
    pub api_keys: Vec<ApiKeyRow>,
    /// Every upstream credential (sealed).
    pub credentials: CredentialIndex,
    /// Every trusted issuer (those without a JWKS yet are not published).
    pub issuers: Vec<TrustedIssuerRow>,
    /// The public keys of the control plane's own authorization server still published, newest first.
    pub signing_keys: Vec<serde_json::Value>,
    /// The tokens obtained for client credentials credentials, by credential id (sealed).
    pub tokens: HashMap<Uuid, crate::model::UpstreamTokenRow>,
    /// Every custom role.
    pub roles: Vec<roles::RoleRow>,
    /// Every rate limit.
    pub rate_limits: Vec<rate_limits::RateLimitRow>,
    /// The stored catalog digest of every server with a successful discovery (`None`: stored before
    /// digests were kept); the servers missing here have no catalog.
    pub catalog_digests: HashMap<Uuid, Option<Vec<u8>>>,
    /// In full, the catalogs of those servers whose stored digest is not the one `cached` holds.
    pub catalogs: HashMap<Uuid, StoredCatalog>,
}

/// The routing version, every server, instance, API key, credential and trusted issuer, and every
/// server's catalog digest, read from one consistent snapshot; the catalogs themselves only of the servers
/// whose digest differs from the one in `cached` (what the hub published last).
pub async fn routing_snapshot(
    conn: &mut AsyncPgConnection,
    cached: &CatalogCache,
) -> QueryResult<RoutingSnapshot> {
    conn.build_transaction()
        .repeatable_read()
        .read_only()
        .run(async |conn| {
            let version = routing_version(conn).await?;
            let servers = list(conn).await?;
            let instances = instances_of(conn, None).await?;
            let health = super::schema::instance_health::table
                .select((super::schema::instance_health::instance_id, super::schema::instance_health::status))
                .load::<(Uuid, String)>(conn)
                .await?
                .into_iter()
                .collect();
            let api_keys = api_keys::list(conn).await?;
            let credentials = upstream_auth::all(conn).await?;
            let issuers = trusted_issuers::list(conn).await?;
            let signing_keys = oauth::published_keys(conn).await?.into_iter().map(|k| k.public_jwk).collect();
            let tokens = upstream_auth::tokens(conn).await?;
            let roles = roles::list(conn).await?;
            let rate_limits = rate_limits::list(conn).await?;
            let catalog_digests = discovery::catalog_digests(conn).await?;
            let stale: Vec<Uuid> = catalog_digests
                .iter()
                .filter(|(id, digest)| {
                    cached
                        .get(*id)
                        .is_none_or(|(known, _)| known.as_slice() != digest.as_deref().unwrap_or_default())
                })
                .map(|(id, _)| *id)
                .collect();
            let catalogs = discovery::catalogs(conn, &stale).await?;
            Ok(RoutingSnapshot {
                version,
                servers,
                instances,
                health,
                api_keys,
                credentials,
                issuers,
                signing_keys,
                tokens,
                roles,
                rate_limits,
                catalog_digests,
                catalogs,
            })
        })
        .await
}

/// Bumps the routing version (the migration's trigger also notifies other replicas on commit).
pub(crate) async fn bump_version(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    diesel::update(routing_state::table.find(1i16))
        .set(routing_state::version.eq(routing_state::version + 1))
        .returning(routing_state::version)
        .get_result(conn)
        .await
}

fn constraint_error(error: DieselError, name: &str, endpoint: Option<&str>) -> StoreError {
    if let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = &error {
        match info.constraint_name() {
            Some(NAME_CONSTRAINT) => return StoreError::NameTaken(name.to_owned()),
            Some(ENDPOINT_CONSTRAINT) => {
                return StoreError::EndpointTaken(endpoint.unwrap_or("that endpoint").to_owned());
            }
            _ => {}
        }
    }
    StoreError::Db(error)
}

/// Registers a new server owned by `owner` (the registering principal's label; `None` for the admin token)
/// with its instances and credentials (new secrets sealed with `key`). A taken name is reported by the
/// unique constraint, so two concurrent registrations of one name cannot both succeed. The owner is written
/// here only: `replace` keeps it.
pub async fn create(
    conn: &mut AsyncPgConnection,
    spec: &ServerSpec,
    owner: Option<&str>,
    key: Option<&SecretsKey>,
) -> Result<(ServerWithInstances, i64), StoreError> {
    let spec = spec.clone();
    conn.transaction(async |conn| {
        let server = diesel::insert_into(servers::table)
            .values((servers::id.eq(Uuid::new_v4()), servers::owner.eq(owner), server_values(&spec)))
            .returning(ServerRow::as_returning())
            .get_result(conn)
            .await
            .map_err(|e| constraint_error(e, &spec.name, None))?;
        upstream_auth::write(conn, Owner::Server(server.id), &spec.upstream_auth, key, "the server").await?;
        let instances = instances_ops::reconcile(conn, server.id, &[], &spec.instances, key).await?;
        let version = bump_version(conn).await?;
        Ok(((server, instances), version))
    })
    .await
}

/// The writable columns of `servers`, from a spec (None is written as NULL).
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = servers, treat_none_as_null = true)]
struct ServerValues<'a> {
    name: &'a str,
    transport_type: &'static str,
    description: Option<&'a str>,
    tags: &'a [String],
    load_balancing: &'static str,
    hash_key: Option<&'a str>,
    circuit_breaker: Option<serde_json::Value>,
    tenant_id: Option<&'a str>,
    version: Option<&'a str>,
    capabilities: serde_json::Value,
    auto_discover: bool,
    health_check_enabled: bool,
    health_interval_ms: Option<i32>,
    health_timeout_ms: Option<i32>,
    healthy_threshold: Option<i32>,
    unhealthy_threshold: Option<i32>,
    audit_arguments: &'static str,
    name_prefix: &'static str,
    priority: i32,
}

fn server_values(spec: &ServerSpec) -> ServerValues<'_> {
    let int = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
    let h = spec.health_check;
    ServerValues {
        name: &spec.name,
        transport_type: spec.transport.as_str(),
        description: spec.description.as_deref(),
        tags: &spec.tags,
        load_balancing: spec.load_balancing.as_str(),
        hash_key: spec.hash_key.as_deref(),
        circuit_breaker: spec.circuit_breaker.as_ref().and_then(|b| serde_json::to_value(b).ok()),
        tenant_id: spec.tenant_id.as_deref(),
        version: spec.version.as_deref(),
        capabilities: serde_json::Value::Object(spec.capabilities.clone()),
        auto_discover: spec.auto_discover,
        health_check_enabled: h.enabled,
        health_interval_ms: int(h.interval_ms),
        health_timeout_ms: int(h.timeout_ms),
        healthy_threshold: int(h.healthy_threshold),
        unhealthy_threshold: int(h.unhealthy_threshold),
        audit_arguments: spec.audit_arguments.as_str(),
        name_prefix: spec.name_prefix.as_str(),
        priority: spec.priority,
    }
}

/// Replaces every writable field of a server. Instances are matched by endpoint URL: a kept URL keeps its
/// instance id (and so its health and sessions); new URLs get new instances; missing ones are removed.
/// Credentials without a new value keep their stored secret.
/// With `expected`, only the server as it was at that `updated_at` is replaced (`Changed` otherwise): a
/// read-modify-write never overwrites a change made in between.
pub async fn replace(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    spec: &ServerSpec,
    key: Option<&SecretsKey>,
    expected: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(ServerWithInstances, i64), StoreError> {
    let spec = spec.clone();
    conn.transaction(async |conn| {
        let mut target = servers::table.find(id).into_boxed();
        if let Some(at) = expected {
            target = target.filter(servers::updated_at.eq(at));
        }
        let server = diesel::update(servers::table)
            .filter(servers::id.eq_any(target.select(servers::id)))
            .set((server_values(&spec), servers::updated_at.eq(diesel::dsl::now)))
            .returning(ServerRow::as_returning())
            .get_result(conn)
            .await
            .optional()
            .map_err(|e| constraint_error(e, &spec.name, None))?;
        let server = match server {
            Some(server) => server,
            None if expected.is_some() && get(conn, id).await?.is_some() => {
                return Err(StoreError::Changed(id));
            }
            None => return Err(StoreError::NotFound(id)),
        };
        upstream_auth::write(conn, Owner::Server(id), &spec.upstream_auth, key, "the server").await?;
        let existing = instances_of(conn, Some(&[id])).await?.remove(&id).unwrap_or_default();
        let instances = instances_ops::reconcile(conn, id, &existing, &spec.instances, key).await?;
        let version = bump_version(conn).await?;
        Ok(((server, instances), version))
    })
    .await
}

/// Removes a server (its instances go with it); returns the new routing version.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> Result<i64, StoreError> {
    conn.transaction(async |conn| {
        let deleted = diesel::delete(servers::table.find(id)).execute(conn).await?;
        if deleted == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(bump_version(conn).await?)
    })
    .await
}
