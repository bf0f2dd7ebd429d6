//! The body of POST and PUT `/api/v1/servers`, and its validation into a `ServerSpec`.

use std::collections::BTreeMap;

use mcpgw_proto::validate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{ApiError, Code};
use crate::model::{
    AuditArguments, CircuitBreaker, HealthCheck, InstanceSpec, LoadBalancing, MAX_WEIGHT, NamePrefix,
    PRIORITY_RANGE, ServerSpec, TransportType, UpstreamAuthSpec,
};

/// Longest accepted description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most tags on one server.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Most metadata entries on one instance, and the longest key or value.
pub const MAX_METADATA: usize = 32;
pub const MAX_METADATA_CHARS: usize = 256;

/// One instance in a registration: `endpoint_url`, or `command` for a stdio server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    /// http(s) URL; ws(s) for a WebSocket server; not given for a stdio server (reads show
    /// `stdio:<program>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// A stdio server's process (instead of `endpoint_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRequest>,
    /// Relative share of traffic for `weighted` and `consistent_hash`, 1..=10000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Free-form string labels (zone, version...), passed to proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// This instance's own upstream credential, replacing its server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthRequest>,
}

/// Body of POST and PUT (PUT replaces every field; omitted optional fields are reset). Exactly one of
/// `endpoint_url` (one instance), `command` (one instance of a stdio server) and `instances` is required.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// For `transport_type` `stdio`: the process of its one instance (like `endpoint_url` for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRequest>>,
    /// `streamable_http` (default; `http` is an alias), `sse`, `websocket` (ws:// or wss:// endpoints) or
    /// `stdio` (instances are commands; needs `--stdio-programs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// `round_robin` (default), `weighted`, `least_connections`, `random` or `consistent_hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<String>,
    /// For `consistent_hash`: `client_ip` (default) or `header:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Owning tenant (1-100 characters of `[A-Za-z0-9._-]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The server's own version label, e.g. `1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Capabilities declared by the registrant (a JSON object), shown until discovery finds the real ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub capabilities: Option<Map<String, Value>>,
    /// Discover capabilities right after registration (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_discover: Option<bool>,
    /// Per-server health-check settings (absent fields use the control plane's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// How the gateway authenticates to the instances (default `{"type": "none"}`); needs `--secrets-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_auth: Option<UpstreamAuthRequest>,
    /// What audit records of this server's MCP calls keep of their arguments: `none` (default),
    /// `redacted` (the JSON with secret-looking values and long strings replaced) or `hashed` (a SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_arguments: Option<String>,
    /// How `/mcp` names this server's tools and prompts: `always` (default: `<server>_<name>`),
    /// `on_conflict` (the bare name unless another server of the tenant offers it) or `never` (the bare
    /// name; a name several servers offer goes to a healthy one by `priority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Preference among servers offering the same name on `/mcp`: lower first (ties by name), -1000 to
    /// 1000, default 0. (Kept as JSON until validation, so any other value is `invalid_priority`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, minimum = -1000, maximum = 1000)]
    pub priority: Option<Value>,
}

/// Longest tenant id and version label.
pub const MAX_TENANT_CHARS: usize = 100;
pub const MAX_VERSION_CHARS: usize = 50;
/// Largest declared capabilities document, serialized.
pub const MAX_CAPABILITIES_BYTES: usize = 64 * 1024;

mod canonical;
mod checks;
mod command;
mod upstream_auth;

pub use command::{CommandRequest, SecretEnvRequest};
pub use upstream_auth::UpstreamAuthRequest;

use checks::{check_breaker, check_health, check_tags, has_nul, validate_instances};

