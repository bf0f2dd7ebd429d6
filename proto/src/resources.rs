//! The routing table as a versioned set of resources, and the snapshot/delta arithmetic both planes share:
//! the control plane diffs two sets into an update, the proxy applies an update to its set.

use std::collections::BTreeMap;

use crate::v1::{Resource, ResourceKind, ResourceRef, RoutingUpdate, resource::Kind};

/// Identity of a resource in the table: its kind and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: ResourceKind,
    pub id: String,
}

impl ResourceKey {
    /// The key of `resource`, or `None` when the resource carries no kind (a newer sender's variant).
    pub fn of(resource: &Resource) -> Option<Self> {
        let (kind, id) = match resource.kind.as_ref()? {
            Kind::Server(s) => (ResourceKind::Server, &s.id),
            Kind::Instance(i) => (ResourceKind::Instance, &i.id),
            Kind::InstanceHealth(h) => (ResourceKind::InstanceHealth, &h.instance_id),
            Kind::ApiKey(k) => (ResourceKind::ApiKey, &k.id),
            Kind::TrustedIssuer(t) => (ResourceKind::TrustedIssuer, &t.id),
            Kind::Role(r) => (ResourceKind::Role, &r.id),
            Kind::RateLimit(l) => (ResourceKind::RateLimit, &l.id),
            Kind::Catalog(c) => (ResourceKind::Catalog, &c.server_id),
        };
        Some(Self { kind, id: id.clone() })
    }

    fn from_ref(r: &ResourceRef) -> Self {
        Self { kind: r.kind(), id: r.id.clone() }
    }

    fn to_ref(&self) -> ResourceRef {
        ResourceRef { kind: self.kind as i32, id: self.id.clone() }
    }
}

/// Why an update cannot be applied. The proxy reports it back in a `Nack` and keeps its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("delta for base version {base} cannot apply to version {current}")]
    BaseMismatch { base: u64, current: u64 },
    #[error("version {next} does not follow version {current}")]
    NotNewer { next: u64, current: u64 },
    #[error("resource without a kind (sent by a newer control plane?)")]
    UnknownKind,
    #[error("resource {0:?} {1:?} listed twice")]
    Duplicate(ResourceKind, String),
    #[error("resource kind {0:?} is not valid in a removal")]
    BadRemoval(i32),
    #[error("removal of {0:?} {1:?}, which is not in the table")]
    MissingRemoval(ResourceKind, String),
    #[error("{child_kind:?} {child} points to {parent_kind:?} {parent}, which is not in the table")]
    DanglingParent { child_kind: ResourceKind, child: String, parent_kind: ResourceKind, parent: String },
}

/// A versioned routing table: every resource by key, in a stable order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    version: u64,
    items: BTreeMap<ResourceKey, Resource>,
}

impl ResourceSet {
    /// Builds a set from a full list of resources; duplicates and dangling parents are errors.
    pub fn new(version: u64, resources: impl IntoIterator<Item = Resource>) -> Result<Self, ApplyError> {
        let mut items = BTreeMap::new();
        for resource in resources {
            let key = ResourceKey::of(&resource).ok_or(ApplyError::UnknownKind)?;
            if items.contains_key(&key) {
                return Err(ApplyError::Duplicate(key.kind, key.id));
            }
            items.insert(key, resource);
        }
        let set = Self { version, items };
        set.check_parents()?;
        Ok(set)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// All resources in key order (servers before instances).
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.items.values()
    }

    pub fn get(&self, kind: ResourceKind, id: &str) -> Option<&Resource> {
        self.items.get(&ResourceKey { kind, id: id.to_owned() })
    }

    /// The whole table as one update.
    pub fn snapshot(&self) -> RoutingUpdate {
        RoutingUpdate {
            version: self.version,
            snapshot: true,
            base_version: 0,
            upserts: self.items.values().cloned().collect(),
            removals: Vec::new(),
        }
    }

    /// The delta that turns `self` into `next`: changed or new resources, and removed keys.
    pub fn delta_to(&self, next: &ResourceSet) -> RoutingUpdate {
        let upserts = next
            .items
            .iter()
            .filter(|(k, v)| self.items.get(*k) != Some(*v))
            .map(|(_, v)| v.clone())
            .collect();
        let removals =
            self.items.keys().filter(|k| !next.items.contains_key(*k)).map(ResourceKey::to_ref).collect();
        RoutingUpdate {
            version: next.version,
            snapshot: false,
            base_version: self.version,
            upserts,
            removals,
        }
    }

