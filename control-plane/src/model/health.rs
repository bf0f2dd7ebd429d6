//! Stored health: the active checks' latest result per instance (with recent history) and what each
//! proxy's breakers report.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::spec::HealthStatus;
use crate::db::schema::{instance_health, passive_health};

/// A row of `instance_health`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = instance_health, check_for_backend(diesel::pg::Pg))]
pub struct InstanceHealthRow {
    pub instance_id: Uuid,
    pub status: String,
    pub last_check_at: DateTime<Utc>,
    pub last_change_at: DateTime<Utc>,
    pub consecutive_failures: i32,
    pub consecutive_successes: i32,
    pub latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub checked_by: String,
    /// `[HealthRecord]`, newest first.
    pub history: Value,
}

impl InstanceHealthRow {
    pub fn status(&self) -> HealthStatus {
        HealthStatus::parse(&self.status).unwrap_or(HealthStatus::Unknown)
    }

    pub fn history(&self) -> Vec<HealthRecord> {
        serde_json::from_value(self.history.clone()).unwrap_or_default()
    }
}

/// One probe in an instance's recent history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthRecord {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub latency_ms: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A row of `passive_health`: one proxy's view of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = passive_health, check_for_backend(diesel::pg::Pg))]
pub struct PassiveRow {
    #[serde(skip)]
    pub instance_id: Uuid,
    pub proxy_id: String,
    /// `closed`, `open`, `half_open` or `unspecified`.
    pub breaker: String,
    pub consecutive_failures: i32,
    pub window_requests: i64,
    pub window_failures: i64,
    pub reported_at: DateTime<Utc>,
}

/// Health rows of a set of instances, for building views.
#[derive(Debug, Clone, Default)]
pub struct HealthIndex {
    pub active: std::collections::HashMap<Uuid, InstanceHealthRow>,
    pub passive: std::collections::HashMap<Uuid, Vec<PassiveRow>>,
}

impl HealthIndex {
    /// The instance's active status (`unknown` without a row).
    pub fn status(&self, instance: Uuid) -> HealthStatus {
        self.active.get(&instance).map_or(HealthStatus::Unknown, InstanceHealthRow::status)
    }
}
