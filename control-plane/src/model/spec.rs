//! Validated registration values: what POST creates, PUT replaces and import applies.

use std::collections::BTreeMap;
use std::time::Duration;

use mcpgw_proto::v1;
use serde::{Deserialize, Serialize};

use super::health::HealthCheckSpec;
use super::stdio::CommandSpec;
use super::upstream_auth::UpstreamAuthSpec;

/// Most instances one server may have.
pub const MAX_INSTANCES: usize = 64;
/// Largest instance weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// How the gateway speaks to a server's upstream endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportType {
    /// Streamable HTTP (MCP 2025-03-26 and later); the default.
    StreamableHttp,
    /// The deprecated HTTP+SSE transport (MCP 2024-11-05).
    Sse,
    /// MCP over WebSocket (`ws://`, `wss://`): subprotocol `mcp`, one JSON-RPC message per text frame.
    WebSocket,
    /// A process speaking MCP on its stdin and stdout, started from the instance's `command`.
    Stdio,
}

impl TransportType {
    /// Every transport, in documentation order.
    pub const ALL: [Self; 4] = [Self::StreamableHttp, Self::Sse, Self::WebSocket, Self::Stdio];

    /// Accepts `streamable_http`, its alias `http`, `sse`, `websocket` and `stdio`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "streamable_http" | "http" => Some(Self::StreamableHttp),
            "sse" => Some(Self::Sse),
            "websocket" => Some(Self::WebSocket),
            "stdio" => Some(Self::Stdio),
            _ => None,
        }
    }

    /// The canonical name, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamableHttp => "streamable_http",
            Self::Sse => "sse",
            Self::WebSocket => "websocket",
            Self::Stdio => "stdio",
        }
    }

    /// The wire form sent to proxies.
    pub fn to_proto(self) -> v1::Transport {
        match self {
            Self::StreamableHttp => v1::Transport::StreamableHttp,
            Self::Sse => v1::Transport::Sse,
            Self::WebSocket => v1::Transport::Websocket,
            Self::Stdio => v1::Transport::Stdio,
        }
    }
}

/// How a proxy spreads a server's traffic over its instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    #[default]
    RoundRobin,
    Weighted,
    LeastConnections,
    /// Power of two random choices.
    Random,
    /// On `hash_key`.
    ConsistentHash,
}

impl LoadBalancing {
    /// Every policy, in documentation order.
    pub const ALL: [Self; 5] =
        [Self::RoundRobin, Self::Weighted, Self::LeastConnections, Self::Random, Self::ConsistentHash];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::LeastConnections => "least_connections",
            Self::Random => "random",
            Self::ConsistentHash => "consistent_hash",
        }
    }

    pub fn to_proto(self) -> v1::LoadBalancing {
        match self {
            Self::RoundRobin => v1::LoadBalancing::RoundRobin,
            Self::Weighted => v1::LoadBalancing::Weighted,
            Self::LeastConnections => v1::LoadBalancing::LeastConnections,
            Self::Random => v1::LoadBalancing::Random,
            Self::ConsistentHash => v1::LoadBalancing::ConsistentHash,
        }
    }
}

/// What the audit records of a server's MCP calls keep of their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditArguments {
    /// Nothing (the default).
    #[default]
    None,
    /// The arguments as JSON, secret-looking values and long strings replaced (by the proxy).
    Redacted,
    /// A SHA-256 of the arguments' JSON text.
    Hashed,
}

impl AuditArguments {
    /// Every setting, in documentation order.
    pub const ALL: [Self; 3] = [Self::None, Self::Redacted, Self::Hashed];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }

    /// The name, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Redacted => "redacted",
            Self::Hashed => "hashed",
        }
    }

    pub fn to_proto(self) -> v1::AuditArguments {
        match self {
            Self::None => v1::AuditArguments::None,
            Self::Redacted => v1::AuditArguments::Redacted,
            Self::Hashed => v1::AuditArguments::Hashed,
        }
    }
}

/// How `/mcp` names a server's tools and prompts (and resource URIs that collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamePrefix {
    /// `<server>_<name>` (the default).
    #[default]
    Always,
    /// The bare name unless another server of the tenant offers it.
    OnConflict,
    /// The bare name; a name several servers offer goes to a healthy one by `priority`.
    Never,
}

impl NamePrefix {
    /// Every setting, in documentation order.
    pub const ALL: [Self; 3] = [Self::Always, Self::OnConflict, Self::Never];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    /// The name, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnConflict => "on_conflict",
            Self::Never => "never",
        }
    }

    pub fn to_proto(self) -> v1::NamePrefix {
        match self {
            Self::Always => v1::NamePrefix::Always,
            Self::OnConflict => v1::NamePrefix::OnConflict,
            Self::Never => v1::NamePrefix::Never,
        }
    }
}

