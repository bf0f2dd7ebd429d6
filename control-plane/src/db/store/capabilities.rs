//! Queries over the discovered capabilities: the stored lists of a set of servers, and which servers offer
//! given tools or resources.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::{server_prompts, server_resource_templates, server_resources, server_tools};

/// Which capability list to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

/// The stored items of one kind for `ids`, each server's in listing order.
pub async fn items(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    ids: &[Uuid],
) -> QueryResult<HashMap<Uuid, Vec<Value>>> {
    let ids = ids.to_vec();
    let rows: Vec<(Uuid, Value)> = match kind {
        Kind::Tools => {
            server_tools::table
                .filter(server_tools::server_id.eq_any(ids))
                .order((server_tools::server_id, server_tools::position))
                .select((server_tools::server_id, server_tools::item))
                .load(conn)
                .await?
        }
        Kind::Resources => {
            server_resources::table
                .filter(server_resources::server_id.eq_any(ids))
                .order((server_resources::server_id, server_resources::position))
                .select((server_resources::server_id, server_resources::item))
                .load(conn)
                .await?
        }
        Kind::ResourceTemplates => {
            server_resource_templates::table
                .filter(server_resource_templates::server_id.eq_any(ids))
                .order((server_resource_templates::server_id, server_resource_templates::position))
                .select((server_resource_templates::server_id, server_resource_templates::item))
                .load(conn)
                .await?
        }
        Kind::Prompts => {
            server_prompts::table
                .filter(server_prompts::server_id.eq_any(ids))
                .order((server_prompts::server_id, server_prompts::position))
                .select((server_prompts::server_id, server_prompts::item))
                .load(conn)
                .await?
        }
    };
    let mut grouped: HashMap<Uuid, Vec<Value>> = HashMap::new();
    for (id, item) in rows {
        grouped.entry(id).or_default().push(item);
    }
    Ok(grouped)
}

/// Servers offering every tool in `names`.
pub async fn servers_with_tools(conn: &mut AsyncPgConnection, names: &[String]) -> QueryResult<Vec<Uuid>> {
    let wanted = i64::try_from(names.len()).unwrap_or(i64::MAX);
    server_tools::table
        .filter(server_tools::name.eq_any(names.to_vec()))
        .group_by(server_tools::server_id)
        .having(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!("count(DISTINCT name) = {wanted}")))
        .select(server_tools::server_id)
        .load(conn)
        .await
}

/// Servers with a resource URI or a template URI matching the SQL LIKE `pattern`.
pub async fn servers_with_resources(conn: &mut AsyncPgConnection, pattern: &str) -> QueryResult<Vec<Uuid>> {
    let mut ids: Vec<Uuid> = server_resources::table
        .filter(server_resources::uri.like(pattern))
        .select(server_resources::server_id)
        .distinct()
        .load(conn)
        .await?;
    let templates: Vec<Uuid> = server_resource_templates::table
        .filter(server_resource_templates::uri_template.like(pattern))
        .select(server_resource_templates::server_id)
        .distinct()
        .load(conn)
        .await?;
    ids.extend(templates);
    ids.sort();
    ids.dedup();
    Ok(ids)
}
