//! Discovered capabilities: the last successful listing per server (in its own tables) and the outcome of
//! the last attempt. A failed attempt keeps the last known capabilities and records when and why. A
//! successful one is compared with the stored one by digest: only a different listing rewrites the lists
//! and moves the routing version (the listing is the server's `Catalog` in the routing table).

use std::collections::HashMap;

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::{
    server_discovery, server_prompts, server_resource_templates, server_resources, server_tools, servers,
};
use crate::mcp::ServerHello;
use crate::mcp::lists::Capabilities;
use crate::model::{CatalogContent, StoredCatalog};

/// A row of `server_discovery`, shown as the server's `discovery`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = server_discovery, check_for_backend(diesel::pg::Pg))]
pub struct DiscoveryRow {
    #[serde(skip)]
    pub server_id: Uuid,
    /// `ok` or `error` (of the last attempt).
    pub status: String,
    pub attempted_at: chrono::DateTime<Utc>,
    /// When the stored capabilities were listed (null if never).
    pub discovered_at: Option<chrono::DateTime<Utc>>,
    pub duration_ms: Option<i32>,
    pub protocol_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub server_info: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Value>,
    pub instructions: Option<String>,
    pub error: Option<String>,
}

fn text(item: &Value, key: &str) -> Option<String> {
    item.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn position(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

/// What storing a successful listing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The server was deleted meanwhile; nothing was written.
    Gone,
    /// The listing has the stored digest: only the attempt's outcome was written (no routing change).
    Unchanged,
    /// The listing replaced the stored one and moved the routing version to this one.
    Changed(i64),
}

/// The digest of a successful listing (`CatalogContent::digest`).
pub fn listing_digest(hello: &ServerHello, caps: &Capabilities) -> Vec<u8> {
    CatalogContent {
        protocol_version: &hello.protocol_version,
        capabilities: hello.capabilities.as_ref(),
        server_info: hello.server_info.as_ref(),
        tools: &caps.tools,
        prompts: &caps.prompts,
        resources: &caps.resources,
        resource_templates: &caps.resource_templates,
    }
    .digest()
}

/// Stores a successful listing. When its digest equals the stored one, only the attempt's outcome is
/// written; otherwise the server's capabilities are replaced and the routing version is bumped in the same
/// transaction (the catalog is part of the routing table), so the caller must refresh the hub.
pub async fn save_ok(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    hello: &ServerHello,
    caps: &Capabilities,
    duration_ms: i32,
) -> QueryResult<Saved> {
    let (hello, caps) = (hello.clone(), caps.clone());
    let digest = listing_digest(&hello, &caps);
    let outcome = conn
        .transaction(async |conn| {
            // Concurrent discoveries of one server take turns here instead of interleaving their rows.
            let exists = servers::table
                .find(server_id)
                .select(servers::id)
                .for_update()
                .first::<Uuid>(conn)
                .await
                .optional()?;
            if exists.is_none() {
                return Err(DieselError::NotFound);
            }
            let stored: Option<Vec<u8>> = server_discovery::table
                .find(server_id)
                .select(server_discovery::catalog_digest)
                .first::<Option<Vec<u8>>>(conn)
                .await
                .optional()?
                .flatten();
            let changed = stored.as_deref() != Some(digest.as_slice());
            if changed {
                replace_items(conn, server_id, &caps).await?;
            }
            let now = Utc::now();
            let row = (
                server_discovery::server_id.eq(server_id),
                server_discovery::status.eq("ok"),
                server_discovery::attempted_at.eq(now),
                server_discovery::discovered_at.eq(Some(now)),
                server_discovery::duration_ms.eq(Some(duration_ms)),
                server_discovery::protocol_version.eq(Some(hello.protocol_version.clone())),
                server_discovery::server_info.eq(hello.server_info.clone()),
                server_discovery::capabilities.eq(hello.capabilities.clone()),
                server_discovery::instructions.eq(hello.instructions.clone()),
                server_discovery::error.eq(None::<String>),
                server_discovery::catalog_digest.eq(Some(digest.clone())),
            );
            diesel::insert_into(server_discovery::table)
                .values(row.clone())
                .on_conflict(server_discovery::server_id)
                .do_update()
                .set(row)
                .execute(conn)
                .await?;
            if !changed {
                return Ok(Saved::Unchanged);
            }
            Ok(Saved::Changed(super::bump_version(conn).await?))
        })
        .await;
    match outcome {
        Ok(saved) => Ok(saved),
        Err(
            DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) | DieselError::NotFound,
        ) => Ok(Saved::Gone),
        Err(e) => Err(e),
    }
}

