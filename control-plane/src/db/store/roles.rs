//! Custom roles. Every proxy holds them in its routing table, so writes bump `routing_state.version` in the
//! same transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use mcpgw_proto::v1;
use serde_json::Value;
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::roles;
use crate::model::PermissionRule;

/// A stored role.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = roles)]
pub struct RoleRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    /// `[{"server", "tools"?, "prompts"?, "resources"?}]`
    #[schema(value_type = Vec<PermissionRule>)]
    pub rules: Value,
    /// IdP roles or groups whose members get this role when they sign in.
    pub idp_groups: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl RoleRow {
    /// The role as proxies receive it.
    pub fn resource(&self) -> v1::Resource {
        let rules: Vec<PermissionRule> = serde_json::from_value(self.rules.clone()).unwrap_or_default();
        v1::Resource {
            kind: Some(v1::resource::Kind::Role(v1::Role {
                id: self.id.to_string(),
                tenant_id: self.tenant_id.clone(),
                name: self.name.clone(),
                rules: rules.iter().map(PermissionRule::to_proto).collect(),
            })),
        }
    }
}

/// Every role, by tenant and name.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<RoleRow>> {
    roles::table
        .select(RoleRow::as_select())
        .order((roles::tenant_id.asc(), roles::name.asc()))
        .load(conn)
        .await
}

/// The names of the roles of `tenant` granted to members of any of `idp_groups` (IdP roles or groups),
/// by name: what a user of that tenant signing in with them gets. Another tenant's roles never count.
pub async fn granted(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    idp_groups: &[String],
) -> QueryResult<Vec<String>> {
    if idp_groups.is_empty() {
        return Ok(Vec::new());
    }
    roles::table
        .filter(roles::tenant_id.eq(tenant))
        .filter(roles::idp_groups.overlaps_with(idp_groups.to_vec()))
        .select(roles::name)
        .order(roles::name.asc())
        .load(conn)
        .await
}

/// One role, if it exists.
pub async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<RoleRow>> {
    roles::table.find(id).select(RoleRow::as_select()).first(conn).await.optional()
}

/// Stores a role; `false` when the tenant has one of that name.
pub async fn create(conn: &mut AsyncPgConnection, row: &RoleRow) -> QueryResult<bool> {
    conn.transaction(async |conn| {
        let inserted = diesel::insert_into(roles::table)
            .values(row)
            .on_conflict((roles::tenant_id, roles::name))
            .do_nothing()
            .execute(conn)
            .await?;
        if inserted == 1 {
            bump_version(conn).await?;
        }
        Ok(inserted == 1)
    })
    .await
}

/// Deletes a role; whether it existed.
pub async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    conn.transaction(async |conn| {
        let deleted = diesel::delete(roles::table.find(id)).execute(conn).await?;
        if deleted == 1 {
            bump_version(conn).await?;
        }
        Ok(deleted == 1)
    })
    .await
}
