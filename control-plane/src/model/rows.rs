//! Rows as stored in PostgreSQL, and the JSON the REST API shows for a server and its instances.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::health::{HealthCheck, HealthCheckSpec, HealthIndex, HealthRecord, HealthStatus, PassiveRow};
use super::spec::{AuditArguments, CircuitBreaker, NamePrefix};
use super::stdio::{CommandView, StoredCommand};
use super::upstream_auth::{CredentialIndex, UpstreamAuthView};
use crate::db::schema::{instances, servers};

/// A row of `servers`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = servers, check_for_backend(diesel::pg::Pg))]
pub struct ServerRow {
    pub id: Uuid,
    pub name: String,
    /// Canonical name; the table's CHECK constraint limits it.
    pub transport_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub load_balancing: String,
    pub hash_key: Option<String>,
    pub circuit_breaker: Option<Value>,
    pub tenant_id: Option<String>,
    pub version: Option<String>,
    pub capabilities: Value,
    pub auto_discover: bool,
    pub health_check_enabled: bool,
    pub health_interval_ms: Option<i32>,
    pub health_timeout_ms: Option<i32>,
    pub healthy_threshold: Option<i32>,
    pub unhealthy_threshold: Option<i32>,
    /// Who registered it (`Principal::owner_label`); `None` for the admin token and older servers.
    pub owner: Option<String>,
    /// `none`, `redacted` or `hashed` (the table's CHECK constraint limits it).
    pub audit_arguments: String,
    /// `always`, `on_conflict` or `never` (the table's CHECK constraint limits it).
    pub name_prefix: String,
    /// Preference among servers offering the same name on `/mcp` (lower first).
    pub priority: i32,
}

fn to_u32(v: Option<i32>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

impl ServerRow {
    /// The stored breaker settings (written by this crate, so they parse; anything else reads as none).
    pub fn breaker(&self) -> Option<CircuitBreaker> {
        self.circuit_breaker.clone().and_then(|v| serde_json::from_value(v).ok())
    }

    /// The stored health-check settings.
    pub fn health_check(&self) -> HealthCheckSpec {
        HealthCheckSpec {
            enabled: self.health_check_enabled,
            interval_ms: to_u32(self.health_interval_ms),
            timeout_ms: to_u32(self.health_timeout_ms),
            healthy_threshold: to_u32(self.healthy_threshold),
            unhealthy_threshold: to_u32(self.unhealthy_threshold),
        }
    }

    /// The stored audit setting (written by this crate; anything else reads as the default).
    pub fn audit_arguments(&self) -> AuditArguments {
        AuditArguments::parse(&self.audit_arguments).unwrap_or_default()
    }

    /// The stored naming setting (written by this crate; anything else reads as the default).
    pub fn name_prefix(&self) -> NamePrefix {
        NamePrefix::parse(&self.name_prefix).unwrap_or_default()
    }

    /// The declared capabilities object.
    pub fn declared_capabilities(&self) -> Map<String, Value> {
        self.capabilities.as_object().cloned().unwrap_or_default()
    }
}

/// A row of `instances`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = instances, check_for_backend(diesel::pg::Pg))]
pub struct InstanceRow {
    pub id: Uuid,
    pub server_id: Uuid,
    pub endpoint_url: String,
    pub weight: i32,
    pub metadata: Value,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    /// A stdio instance's command (`StoredCommand`; nothing secret), NULL for the other transports.
    pub command: Option<Value>,
}

impl InstanceRow {
    /// A stdio instance's stored command.
    pub fn stored_command(&self) -> Option<StoredCommand> {
        self.command.as_ref().and_then(StoredCommand::from_json)
    }

    /// The metadata map (string values only; anything else is skipped).
    pub fn metadata_map(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default()
    }
}

/// An instance as the REST API shows it: its endpoint, the active checks' verdict and every proxy's
/// breaker state.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub id: Uuid,
    pub endpoint_url: String,
    pub weight: i32,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub health_status: HealthStatus,
    pub last_check_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub latency_ms: Option<i32>,
    pub last_error: Option<String>,
    /// The control-plane replica that ran the last check.
    pub checked_by: Option<String>,
    /// Breaker state reported by each proxy (`ProxyMessage.passive_health`).
    pub passive: Vec<PassiveRow>,
    /// Recent probes, newest first (only on the health endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HealthRecord>>,
    /// The instance's own upstream credential (type and header, never the value); absent: its server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthView>,
    /// A stdio instance's command: its secret environment by name only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandView>,
    pub created_at: DateTime<Utc>,
}