/// Whether `t` is a tenant id: 1-100 characters of `[A-Za-z0-9._-]`.
pub(crate) fn valid_tenant(t: &str) -> bool {
    (1..=MAX_TENANT_CHARS).contains(&t.chars().count())
        && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

pub(super) fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl ServerRequest {
    /// Checks every field; the first problem found is reported.
    pub fn validate(self) -> Result<ServerSpec, ApiError> {
        // A command's NUL gets the command's own message; then PostgreSQL text and jsonb cannot hold NUL:
        // refuse it anywhere in the request up front.
        let commands = self.command.iter().map(|c| (String::new(), c)).chain(
            self.instances.iter().flatten().enumerate().filter_map(|(i, instance)| {
                instance.command.as_ref().map(|c| (format!("instances[{i}]: "), c))
            }),
        );
        for (at, command) in commands {
            if command.has_nul() {
                return Err(err(
                    Code::InvalidCommand,
                    format!("{at}command: strings must not contain NUL characters"),
                ));
            }
        }
        if serde_json::to_value(&self).is_ok_and(|v| has_nul(&v)) {
            return Err(err(Code::MalformedJson, "strings must not contain NUL characters"));
        }
        validate::registrable_server_name(&self.name)
            .map_err(|e| err(Code::InvalidServerName, format!("invalid server name {:?}: {e}", self.name)))?;
        let transport = match self.transport_type.as_deref() {
            None => TransportType::StreamableHttp,
            Some(raw) => TransportType::parse(raw).ok_or_else(|| {
                err(
                    Code::InvalidTransportType,
                    format!(
                        "unknown transport_type {raw:?}; use \"streamable_http\" (or \"http\"), \"sse\", \"websocket\" or \"stdio\""
                    ),
                )
            })?,
        };
        let instances = match (self.endpoint_url, self.command, self.instances) {
            (None, None, None) if transport == TransportType::Stdio => {
                return Err(err(
                    Code::MissingField,
                    "missing field `command`: a stdio server gives command (one instance) or instances",
                ));
            }
            (None, None, None) => {
                return Err(err(
                    Code::MissingField,
                    "missing field `endpoint_url`: give endpoint_url (one instance) or instances",
                ));
            }
            (url, command, None) if url.is_none() || command.is_none() => {
                let instance = InstanceRequest { endpoint_url: url, command, ..Default::default() };
                vec![instance.validate(None, transport)?]
            }
            (None, None, Some(list)) => validate_instances(list, transport)?,
            _ => {
                return Err(err(
                    Code::ConflictingFields,
                    "give one of endpoint_url (one instance), command (one instance of a stdio server) or \
                     instances",
                ));
            }
        };
        if let Some(d) = &self.description
            && d.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(err(
                Code::InvalidDescription,
                format!("description is longer than {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let tags = self.tags.unwrap_or_default();
        check_tags(&tags)?;
        let load_balancing = match self.load_balancing.as_deref() {
            None => LoadBalancing::default(),
            Some(raw) => LoadBalancing::parse(raw).ok_or_else(|| {
                let names: Vec<_> = LoadBalancing::ALL.iter().map(|p| p.as_str()).collect();
                err(
                    Code::InvalidLoadBalancing,
                    format!("unknown load_balancing {raw:?}; use one of {}", names.join(", ")),
                )
            })?,
        };
        let hash_key = match self.hash_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => {
                validate::hash_key(raw).map_err(|e| err(Code::InvalidHashKey, e.to_string()))?;
                Some(raw.to_owned())
            }
        };
        let circuit_breaker = self.circuit_breaker.map(check_breaker).transpose()?;
        let tenant_id = match self.tenant_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if valid_tenant(t) => Some(t.to_owned()),
            Some(t) => {
                return Err(err(
                    Code::InvalidTenant,
                    format!(
                        "tenant_id {t:?} must be 1-{MAX_TENANT_CHARS} characters of letters, digits, '.', '_' or '-'"
                    ),
                ));
            }
        };
        let version = match self.version.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) if v.chars().count() <= MAX_VERSION_CHARS && !v.chars().any(char::is_control) => {
                Some(v.to_owned())
            }
            Some(_) => {
                return Err(err(
                    Code::InvalidVersion,
                    format!("version must be at most {MAX_VERSION_CHARS} printable characters"),
                ));
            }
        };
        let capabilities = self.capabilities.unwrap_or_default();
        if Value::Object(capabilities.clone()).to_string().len() > MAX_CAPABILITIES_BYTES {
            return Err(err(
                Code::InvalidCapabilities,
                format!("capabilities must be at most {MAX_CAPABILITIES_BYTES} bytes of JSON"),
            ));
        }
        let health_check = self.health_check.map(check_health).transpose()?.unwrap_or_default();
        let upstream_auth =
            self.upstream_auth.map(|a| a.validate("", false)).transpose()?.unwrap_or_default();
        if transport == TransportType::Stdio && upstream_auth != UpstreamAuthSpec::None {
            return Err(err(Code::InvalidUpstreamAuth, STDIO_HAS_NO_UPSTREAM_AUTH));
        }
        let audit_arguments = match self.audit_arguments.as_deref() {
            None => AuditArguments::default(),
            Some(raw) => AuditArguments::parse(raw).ok_or_else(|| {
                err(
                    Code::InvalidAuditArguments,
                    format!("unknown audit_arguments {raw:?}; use \"none\", \"redacted\" or \"hashed\""),
                )
            })?,
        };
        let name_prefix = match self.name_prefix.as_deref() {
            None => NamePrefix::default(),
            Some(raw) => NamePrefix::parse(raw).ok_or_else(|| {
                err(
                    Code::InvalidNamePrefix,
                    format!("unknown name_prefix {raw:?}; use \"always\", \"on_conflict\" or \"never\""),
                )
            })?,
        };
        let priority = match &self.priority {
            None => 0,
            Some(raw) => raw
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| PRIORITY_RANGE.contains(p))
                .ok_or_else(|| {
                    err(
                        Code::InvalidPriority,
                        format!(
                            "priority must be an integer from {} to {}, not {raw}",
                            PRIORITY_RANGE.start(),
                            PRIORITY_RANGE.end()
                        ),
                    )
                })?,
        };
        Ok(ServerSpec {
            name_prefix,
            priority,
            audit_arguments,
            upstream_auth,
            tenant_id,
            version,
            capabilities,
            auto_discover: self.auto_discover.unwrap_or(true),
            health_check,
            name: self.name,
            transport,
            description: self.description,
            tags,
            instances,
            load_balancing,
            hash_key,
            circuit_breaker,
        })
    }
}