/// Replaces the stored lists of `server_id` with `caps`.
async fn replace_items(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    caps: &Capabilities,
) -> QueryResult<()> {
    diesel::delete(server_tools::table.filter(server_tools::server_id.eq(server_id))).execute(conn).await?;
    diesel::delete(server_resources::table.filter(server_resources::server_id.eq(server_id)))
        .execute(conn)
        .await?;
    diesel::delete(
        server_resource_templates::table.filter(server_resource_templates::server_id.eq(server_id)),
    )
    .execute(conn)
    .await?;
    diesel::delete(server_prompts::table.filter(server_prompts::server_id.eq(server_id)))
        .execute(conn)
        .await?;
    let tools: Vec<_> = caps
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                server_tools::server_id.eq(server_id),
                server_tools::position.eq(position(i)),
                server_tools::item.eq(t.clone()),
                server_tools::name.eq(text(t, "name").unwrap_or_default()),
                server_tools::title.eq(text(t, "title")),
                server_tools::description.eq(text(t, "description")),
                server_tools::input_schema.eq(t.get("inputSchema").cloned()),
                server_tools::output_schema.eq(t.get("outputSchema").cloned()),
                server_tools::annotations.eq(t.get("annotations").cloned()),
            )
        })
        .collect();
    for chunk in tools.chunks(500) {
        diesel::insert_into(server_tools::table).values(chunk).execute(conn).await?;
    }
    let resources: Vec<_> = caps
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                server_resources::server_id.eq(server_id),
                server_resources::position.eq(position(i)),
                server_resources::item.eq(r.clone()),
                server_resources::uri.eq(text(r, "uri").unwrap_or_default()),
                server_resources::name.eq(text(r, "name")),
                server_resources::title.eq(text(r, "title")),
                server_resources::description.eq(text(r, "description")),
                server_resources::mime_type.eq(text(r, "mimeType")),
                server_resources::annotations.eq(r.get("annotations").cloned()),
            )
        })
        .collect();
    for chunk in resources.chunks(500) {
        diesel::insert_into(server_resources::table).values(chunk).execute(conn).await?;
    }
    let templates: Vec<_> = caps
        .resource_templates
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                server_resource_templates::server_id.eq(server_id),
                server_resource_templates::position.eq(position(i)),
                server_resource_templates::item.eq(r.clone()),
                server_resource_templates::uri_template.eq(text(r, "uriTemplate").unwrap_or_default()),
                server_resource_templates::name.eq(text(r, "name")),
                server_resource_templates::title.eq(text(r, "title")),
                server_resource_templates::description.eq(text(r, "description")),
                server_resource_templates::mime_type.eq(text(r, "mimeType")),
                server_resource_templates::annotations.eq(r.get("annotations").cloned()),
            )
        })
        .collect();
    for chunk in templates.chunks(500) {
        diesel::insert_into(server_resource_templates::table).values(chunk).execute(conn).await?;
    }
    let prompts: Vec<_> = caps
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                server_prompts::server_id.eq(server_id),
                server_prompts::position.eq(position(i)),
                server_prompts::item.eq(p.clone()),
                server_prompts::name.eq(text(p, "name").unwrap_or_default()),
                server_prompts::title.eq(text(p, "title")),
                server_prompts::description.eq(text(p, "description")),
                server_prompts::arguments.eq(p.get("arguments").cloned()),
            )
        })
        .collect();
    for chunk in prompts.chunks(500) {
        diesel::insert_into(server_prompts::table).values(chunk).execute(conn).await?;
    }
    Ok(())
}

/// Records a failed attempt, keeping the last known capabilities.
pub async fn save_error(
    conn: &mut AsyncPgConnection,
    server_id: Uuid,
    error: &str,
    duration_ms: i32,
) -> QueryResult<()> {
    let now = Utc::now();
    let outcome = diesel::insert_into(server_discovery::table)
        .values((
            server_discovery::server_id.eq(server_id),
            server_discovery::status.eq("error"),
            server_discovery::attempted_at.eq(now),
            server_discovery::duration_ms.eq(Some(duration_ms)),
            server_discovery::error.eq(Some(error)),
        ))
        .on_conflict(server_discovery::server_id)
        .do_update()
        .set((
            server_discovery::status.eq("error"),
            server_discovery::attempted_at.eq(now),
            server_discovery::duration_ms.eq(Some(duration_ms)),
            server_discovery::error.eq(Some(error)),
        ))
        .execute(conn)
        .await;
    match outcome {
        Err(DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Discovery outcomes of `ids`.
pub async fn outcomes(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, DiscoveryRow>> {
    let rows: Vec<DiscoveryRow> = server_discovery::table
        .filter(server_discovery::server_id.eq_any(ids.to_vec()))
        .select(DiscoveryRow::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.server_id, r)).collect())
}

/// The stored digest of every server with a successful discovery (`None` for one stored before digests
/// were kept).
pub async fn catalog_digests(conn: &mut AsyncPgConnection) -> QueryResult<HashMap<Uuid, Option<Vec<u8>>>> {
    let rows: Vec<(Uuid, Option<Vec<u8>>)> = server_discovery::table
        .filter(server_discovery::discovered_at.is_not_null())
        .select((server_discovery::server_id, server_discovery::catalog_digest))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The stored successful discoveries of `ids` in full: one query for the outcomes and one per list.
pub async fn catalogs(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, StoredCatalog>> {
    use super::capabilities::{Kind, items};
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    type Head = (Uuid, Option<Vec<u8>>, Option<String>, Option<Value>, Option<Value>);
    let heads: Vec<Head> = server_discovery::table
        .filter(server_discovery::server_id.eq_any(ids.to_vec()))
        .filter(server_discovery::discovered_at.is_not_null())
        .select((
            server_discovery::server_id,
            server_discovery::catalog_digest,
            server_discovery::protocol_version,
            server_discovery::capabilities,
            server_discovery::server_info,
        ))
        .load(conn)
        .await?;
    let mut tools = items(conn, Kind::Tools, ids).await?;
    let mut prompts = items(conn, Kind::Prompts, ids).await?;
    let mut resources = items(conn, Kind::Resources, ids).await?;
    let mut templates = items(conn, Kind::ResourceTemplates, ids).await?;
    Ok(heads
        .into_iter()
        .map(|(id, digest, protocol_version, capabilities, server_info)| {
            let catalog = StoredCatalog {
                digest,
                protocol_version,
                capabilities,
                server_info,
                tools: tools.remove(&id).unwrap_or_default(),
                prompts: prompts.remove(&id).unwrap_or_default(),
                resources: resources.remove(&id).unwrap_or_default(),
                resource_templates: templates.remove(&id).unwrap_or_default(),
            };
            (id, catalog)
        })
        .collect())
}
