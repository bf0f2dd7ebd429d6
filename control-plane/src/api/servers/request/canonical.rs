//! Canonical registration forms: what a stored server or a validated spec looks like as a request (PATCH
//! merges into it, export writes it, import compares it). Fields at their defaults are left out.

use serde_json::Value;

use super::{CommandRequest, InstanceRequest, ServerRequest, UpstreamAuthRequest};
use crate::model::{
    AuditArguments, CredentialIndex, InstanceRow, LoadBalancing, NamePrefix, ServerRow, ServerSpec,
};

/// The setting as a request gives it: left out at its default.
fn audit_arguments(setting: AuditArguments) -> Option<String> {
    (setting != AuditArguments::default()).then(|| setting.as_str().to_owned())
}

/// The naming setting as a request gives it: left out at its default.
fn name_prefix(setting: NamePrefix) -> Option<String> {
    (setting != NamePrefix::default()).then(|| setting.as_str().to_owned())
}

/// The priority as a request gives it: left out at its default (0).
fn priority(priority: i32) -> Option<Value> {
    (priority != 0).then(|| Value::from(priority))
}

impl ServerRequest {
    /// The request that recreates a stored server (PATCH merges into it; export writes it). Fields at
    /// their defaults are left out, so the form is canonical. Credentials appear without their value,
    /// which a request keeps when it gives none.
    pub fn from_stored(server: &ServerRow, instances: &[InstanceRow], credentials: &CredentialIndex) -> Self {
        let declared = server.declared_capabilities();
        Self {
            name: server.name.clone(),
            endpoint_url: None,
            command: None,
            instances: Some(
                instances
                    .iter()
                    .map(|i| {
                        let command = i
                            .stored_command()
                            .map(|c| CommandRequest::from_view(&c.view(credentials.secret_env_names(i.id))));
                        InstanceRequest {
                            endpoint_url: command.is_none().then(|| i.endpoint_url.clone()),
                            command,
                            weight: u32::try_from(i.weight).ok().filter(|w| *w != 1),
                            metadata: i.metadata.as_object().filter(|m| !m.is_empty()).cloned(),
                            upstream_auth: credentials
                                .instance_view(i.id)
                                .and_then(|view| UpstreamAuthRequest::from_view(&view)),
                        }
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
            upstream_auth: UpstreamAuthRequest::from_view(&credentials.server_view(server.id)),
            audit_arguments: audit_arguments(server.audit_arguments()),
            name_prefix: name_prefix(server.name_prefix()),
            priority: priority(server.priority),
        }
    }
}

impl ServerRequest {
    /// The canonical request of a validated spec (the form `from_stored` gives once it is stored).
    pub fn from_spec(spec: &ServerSpec) -> Self {
        Self {
            name: spec.name.clone(),
            endpoint_url: None,
            command: None,
            instances: Some(
                spec.instances
                    .iter()
                    .map(|i| InstanceRequest {
                        endpoint_url: i.command.is_none().then(|| i.endpoint_url.clone()),
                        command: i.command.as_ref().map(|c| CommandRequest::from_view(&c.view())),
                        weight: (i.weight != 1).then_some(i.weight),
                        metadata: (!i.metadata.is_empty()).then(|| {
                            i.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
                        }),
                        upstream_auth: UpstreamAuthRequest::from_view(&i.upstream_auth.view()),
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
            upstream_auth: UpstreamAuthRequest::from_view(&spec.upstream_auth.view()),
            audit_arguments: audit_arguments(spec.audit_arguments),
            name_prefix: name_prefix(spec.name_prefix),
            priority: priority(spec.priority),
        }
    }
}
