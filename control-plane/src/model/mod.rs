//! The registry's domain types: a validated server registration, its stored row, and its transport.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use mcpgw_proto::v1;
use serde::Serialize;
use uuid::Uuid;

use crate::db::schema::servers;

/// How the gateway speaks to a server's upstream endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportType {
    /// Streamable HTTP (MCP 2025-03-26 and later); the default.
    StreamableHttp,
    /// The deprecated HTTP+SSE transport (MCP 2024-11-05).
    Sse,
}

impl TransportType {
    /// Accepts `streamable_http`, its alias `http`, and `sse`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "streamable_http" | "http" => Some(Self::StreamableHttp),
            "sse" => Some(Self::Sse),
            _ => None,
        }
    }

    /// The canonical name, as stored and returned.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StreamableHttp => "streamable_http",
            Self::Sse => "sse",
        }
    }

    /// The wire form sent to proxies.
    pub fn to_proto(self) -> v1::Transport {
        match self {
            Self::StreamableHttp => v1::Transport::StreamableHttp,
            Self::Sse => v1::Transport::Sse,
        }
    }
}

/// A registration that passed validation: what POST creates and PUT replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub name: String,
    pub endpoint_url: String,
    pub transport: TransportType,
    pub description: Option<String>,
    pub tags: Vec<String>,
}

/// A server as stored in `servers` and returned by the REST API.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = servers, check_for_backend(diesel::pg::Pg))]
pub struct Server {
    pub id: Uuid,
    pub name: String,
    pub endpoint_url: String,
    /// Stored as text; the table's CHECK constraint limits it to the canonical names.
    pub transport_type: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Server {
    /// The routing resources this server contributes: the server itself and its one instance.
    pub fn resources(&self) -> [v1::Resource; 2] {
        let transport = TransportType::parse(&self.transport_type)
            .map_or(v1::Transport::Unspecified, TransportType::to_proto);
        let id = self.id.to_string();
        [
            v1::Resource {
                kind: Some(v1::resource::Kind::Server(v1::Server {
                    id: id.clone(),
                    name: self.name.clone(),
                    transport: transport as i32,
                    ..Default::default()
                })),
            },
            v1::Resource {
                kind: Some(v1::resource::Kind::Instance(v1::Instance {
                    id: id.clone(),
                    server_id: id,
                    endpoint_url: self.endpoint_url.clone(),
                    weight: 1,
                    ..Default::default()
                })),
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(TransportType::parse("http"), Some(TransportType::StreamableHttp));
        assert_eq!(
            TransportType::parse("streamable_http").map(TransportType::as_str),
            Some("streamable_http")
        );
        assert_eq!(TransportType::parse("sse"), Some(TransportType::Sse));
        assert_eq!(TransportType::parse("SSE"), None);
        assert_eq!(TransportType::parse("stdio"), None);
    }
}
