//! Building the JSON of servers: instances, health, discovery outcome and, on request, their tools,
//! resources and prompts — a few batched queries for any number of servers.

use diesel::QueryResult;
use diesel_async::AsyncPgConnection;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::store::{self, capabilities, discovery, upstream_auth};
use crate::model::{ServerRow, ServerView};

/// Which capability lists to embed (`?include_tools=true` & co.).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Include {
    #[serde(default)]
    pub include_tools: bool,
    /// Resources and resource templates.
    #[serde(default)]
    pub include_resources: bool,
    #[serde(default)]
    pub include_prompts: bool,
}

/// Views of `servers`, in the given order.
pub async fn build(
    conn: &mut AsyncPgConnection,
    servers: Vec<ServerRow>,
    include: Include,
) -> QueryResult<Vec<ServerView>> {
    let ids: Vec<Uuid> = servers.iter().map(|s| s.id).collect();
    let mut instances = store::instances_of(conn, Some(&ids)).await?;
    let instance_ids: Vec<Uuid> = instances.values().flatten().map(|i| i.id).collect();
    let health = store::health::index(conn, &instance_ids).await?;
    let credentials = upstream_auth::of(conn, &ids, &instance_ids).await?;
    let mut outcomes = discovery::outcomes(conn, &ids).await?;
    let mut lists = [
        (include.include_tools, capabilities::Kind::Tools),
        (include.include_resources, capabilities::Kind::Resources),
        (include.include_resources, capabilities::Kind::ResourceTemplates),
        (include.include_prompts, capabilities::Kind::Prompts),
    ]
    .map(|(wanted, kind)| (wanted, kind, Default::default()));
    for (wanted, kind, items) in &mut lists {
        if *wanted {
            *items = capabilities::items(conn, *kind, &ids).await?;
        }
    }
    let mut views = Vec::with_capacity(servers.len());
    for server in servers {
        let own = instances.remove(&server.id).unwrap_or_default();
        let mut view = ServerView::new(&server, &own, &health, &credentials);
        if let Some(outcome) = outcomes.remove(&server.id) {
            if let Some(caps) = outcome.capabilities.clone().filter(|_| outcome.discovered_at.is_some()) {
                view.capabilities = caps;
            }
            view.discovery = serde_json::to_value(&outcome).ok();
        }
        for (wanted, kind, items) in &mut lists {
            if !*wanted {
                continue;
            }
            let list: Vec<Value> = items.remove(&server.id).unwrap_or_default();
            match kind {
                capabilities::Kind::Tools => view.tools = Some(list),
                capabilities::Kind::Resources => view.resources = Some(list),
                capabilities::Kind::ResourceTemplates => view.resource_templates = Some(list),
                capabilities::Kind::Prompts => view.prompts = Some(list),
            }
        }
        views.push(view);
    }
    Ok(views)
}

/// One server's view, if it exists.
pub async fn one(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    include: Include,
) -> QueryResult<Option<ServerView>> {
    let Some((server, _)) = store::get(conn, id).await? else { return Ok(None) };
    Ok(build(conn, vec![server], include).await?.pop())
}
