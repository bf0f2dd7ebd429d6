//! The routing resources a server contributes to the table every proxy receives.

use std::collections::{BTreeMap, HashMap};

use mcpgw_proto::v1::{self, resource::Kind};
use uuid::Uuid;

use super::rows::{InstanceRow, ServerRow};
use super::spec::{LoadBalancing, TransportType};
use super::upstream_auth::Owner;

/// The server's `Server` resource, one `Instance` resource per instance and, for every instance the health
/// checks have judged, an `InstanceHealth` resource (`status` returns `None` for unknown instances). The
/// server and each instance carry their upstream credential from `credentials` (already opened); a stdio
/// instance carries its command, its secret environment from `secret_env` (already opened) merged in.
pub fn resources<'a>(
    server: &ServerRow,
    instances: impl IntoIterator<Item = &'a InstanceRow>,
    status: impl Fn(&InstanceRow) -> Option<v1::HealthStatus>,
    credentials: &HashMap<Owner, v1::UpstreamCredential>,
    secret_env: &HashMap<Uuid, BTreeMap<String, String>>,
) -> Vec<v1::Resource> {
    let transport = TransportType::parse(&server.transport_type)
        .map_or(v1::Transport::Unspecified, TransportType::to_proto);
    let load_balancing = LoadBalancing::parse(&server.load_balancing)
        .map_or(v1::LoadBalancing::Unspecified, LoadBalancing::to_proto);
    let mut out = vec![v1::Resource {
        kind: Some(Kind::Server(v1::Server {
            id: server.id.to_string(),
            name: server.name.clone(),
            transport: transport as i32,
            load_balancing: load_balancing as i32,
            hash_key: server.hash_key.clone().unwrap_or_default(),
            circuit_breaker: server.breaker().map(|b| b.to_proto()),
            upstream_credential: credentials.get(&Owner::Server(server.id)).cloned(),
            tenant_id: server.tenant_id.clone().unwrap_or_else(|| super::DEFAULT_TENANT.to_owned()),
            audit_arguments: server.audit_arguments().to_proto() as i32,
            name_prefix: server.name_prefix().to_proto() as i32,
            priority: server.priority,
            tags: server.tags.clone(),
        })),
    }];
    for instance in instances {
        out.push(v1::Resource {
            kind: Some(Kind::Instance(v1::Instance {
                id: instance.id.to_string(),
                server_id: server.id.to_string(),
                endpoint_url: instance.endpoint_url.clone(),
                weight: u32::try_from(instance.weight).unwrap_or(1),
                metadata: instance.metadata_map().into_iter().collect(),
                upstream_credential: credentials.get(&Owner::Instance(instance.id)).cloned(),
                command: instance.stored_command().map(|c| c.to_proto(secret_env.get(&instance.id))),
            })),
        });
        if let Some(health) = status(instance) {
            out.push(v1::Resource {
                kind: Some(Kind::InstanceHealth(v1::InstanceHealth {
                    instance_id: instance.id.to_string(),
                    status: health as i32,
                })),
            });
        }
    }
    out
}