    /// Applies a snapshot or a delta, returning the new set; `self` is untouched on error.
    pub fn apply(&self, update: &RoutingUpdate) -> Result<ResourceSet, ApplyError> {
        if update.snapshot {
            return Self::new(update.version, update.upserts.iter().cloned());
        }
        if update.base_version != self.version {
            return Err(ApplyError::BaseMismatch { base: update.base_version, current: self.version });
        }
        if update.version <= self.version {
            return Err(ApplyError::NotNewer { next: update.version, current: self.version });
        }
        let mut items = self.items.clone();
        for removal in &update.removals {
            if removal.kind() == ResourceKind::Unspecified {
                return Err(ApplyError::BadRemoval(removal.kind));
            }
            let key = ResourceKey::from_ref(removal);
            if items.remove(&key).is_none() {
                return Err(ApplyError::MissingRemoval(key.kind, key.id));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for resource in &update.upserts {
            let key = ResourceKey::of(resource).ok_or(ApplyError::UnknownKind)?;
            if !seen.insert(key.clone()) {
                return Err(ApplyError::Duplicate(key.kind, key.id));
            }
            items.insert(key, resource.clone());
        }
        let set = Self { version: update.version, items };
        set.check_parents()?;
        Ok(set)
    }

    fn check_parents(&self) -> Result<(), ApplyError> {
        for resource in self.items.values() {
            let (child_kind, child, parent_kind, parent) = match &resource.kind {
                Some(Kind::Instance(i)) => {
                    (ResourceKind::Instance, &i.id, ResourceKind::Server, &i.server_id)
                }
                Some(Kind::InstanceHealth(h)) => {
                    (ResourceKind::InstanceHealth, &h.instance_id, ResourceKind::Instance, &h.instance_id)
                }
                Some(Kind::Catalog(c)) => {
                    (ResourceKind::Catalog, &c.server_id, ResourceKind::Server, &c.server_id)
                }
                _ => continue,
            };
            if self.get(parent_kind, parent).is_none() {
                return Err(ApplyError::DanglingParent {
                    child_kind,
                    child: child.clone(),
                    parent_kind,
                    parent: parent.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Instance, Server, Transport};

    fn server(id: &str, name: &str) -> Resource {
        Resource {
            kind: Some(Kind::Server(Server {
                id: id.into(),
                name: name.into(),
                transport: Transport::StreamableHttp as i32,
                ..Default::default()
            })),
        }
    }

    fn instance(id: &str, server: &str, url: &str) -> Resource {
        Resource {
            kind: Some(Kind::Instance(Instance {
                id: id.into(),
                server_id: server.into(),
                endpoint_url: url.into(),
                weight: 1,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn delta_round_trips() {
        let a =
            ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "http://h/1"), server("s2", "b")])
                .unwrap();
        let b = ResourceSet::new(
            2,
            [server("s1", "a"), instance("i1", "s1", "http://h/changed"), server("s3", "c")],
        )
        .unwrap();
        let delta = a.delta_to(&b);
        assert_eq!(delta.base_version, 1);
        assert_eq!(delta.upserts.len(), 2, "changed instance and new server only");
        assert_eq!(delta.removals.len(), 1);
        assert_eq!(a.apply(&delta).unwrap(), b);
        assert_eq!(ResourceSet::default().apply(&b.snapshot()).unwrap(), b);
    }

    #[test]
    fn refuses_inconsistent_updates() {
        let a = ResourceSet::new(5, [server("s1", "a")]).unwrap();
        let mut d = a.delta_to(&ResourceSet::new(6, []).unwrap());
        d.base_version = 4;
        assert_eq!(a.apply(&d), Err(ApplyError::BaseMismatch { base: 4, current: 5 }));
        d.base_version = 5;
        d.version = 5;
        assert_eq!(a.apply(&d), Err(ApplyError::NotNewer { next: 5, current: 5 }));

        let orphan = RoutingUpdate {
            version: 6,
            base_version: 5,
            upserts: vec![instance("i9", "nope", "http://h/")],
            ..Default::default()
        };
        assert!(matches!(a.apply(&orphan), Err(ApplyError::DanglingParent { .. })));

        let remove_parent = RoutingUpdate {
            version: 2,
            base_version: 1,
            removals: vec![ResourceRef { kind: ResourceKind::Server as i32, id: "s1".into() }],
            ..Default::default()
        };
        let with_child = ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "http://h/")]).unwrap();
        assert!(matches!(with_child.apply(&remove_parent), Err(ApplyError::DanglingParent { .. })));

        let missing = RoutingUpdate {
            version: 6,
            base_version: 5,
            removals: vec![ResourceRef { kind: ResourceKind::Server as i32, id: "zz".into() }],
            ..Default::default()
        };
        assert!(matches!(a.apply(&missing), Err(ApplyError::MissingRemoval(..))));
        assert!(matches!(
            ResourceSet::new(1, [server("s1", "a"), server("s1", "b")]),
            Err(ApplyError::Duplicate(..))
        ));
        assert_eq!(ResourceSet::new(1, [Resource { kind: None }]), Err(ApplyError::UnknownKind));
        let health = |id: &str| Resource {
            kind: Some(Kind::InstanceHealth(crate::v1::InstanceHealth {
                instance_id: id.into(),
                status: crate::v1::HealthStatus::Unhealthy as i32,
            })),
        };
        assert!(matches!(
            ResourceSet::new(1, [server("s1", "a"), health("i1")]),
            Err(ApplyError::DanglingParent { parent_kind: ResourceKind::Instance, .. })
        ));
        assert!(
            ResourceSet::new(1, [server("s1", "a"), instance("i1", "s1", "http://h/"), health("i1")]).is_ok()
        );
    }
}
