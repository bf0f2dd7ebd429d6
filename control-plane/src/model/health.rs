//! Stored health: the active checks' latest result per instance (with recent history) and what each
//! proxy's breakers report; the health-check settings and the status values.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use std::time::Duration;

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

/// Per-server health-check settings as given and returned: absent fields use the control plane's
/// defaults (`--health-*`). Durations are human strings, stored in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `false` turns active checks off for this server (its instances stay `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// Validated health-check settings; `None` = the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub enabled: bool,
    pub interval_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

impl Default for HealthCheckSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: None,
            timeout_ms: None,
            healthy_threshold: None,
            unhealthy_threshold: None,
        }
    }
}

impl HealthCheckSpec {
    /// The JSON form (`None` when everything is default).
    pub fn to_json(self) -> Option<HealthCheck> {
        let human = |ms: Option<u32>| {
            ms.map(|ms| humantime::format_duration(Duration::from_millis(u64::from(ms))).to_string())
        };
        let json = HealthCheck {
            enabled: (!self.enabled).then_some(false),
            interval: human(self.interval_ms),
            timeout: human(self.timeout_ms),
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
        };
        (json != HealthCheck::default()).then_some(json)
    }
}

/// Result of the active health checks, for an instance or a whole server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Unhealthy,
    /// Not checked yet (or checks disabled): takes traffic.
    Unknown,
}

impl HealthStatus {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "healthy" => Some(Self::Healthy),
            "unhealthy" => Some(Self::Unhealthy),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Unknown => "unknown",
        }
    }

    /// A server's status from its instances': healthy when one is healthy, unhealthy when none can take
    /// traffic (all unhealthy, or no instance at all), unknown otherwise.
    pub fn of_server(instances: impl IntoIterator<Item = Self>) -> Self {
        let mut any = false;
        let mut all_unhealthy = true;
        for status in instances {
            any = true;
            match status {
                Self::Healthy => return Self::Healthy,
                Self::Unknown => all_unhealthy = false,
                Self::Unhealthy => {}
            }
        }
        if !any || all_unhealthy { Self::Unhealthy } else { Self::Unknown }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_status_from_instances() {
        use HealthStatus::*;
        assert_eq!(HealthStatus::of_server([]), Unhealthy);
        assert_eq!(HealthStatus::of_server([Unknown, Unhealthy]), Unknown);
        assert_eq!(HealthStatus::of_server([Unhealthy, Healthy]), Healthy);
        assert_eq!(HealthStatus::of_server([Unhealthy, Unhealthy]), Unhealthy);
    }
}