impl InstanceView {
    pub fn new(row: &InstanceRow, health: &HealthIndex) -> Self {
        let active = health.active.get(&row.id);
        Self {
            id: row.id,
            endpoint_url: row.endpoint_url.clone(),
            weight: row.weight,
            metadata: row.metadata.clone(),
            health_status: health.status(row.id),
            last_check_at: active.map(|h| h.last_check_at),
            consecutive_failures: active.map_or(0, |h| h.consecutive_failures),
            latency_ms: active.and_then(|h| h.latency_ms),
            last_error: active.and_then(|h| h.last_error.clone()),
            checked_by: active.map(|h| h.checked_by.clone()),
            passive: health.passive.get(&row.id).cloned().unwrap_or_default(),
            history: None,
            upstream_auth: None,
            command: row.stored_command().map(|c| c.view(Vec::new())),
            created_at: row.created_at,
        }
    }
}

/// A server as the REST API shows it. `capabilities` is what discovery found when it succeeded, else what
/// the registration declared; `tools` & co. appear with `include_tools` / `include_resources` /
/// `include_prompts`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServerView {
    pub id: Uuid,
    pub name: String,
    /// The first instance's endpoint (`stdio:<program>` for a stdio server; null when the server has no
    /// instance left).
    pub endpoint_url: Option<String>,
    pub transport_type: String,
    pub tenant_id: Option<String>,
    /// Who registered the server and so manages it with the `server_owner` role: `api-key:<id>` or
    /// `user:<id>`; null when the admin token registered it or it was registered before owners were kept.
    pub owner: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    #[schema(value_type = Object)]
    pub capabilities: Value,
    pub auto_discover: bool,
    pub load_balancing: String,
    pub hash_key: Option<String>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub health_check: HealthCheck,
    /// How the gateway authenticates to the instances: type and header, never the value.
    pub upstream_auth: UpstreamAuthView,
    /// What audit records of the server's MCP calls keep of their arguments: `none`, `redacted` or
    /// `hashed`.
    pub audit_arguments: String,
    /// How `/mcp` names the server's tools and prompts: `always` (`<server>_<name>`), `on_conflict` (the
    /// bare name unless another server of the tenant offers it) or `never` (the bare name).
    pub name_prefix: String,
    /// Preference among servers offering the same name on `/mcp`: lower first, -1000 to 1000.
    pub priority: i32,
    pub instances: Vec<InstanceView>,
    pub health_status: HealthStatus,
    /// Outcome of the last discovery (null before the first).
    #[schema(value_type = Option<Object>)]
    pub discovery: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub resources: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub resource_templates: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub prompts: Option<Vec<Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServerView {
    /// Joins a server with its instances (in `seq` order), their health and their credentials' views.
    pub fn new(
        row: &ServerRow,
        instances: &[InstanceRow],
        health: &HealthIndex,
        credentials: &CredentialIndex,
    ) -> Self {
        let instances: Vec<InstanceView> = instances
            .iter()
            .map(|i| InstanceView {
                upstream_auth: credentials.instance_view(i.id),
                command: i.stored_command().map(|c| c.view(credentials.secret_env_names(i.id))),
                ..InstanceView::new(i, health)
            })
            .collect();
        Self {
            id: row.id,
            name: row.name.clone(),
            endpoint_url: instances.first().map(|i| i.endpoint_url.clone()),
            transport_type: row.transport_type.clone(),
            tenant_id: row.tenant_id.clone(),
            owner: row.owner.clone(),
            version: row.version.clone(),
            description: row.description.clone(),
            tags: row.tags.clone(),
            capabilities: row.capabilities.clone(),
            auto_discover: row.auto_discover,
            load_balancing: row.load_balancing.clone(),
            hash_key: row.hash_key.clone(),
            circuit_breaker: row.breaker(),
            health_check: row.health_check().to_json().unwrap_or_default(),
            upstream_auth: credentials.server_view(row.id),
            audit_arguments: row.audit_arguments().as_str().to_owned(),
            name_prefix: row.name_prefix().as_str().to_owned(),
            priority: row.priority,
            health_status: HealthStatus::of_server(instances.iter().map(|i| i.health_status)),
            instances,
            discovery: None,
            tools: None,
            resources: None,
            resource_templates: None,
            prompts: None,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}
