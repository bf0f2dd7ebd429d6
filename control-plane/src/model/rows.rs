//! Rows as stored in PostgreSQL, and the JSON the REST API shows for a server and its instances.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::spec::{CircuitBreaker, HealthStatus};
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
}

impl ServerRow {
    /// The stored breaker settings (written by this crate, so they parse; anything else reads as none).
    pub fn breaker(&self) -> Option<CircuitBreaker> {
        self.circuit_breaker.clone().and_then(|v| serde_json::from_value(v).ok())
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
}

impl InstanceRow {
    /// The metadata map (string values only; anything else is skipped).
    pub fn metadata_map(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default()
    }
}

/// An instance as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: Uuid,
    pub endpoint_url: String,
    pub weight: i32,
    pub metadata: Value,
    pub health_status: HealthStatus,
    pub created_at: DateTime<Utc>,
}

impl InstanceView {
    pub fn new(row: &InstanceRow, health_status: HealthStatus) -> Self {
        Self {
            id: row.id,
            endpoint_url: row.endpoint_url.clone(),
            weight: row.weight,
            metadata: row.metadata.clone(),
            health_status,
            created_at: row.created_at,
        }
    }
}

/// A server as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerView {
    pub id: Uuid,
    pub name: String,
    /// The first instance's endpoint (null when the server has no instance left).
    pub endpoint_url: Option<String>,
    pub transport_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub load_balancing: String,
    pub hash_key: Option<String>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub instances: Vec<InstanceView>,
    pub health_status: HealthStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ServerView {
    /// Joins a server with its instances (in `seq` order) and each instance's health.
    pub fn new(row: &ServerRow, instances: &[InstanceRow], health: impl Fn(Uuid) -> HealthStatus) -> Self {
        let instances: Vec<InstanceView> =
            instances.iter().map(|i| InstanceView::new(i, health(i.id))).collect();
        Self {
            id: row.id,
            name: row.name.clone(),
            endpoint_url: instances.first().map(|i| i.endpoint_url.clone()),
            transport_type: row.transport_type.clone(),
            description: row.description.clone(),
            tags: row.tags.clone(),
            load_balancing: row.load_balancing.clone(),
            hash_key: row.hash_key.clone(),
            circuit_breaker: row.breaker(),
            health_status: HealthStatus::of_server(instances.iter().map(|i| i.health_status)),
            instances,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}