/// The accepted `priority` values (lower is preferred; the default is 0).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// Per-server circuit-breaker settings; an absent field means the proxy's default. Stored as JSON in this
/// form (durations as human strings such as `10s`), and returned the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open: Option<String>,
}

impl CircuitBreaker {
    /// The wire form; durations were validated to fit in `u32` milliseconds.
    pub fn to_proto(&self) -> v1::CircuitBreaker {
        let ms = |d: &Option<String>| {
            d.as_deref()
                .and_then(|s| humantime::parse_duration(s).ok())
                .map_or(0, |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
        };
        v1::CircuitBreaker {
            consecutive_failures: self.consecutive_failures.unwrap_or(0),
            failure_ratio: self.failure_ratio.unwrap_or(0.0),
            min_requests: self.min_requests.unwrap_or(0),
            window_ms: ms(&self.window),
            open_ms: ms(&self.open),
            max_open_ms: ms(&self.max_open),
        }
    }
}

/// One validated upstream endpoint of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The URL it is reached at; for a stdio instance `stdio:<program>` (display only).
    pub endpoint_url: String,
    /// A stdio instance's command (`None` for the other transports).
    pub command: Option<CommandSpec>,
    pub weight: u32,
    pub metadata: BTreeMap<String, String>,
    /// The instance's own credential (`None`: its server's).
    pub upstream_auth: UpstreamAuthSpec,
}

/// A registration that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    pub transport: TransportType,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// At least one, at most `MAX_INSTANCES`, endpoint URLs unique.
    pub instances: Vec<InstanceSpec>,
    pub load_balancing: LoadBalancing,
    pub hash_key: Option<String>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub tenant_id: Option<String>,
    pub version: Option<String>,
    /// Capabilities declared at registration (a JSON object).
    pub capabilities: serde_json::Map<String, serde_json::Value>,
    /// Discover capabilities right after registration.
    pub auto_discover: bool,
    pub health_check: HealthCheckSpec,
    /// How the gateway authenticates to the instances (each may have its own instead).
    pub upstream_auth: UpstreamAuthSpec,
    /// What audit records of its MCP calls keep of their arguments.
    pub audit_arguments: AuditArguments,
    /// How `/mcp` names its tools and prompts.
    pub name_prefix: NamePrefix,
    /// Preference among servers offering the same name on `/mcp` (lower first), within `PRIORITY_RANGE`.
    pub priority: i32,
}

impl ServerSpec {
    /// Whether writing this spec seals a new secret (and so needs `--secrets-key`).
    pub fn has_new_secret(&self) -> bool {
        std::iter::once(&self.upstream_auth)
            .chain(self.instances.iter().map(|i| &i.upstream_auth))
            .any(|auth| auth.new_secret().is_some())
            || self.instances.iter().any(InstanceSpec::has_new_secret_env)
    }
}

impl InstanceSpec {
    /// Whether its command gives a new secret environment value.
    pub fn has_new_secret_env(&self) -> bool {
        self.command.as_ref().is_some_and(CommandSpec::has_new_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(TransportType::parse("http"), Some(TransportType::StreamableHttp));
        assert_eq!(TransportType::parse("sse").map(TransportType::as_str), Some("sse"));
        assert_eq!(TransportType::parse("SSE"), None);
        for t in TransportType::ALL {
            assert_eq!(TransportType::parse(t.as_str()), Some(t));
        }
        assert_eq!(TransportType::Stdio.to_proto(), v1::Transport::Stdio);
        assert_eq!(TransportType::WebSocket.to_proto(), v1::Transport::Websocket);
        for p in LoadBalancing::ALL {
            assert_eq!(LoadBalancing::parse(p.as_str()), Some(p));
        }
        assert_eq!(LoadBalancing::parse("least_conn"), None);
        for a in AuditArguments::ALL {
            assert_eq!(AuditArguments::parse(a.as_str()), Some(a));
        }
        assert_eq!(AuditArguments::parse("full"), None);
        for p in NamePrefix::ALL {
            assert_eq!(NamePrefix::parse(p.as_str()), Some(p));
        }
        assert_eq!(NamePrefix::parse("on-conflict"), None);
        assert_eq!(NamePrefix::default().to_proto(), v1::NamePrefix::Always);
    }

    #[test]
    fn breaker_to_proto() {
        let b = CircuitBreaker {
            consecutive_failures: Some(5),
            window: Some("10s".into()),
            max_open: Some("1m".into()),
            ..Default::default()
        };
        let p = b.to_proto();
        assert_eq!((p.consecutive_failures, p.window_ms, p.open_ms, p.max_open_ms), (5, 10_000, 0, 60_000));
    }
}