/// Why a stdio server (or instance) takes no `upstream_auth`.
const STDIO_HAS_NO_UPSTREAM_AUTH: &str = "upstream_auth: a stdio server is not reached over HTTP, so no \
    credential can be presented to it; give its secrets as command.secret_env";

impl InstanceRequest {
    /// The endpoint URL it stands for: `endpoint_url`, or `stdio:<program>` of its command.
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint_url
            .clone()
            .or_else(|| self.command.as_ref().map(|c| format!("{}:{}", validate::STDIO_SCHEME, c.program)))
    }

    /// Validates one instance of a server speaking `transport`; `index` names it in messages when it came
    /// from a list.
    pub fn validate(self, index: Option<usize>, transport: TransportType) -> Result<InstanceSpec, ApiError> {
        let at = index.map(|i| format!("instances[{i}]: ")).unwrap_or_default();
        if self.command.as_ref().is_some_and(CommandRequest::has_nul) {
            return Err(err(
                Code::InvalidCommand,
                format!("{at}command: strings must not contain NUL characters"),
            ));
        }
        if serde_json::to_value(&self).is_ok_and(|v| has_nul(&v)) {
            return Err(err(Code::MalformedJson, "strings must not contain NUL characters"));
        }
        let (endpoint_url, command) = match (transport, self.endpoint_url, self.command) {
            (TransportType::Stdio, None, Some(command)) => {
                let command = command.validate(&at)?;
                (command.endpoint_url(), Some(command))
            }
            (TransportType::Stdio, Some(_), _) => {
                return Err(err(
                    Code::InvalidEndpointUrl,
                    format!("{at}a stdio server has no endpoint_url: give its command instead"),
                ));
            }
            (TransportType::Stdio, None, None) => {
                return Err(err(
                    Code::MissingField,
                    format!("{at}missing field `command` (a stdio server's process)"),
                ));
            }
            (_, _, Some(_)) => {
                return Err(err(
                    Code::InvalidCommand,
                    format!(
                        "{at}command is for transport_type \"stdio\" only; a {} server is reached at endpoint_url",
                        transport.as_str()
                    ),
                ));
            }
            (_, None, None) => {
                return Err(err(Code::MissingField, format!("{at}missing field `endpoint_url`")));
            }
            (TransportType::WebSocket, Some(url), None) => {
                validate::websocket_url(&url).map_err(|e| {
                    err(
                        Code::InvalidEndpointUrl,
                        format!("{at}{e} (transport_type websocket takes ws:// or wss://)"),
                    )
                })?;
                (url, None)
            }
            (_, Some(url), None) => {
                validate::endpoint_url(&url)
                    .map_err(|e| err(Code::InvalidEndpointUrl, format!("{at}{e}")))?;
                (url, None)
            }
        };
        let weight = self.weight.unwrap_or(1);
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(err(
                Code::InvalidInstances,
                format!("{at}weight must be between 1 and {MAX_WEIGHT}, not {weight}"),
            ));
        }
        let raw = self.metadata.unwrap_or_default();
        if raw.len() > MAX_METADATA {
            return Err(err(Code::InvalidInstances, format!("{at}at most {MAX_METADATA} metadata entries")));
        }
        let mut metadata = BTreeMap::new();
        for (key, value) in raw {
            let Value::String(value) = value else {
                return Err(err(Code::InvalidInstances, format!("{at}metadata {key:?} must be a string")));
            };
            if key.is_empty()
                || key.chars().count() > MAX_METADATA_CHARS
                || value.chars().count() > MAX_METADATA_CHARS
            {
                return Err(err(
                    Code::InvalidInstances,
                    format!(
                        "{at}metadata keys must be 1-{MAX_METADATA_CHARS} characters and values at most {MAX_METADATA_CHARS}"
                    ),
                ));
            }
            metadata.insert(key, value);
        }
        let upstream_auth =
            self.upstream_auth.map(|a| a.validate(&at, true)).transpose()?.unwrap_or_default();
        if command.is_some() && upstream_auth != UpstreamAuthSpec::None {
            return Err(err(Code::InvalidUpstreamAuth, format!("{at}{STDIO_HAS_NO_UPSTREAM_AUTH}")));
        }
        Ok(InstanceSpec { endpoint_url, command, weight, metadata, upstream_auth })
    }
}
