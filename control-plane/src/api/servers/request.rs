//! The body of POST and PUT `/api/v1/servers`, and its validation into a `ServerSpec`.

use std::collections::BTreeMap;

use mcpgw_proto::validate;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{ApiError, Code};
use crate::model::{
    CircuitBreaker, HealthCheck, HealthCheckSpec, InstanceSpec, LoadBalancing, MAX_INSTANCES, MAX_WEIGHT,
    ServerSpec, TransportType,
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

/// One instance in a registration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    pub endpoint_url: String,
    /// Relative share of traffic for `weighted` and `consistent_hash`, 1..=10000 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Free-form string labels (zone, version...), passed to proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Body of POST and PUT (PUT replaces every field; omitted optional fields are reset). Exactly one of
/// `endpoint_url` (one instance) and `instances` is required.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRequest>>,
    /// `streamable_http` (default; `http` is an alias) or `sse`.
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
}

/// Longest tenant id and version label.
pub const MAX_TENANT_CHARS: usize = 100;
pub const MAX_VERSION_CHARS: usize = 50;
/// Largest declared capabilities document, serialized.
pub const MAX_CAPABILITIES_BYTES: usize = 64 * 1024;

fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl ServerRequest {
    /// Checks every field; the first problem found is reported.
    pub fn validate(self) -> Result<ServerSpec, ApiError> {
        // PostgreSQL text and jsonb cannot hold NUL: refuse it anywhere in the request up front.
        if serde_json::to_value(&self).is_ok_and(|v| has_nul(&v)) {
            return Err(err(Code::MalformedJson, "strings must not contain NUL characters"));
        }
        validate::server_name(&self.name)
            .map_err(|e| err(Code::InvalidServerName, format!("invalid server name {:?}: {e}", self.name)))?;
        let instances = match (self.endpoint_url, self.instances) {
            (Some(_), Some(_)) => {
                return Err(err(
                    Code::ConflictingFields,
                    "give either endpoint_url (one instance) or instances, not both",
                ));
            }
            (None, None) => {
                return Err(err(
                    Code::MissingField,
                    "missing field `endpoint_url`: give endpoint_url (one instance) or instances",
                ));
            }
            (Some(url), None) => {
                vec![InstanceRequest { endpoint_url: url, weight: None, metadata: None }.validate(None)?]
            }
            (None, Some(list)) => validate_instances(list)?,
        };
        let transport = match self.transport_type.as_deref() {
            None => TransportType::StreamableHttp,
            Some(raw) => TransportType::parse(raw).ok_or_else(|| {
                err(
                    Code::InvalidTransportType,
                    format!(
                        "unknown transport_type {raw:?}; use \"streamable_http\" (or \"http\") or \"sse\""
                    ),
                )
            })?,
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
            Some(t)
                if t.chars().count() <= MAX_TENANT_CHARS
                    && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
            {
                Some(t.to_owned())
            }
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
        Ok(ServerSpec {
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

impl ServerRequest {
    /// The request that recreates a stored server (PATCH merges into it; export writes it). Fields at
    /// their defaults are left out, so the form is canonical.
    pub fn from_stored(server: &crate::model::ServerRow, instances: &[crate::model::InstanceRow]) -> Self {
        let declared = server.declared_capabilities();
        Self {
            name: server.name.clone(),
            endpoint_url: None,
            instances: Some(
                instances
                    .iter()
                    .map(|i| InstanceRequest {
                        endpoint_url: i.endpoint_url.clone(),
                        weight: u32::try_from(i.weight).ok().filter(|w| *w != 1),
                        metadata: i.metadata.as_object().filter(|m| !m.is_empty()).cloned(),
                    })
                    .collect(),
            ),
            transport_type: Some(server.transport_type.clone()),
            description: server.description.clone(),
            tags: (!server.tags.is_empty()).then(|| server.tags.clone()),
            load_balancing: (server.load_balancing != LoadBalancing::default().as_str())
                .then(|| server.load_balancing.clone()),
            hash_key: server.hash_key.clone(),
            circuit_breaker: server.breaker(),
            tenant_id: server.tenant_id.clone(),
            version: server.version.clone(),
            capabilities: (!declared.is_empty()).then_some(declared),
            auto_discover: (!server.auto_discover).then_some(false),
            health_check: server.health_check().to_json(),
        }
    }
}

impl ServerRequest {
    /// The canonical request of a validated spec (the form `from_stored` gives once it is stored).
    pub fn from_spec(spec: &ServerSpec) -> Self {
        Self {
            name: spec.name.clone(),
            endpoint_url: None,
            instances: Some(
                spec.instances
                    .iter()
                    .map(|i| InstanceRequest {
                        endpoint_url: i.endpoint_url.clone(),
                        weight: (i.weight != 1).then_some(i.weight),
                        metadata: (!i.metadata.is_empty()).then(|| {
                            i.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
                        }),
                    })
                    .collect(),
            ),
            transport_type: Some(spec.transport.as_str().to_owned()),
            description: spec.description.clone(),
            tags: (!spec.tags.is_empty()).then(|| spec.tags.clone()),
            load_balancing: (spec.load_balancing != LoadBalancing::default())
                .then(|| spec.load_balancing.as_str().to_owned()),
            hash_key: spec.hash_key.clone(),
            circuit_breaker: spec.circuit_breaker.clone(),
            tenant_id: spec.tenant_id.clone(),
            version: spec.version.clone(),
            capabilities: (!spec.capabilities.is_empty()).then(|| spec.capabilities.clone()),
            auto_discover: (!spec.auto_discover).then_some(false),
            health_check: spec.health_check.to_json(),
        }
    }
}

fn validate_instances(list: Vec<InstanceRequest>) -> Result<Vec<InstanceSpec>, ApiError> {
    if list.is_empty() {
        return Err(err(Code::InvalidInstances, "instances must list at least one instance"));
    }
    if list.len() > MAX_INSTANCES {
        return Err(err(
            Code::InvalidInstances,
            format!("at most {MAX_INSTANCES} instances are allowed, not {}", list.len()),
        ));
    }
    let mut specs: Vec<InstanceSpec> = Vec::with_capacity(list.len());
    for (i, instance) in list.into_iter().enumerate() {
        let spec = instance.validate(Some(i))?;
        if specs.iter().any(|s| s.endpoint_url == spec.endpoint_url) {
            return Err(err(
                Code::InvalidInstances,
                format!("instances[{i}]: endpoint_url {:?} is listed twice", spec.endpoint_url),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

impl InstanceRequest {
    /// Validates one instance; `index` names it in messages when it came from a list.
    pub fn validate(self, index: Option<usize>) -> Result<InstanceSpec, ApiError> {
        if serde_json::to_value(&self).is_ok_and(|v| has_nul(&v)) {
            return Err(err(Code::MalformedJson, "strings must not contain NUL characters"));
        }
        let at = index.map(|i| format!("instances[{i}]: ")).unwrap_or_default();
        validate::endpoint_url(&self.endpoint_url)
            .map_err(|e| err(Code::InvalidEndpointUrl, format!("{at}{e}")))?;
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
        Ok(InstanceSpec { endpoint_url: self.endpoint_url, weight, metadata })
    }
}

/// Whether any string or key in `value` contains NUL.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn check_breaker(b: CircuitBreaker) -> Result<CircuitBreaker, ApiError> {
    let bad = |why: String| Err(err(Code::InvalidCircuitBreaker, why));
    if let Some(r) = b.failure_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return bad(format!("circuit_breaker.failure_ratio must be in (0, 1], not {r}"));
    }
    let millis = |field: &str, value: &Option<String>| -> Result<Option<u64>, ApiError> {
        let Some(raw) = value else { return Ok(None) };
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            err(
                Code::InvalidCircuitBreaker,
                format!("circuit_breaker.{field} {raw:?} is not a duration like \"10s\": {e}"),
            )
        })?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 || ms > u64::from(u32::MAX) {
            return Err(err(
                Code::InvalidCircuitBreaker,
                format!("circuit_breaker.{field} must be between 1ms and 49 days"),
            ));
        }
        Ok(Some(ms))
    };
    let window = millis("window", &b.window)?;
    let open = millis("open", &b.open)?;
    let max_open = millis("max_open", &b.max_open)?;
    if let (Some(open), Some(max)) = (open, max_open)
        && open > max
    {
        return bad("circuit_breaker.open must not exceed max_open".into());
    }
    let canonical = |ms: Option<u64>| {
        ms.map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
    };
    Ok(CircuitBreaker {
        window: canonical(window),
        open: canonical(open),
        max_open: canonical(max_open),
        ..b
    })
}

fn check_health(h: HealthCheck) -> Result<HealthCheckSpec, ApiError> {
    let millis = |field: &str, value: &Option<String>, min_ms: u64| -> Result<Option<u32>, ApiError> {
        let Some(raw) = value else { return Ok(None) };
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} {raw:?} is not a duration like \"10s\": {e}"),
            )
        })?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms < min_ms || ms > 3_600_000 {
            return Err(err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} must be between {min_ms}ms and 1h"),
            ));
        }
        Ok(u32::try_from(ms).ok())
    };
    let threshold = |field: &str, value: Option<u32>| -> Result<Option<u32>, ApiError> {
        match value {
            Some(v) if v == 0 || v > crate::config::MAX_HEALTH_THRESHOLD => Err(err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} must be between 1 and {}", crate::config::MAX_HEALTH_THRESHOLD),
            )),
            other => Ok(other),
        }
    };
    Ok(HealthCheckSpec {
        enabled: h.enabled.unwrap_or(true),
        interval_ms: millis("interval", &h.interval, 50)?,
        timeout_ms: millis("timeout", &h.timeout, 10)?,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold)?,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold)?,
    })
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    let bad = |why: String| Err(err(Code::InvalidTags, why));
    if tags.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags are allowed, not {}", tags.len()));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.trim().is_empty() || tag.chars().any(char::is_control) {
            return bad(format!("tag {i} is empty or contains control characters"));
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return bad(format!("tag {tag:?} is longer than {MAX_TAG_CHARS} characters"));
        }
        if tags[..i].contains(tag) {
            return bad(format!("tag {tag:?} is listed twice"));
        }
    }
    Ok(())
}
