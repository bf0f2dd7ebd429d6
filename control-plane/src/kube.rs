//! Kubernetes service discovery (`--kubernetes-discovery`): the leader watches Services in the chosen
//! namespaces and keeps one registered server per Service annotated `mcpgw.io/server: <name>` — created
//! when the Service appears, replaced when its annotations, address or port change, deleted when it goes.
//!
//! Annotations: `mcpgw.io/server` (the server name, required), `mcpgw.io/path` (default `/mcp`),
//! `mcpgw.io/port` (a port's name or number; default the Service's first port), `mcpgw.io/transport`
//! (`streamable_http`, the default, or `sse`), `mcpgw.io/scheme` (`http`, the default, or `https`). The
//! endpoint is the Service's cluster IP (its DNS name `<service>.<namespace>.svc` for a headless one).
//!
//! Servers it made carry the owner `kubernetes:<namespace>/<service>`; it never changes or removes any
//! other server (a name already taken by one is reported and skipped). Every change goes through the same
//! validation, SSRF guard and store as the REST API and is audited (principal `kubernetes-discovery`).
//! Level-triggered: each round lists every watched namespace and reconciles; a watch on each namespace
//! (from the listed `resourceVersion`) starts the next round as soon as anything changes, and a round
//! runs every `--kubernetes-resync` regardless.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::servers::request::ServerRequest;
use crate::db::{DbPool, store};
use crate::discovery::Discoverer;
use crate::hub::RoutingHub;
use crate::ssrf::SsrfPolicy;

/// The annotation that makes a Service a registered server, and the others it reads.
pub const SERVER: &str = "mcpgw.io/server";
const PATH: &str = "mcpgw.io/path";
const PORT: &str = "mcpgw.io/port";
const TRANSPORT: &str = "mcpgw.io/transport";
const SCHEME: &str = "mcpgw.io/scheme";
/// Owner of the servers this module made: `kubernetes:<namespace>/<service>`.
const OWNER_PREFIX: &str = "kubernetes:";
/// The principal its changes are audited under.
pub const PRINCIPAL: &str = "kubernetes-discovery";
/// Longest a watch is held open by the API server before it is opened again.
const WATCH_SECONDS: u32 = 290;
/// Quiet time after a watch event before the round, so a burst of changes makes one round.
const SETTLE: Duration = Duration::from_millis(200);

/// Where the API server is and how to reach it (`--kubernetes-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `https://<KUBERNETES_SERVICE_HOST>:<port>` in a pod.
    pub api: url::Url,
    /// Namespaces watched; empty: every namespace.
    pub namespaces: Vec<String>,
    /// The service account token, read again for each request (kubelet rotates it).
    pub token_file: Option<PathBuf>,
    /// PEM CA of the API server's certificate.
    pub ca: Option<Vec<u8>>,
    /// A full round at least this often.
    pub resync: Duration,
}

/// The sync, run by the leader.
#[derive(Clone)]
pub struct KubeSync {
    settings: Arc<KubeSettings>,
    http: reqwest::Client,
    pool: DbPool,
    hub: Arc<RoutingHub>,
    discoverer: Discoverer,
    ssrf: Arc<SsrfPolicy>,
}

/// What a round changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    /// Services not registered, with why.
    pub skipped: Vec<String>,
}

impl KubeSync {
    pub fn new(
        settings: KubeSettings,
        pool: DbPool,
        hub: Arc<RoutingHub>,
        discoverer: Discoverer,
        ssrf: Arc<SsrfPolicy>,
    ) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).no_proxy();
        if let Some(pem) = &settings.ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { settings: Arc::new(settings), http, pool, hub, discoverer, ssrf })
    }

    /// Rounds until `stop`: after every watch event (settled), and every `resync`.
    pub async fn run(self, stop: CancellationToken) {
        let mut failing = false;
        let mut skipped = Vec::new();
        loop {
            let versions = match self.round().await {
                Ok((round, versions)) => {
                    if failing {
                        tracing::info!("Kubernetes service discovery works again.");
                    }
                    failing = false;
                    if !(round.created.is_empty() && round.updated.is_empty() && round.deleted.is_empty()) {
                        tracing::info!(created = ?round.created, updated = ?round.updated, deleted = ?round.deleted,
                            "Synchronised the registry with Kubernetes Services.");
                    }
                    // Told once, not every round.
                    if round.skipped != skipped {
                        for why in round.skipped.iter().filter(|w| !skipped.contains(*w)) {
                            tracing::warn!(service = %why, "A Kubernetes Service is not registered.");
                        }
                        skipped = round.skipped;
                    }
                    versions
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "Kubernetes service discovery failed; the registry is kept as it is and the sync retries.");
                    }
                    failing = true;
                    Vec::new()
                }
            };
            type Watch<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
            let mut watches: Vec<Watch<'_>> = versions
                .into_iter()
                .map(|(ns, version)| Box::pin(self.watch(ns, version)) as Watch<'_>)
                .collect();
            // Without a watch (the list failed), the resync timer alone brings the next round.
            watches.push(Box::pin(std::future::pending::<()>()));
            let watches = futures_util::future::select_all(watches);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.settings.resync) => {}
                _ = watches => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(SETTLE) => {}
                    }
                }
            }
        }
    }

    /// Lists the Services and reconciles the registry with them; returns the changes and, per namespace
    /// watched, the `resourceVersion` to watch from.
    pub async fn round(&self) -> Result<(Round, Vec<(Option<String>, String)>), String> {
        let mut services = Vec::new();
        let mut versions = Vec::new();
        let scopes: Vec<Option<String>> = if self.settings.namespaces.is_empty() {
            vec![None]
        } else {
            self.settings.namespaces.iter().cloned().map(Some).collect()
        };
        for ns in scopes {
            let list: ServiceList = self.get(&self.path(ns.as_deref()), &[]).await?;
            versions.push((ns, list.metadata.resource_version.unwrap_or_default()));
            services.extend(list.items);
        }
        let round = self.reconcile(services).await?;
        Ok((round, versions))
    }

    fn path(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) => format!("api/v1/namespaces/{ns}/services"),
            None => "api/v1/services".to_owned(),
        }
    }

    async fn request(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response, String> {
        let url = self.settings.api.join(path).map_err(|e| e.to_string())?;
        let mut req = self.http.get(url.clone()).query(query);
        if let Some(file) = &self.settings.token_file {
            let token = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| format!("cannot read the token {}: {e}", file.display()))?;
            req = req.bearer_auth(token.trim());
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(format!("{url}: {status}: {body}"));
        }
        Ok(resp)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, String> {
        let resp = self.request(path, query).await?;
        resp.json().await.map_err(|e| format!("{path}: not a Kubernetes list: {e}"))
    }

    /// Resolves at the first change in `ns` after `version` (or when the watch ends or fails, which is
    /// followed by a new round just the same).
    async fn watch(&self, ns: Option<String>, version: String) {
        let query = [
            ("watch", "1".to_owned()),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "false".to_owned()),
            ("timeoutSeconds", WATCH_SECONDS.to_string()),
        ];
        let Ok(resp) = self.request(&self.path(ns.as_deref()), &query).await else {
            // The API server is unreachable: wait for the resync rather than spin.
            futures_util::future::pending::<()>().await;
            return;
        };
        let mut body = resp.bytes_stream();
        let mut line = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            line.extend_from_slice(&chunk);
            while let Some(end) = line.iter().position(|b| *b == b'\n') {
                let event: Vec<u8> = line.drain(..=end).collect();
                let kind = serde_json::from_slice::<WatchEvent>(&event).map(|e| e.kind).unwrap_or_default();
                if kind != "BOOKMARK" {
                    return;
                }
            }
            if line.len() > 4 * 1024 * 1024 {
                return;
            }
        }
    }

    /// Makes the registry's Kubernetes-owned servers match `services`.
    pub async fn reconcile(&self, mut services: Vec<Service>) -> Result<Round, String> {
        services.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut round = Round::default();
        let mut wanted: BTreeMap<String, (String, ServerRequest)> = BTreeMap::new();
        let mut names: HashMap<String, String> = HashMap::new();
        for service in &services {
            let Some(name) = service.metadata.annotations.get(SERVER) else { continue };
            let owner = service.owner();
            match service.request(name) {
                Ok(request) => {
                    if let Some(first) = names.get(name) {
                        round.skipped.push(format!("{owner}: the server name {name:?} is already {first}'s"));
                        continue;
                    }
                    names.insert(name.clone(), owner.clone());
                    wanted.insert(owner, (name.clone(), request));
                }
                Err(why) => round.skipped.push(format!("{owner}: {why}")),
            }
        }
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let rows = store::list(&mut conn).await.map_err(|e| e.to_string())?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut instances = store::instances_of(&mut conn, Some(&ids)).await.map_err(|e| e.to_string())?;
        drop(conn);
        let mut ours: HashMap<String, (Uuid, String, String, Vec<String>)> = HashMap::new();
        let mut taken: HashMap<String, Option<String>> = HashMap::new();
        for row in rows {
            taken.insert(row.name.clone(), row.owner.clone());
            if let Some(owner) = row.owner.as_deref().filter(|o| o.starts_with(OWNER_PREFIX)) {
                let endpoints = instances
                    .remove(&row.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.endpoint_url)
                    .collect();
                ours.insert(
                    owner.to_owned(),
                    (row.id, row.name.clone(), row.transport_type.clone(), endpoints),
                );
            }
        }
        let mut changed = false;
        for (owner, (name, request)) in wanted.iter() {
            let spec = match request.clone().validate() {
                Ok(spec) => spec,
                Err(e) => {
                    round.skipped.push(format!("{owner}: {}", e.message()));
                    continue;
                }
            };
            let endpoint = request.endpoint_url.clone().unwrap_or_default();
            if let Ok(url) = url::Url::parse(&endpoint)
                && let Err(refusal) = self.ssrf.check_url(&url).await
            {
                round.skipped.push(format!("{owner}: endpoint {endpoint} is not allowed: {refusal}"));
                continue;
            }
            match ours.get(owner) {
                Some((_, current, transport, endpoints))
                    if current == name
                        && transport == spec.transport.as_str()
                        && *endpoints == [endpoint.clone()] => {}
                Some((id, _, _, _)) => {
                    let id = *id;
                    crate::api::audited::system(PRINCIPAL, "SYNC kubernetes", &self.pool, async |conn| {
                        let before = crate::api::servers::server_view(conn, id).await?;
                        let ((server, _), _) = store::replace(conn, id, &spec, None, None)
                            .await
                            .map_err(crate::api::servers::from_store)?;
                        let after = crate::api::servers::server_view(conn, id).await?;
                        let target = crate::api::audited::Target::server(id, server.tenant_id.as_deref());
                        Ok(((), crate::api::audited::Audit::updated(target, &before, &after)))
                    })
                    .await
                    .map_err(|e| e.message().to_owned())?;
                    round.updated.push(name.clone());
                    changed = true;
                    self.discoverer.spawn(id);
                }
                None => {
                    if let Some(holder) = taken.get(name) {
                        let holder = holder.as_deref().unwrap_or("an administrator");
                        round.skipped.push(format!("{owner}: the server name {name:?} is taken by {holder}"));
                        continue;
                    }
                    let id =
                        crate::api::audited::system(PRINCIPAL, "SYNC kubernetes", &self.pool, async |conn| {
                            let ((server, _), _) = store::create(conn, &spec, Some(owner.as_str()), None)
                                .await
                                .map_err(crate::api::servers::from_store)?;
                            let view = crate::api::servers::server_view(conn, server.id).await?;
                            let target =
                                crate::api::audited::Target::server(server.id, server.tenant_id.as_deref());
                            Ok((server.id, crate::api::audited::Audit::created(target, &view)))
                        })
                        .await
                        .map_err(|e| e.message().to_owned())?;
                    round.created.push(name.clone());
                    changed = true;
                    self.discoverer.spawn(id);
                }
            }
        }
        for (owner, (id, name, _, _)) in &ours {
            if wanted.contains_key(owner) {
                continue;
            }
            let id = *id;
            crate::api::audited::system(PRINCIPAL, "SYNC kubernetes", &self.pool, async |conn| {
                let before = crate::api::servers::server_view(conn, id).await?;
                store::delete(conn, id).await.map_err(crate::api::servers::from_store)?;
                let target = crate::api::audited::Target::server(id, before.tenant_id.as_deref());
                Ok(((), crate::api::audited::Audit::deleted(target, &before)))
            })
            .await
            .map_err(|e| e.message().to_owned())?;
            round.deleted.push(name.clone());
            changed = true;
        }
        if changed && let Err(error) = self.hub.refresh().await {
            tracing::debug!(%error, "Could not publish the synchronised registry; the poller will.");
        }
        Ok(round)
    }
}

#[derive(Debug, Deserialize)]
struct ServiceList {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Service>,
}

#[derive(Debug, Default, Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type", default)]
    kind: String,
}

/// The parts of a Kubernetes Service the sync reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceSpec {
    #[serde(rename = "clusterIP", default)]
    pub cluster_ip: Option<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
}

impl Service {
    fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// The registration this Service's annotations ask for.
    fn request(&self, name: &str) -> Result<ServerRequest, String> {
        let notes = &self.metadata.annotations;
        let port = match notes.get(PORT).map(|p| p.trim()) {
            None => self.spec.ports.first().map(|p| p.port).ok_or("the Service has no port")?,
            Some(wanted) => self
                .spec
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(wanted) || p.port.to_string() == wanted)
                .map(|p| p.port)
                .ok_or_else(|| format!("{PORT} {wanted:?} names no port of the Service"))?,
        };
        let scheme = notes.get(SCHEME).map_or("http", |s| s.trim());
        if !matches!(scheme, "http" | "https") {
            return Err(format!("{SCHEME} must be http or https, not {scheme:?}"));
        }
        let path = notes.get(PATH).map_or("/mcp", |p| p.trim());
        if !path.starts_with('/') {
            return Err(format!("{PATH} must start with /, not {path:?}"));
        }
        let host = match self.spec.cluster_ip.as_deref().map(str::trim) {
            Some(ip) if !ip.is_empty() && ip != "None" => {
                if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_owned()
                }
            }
            _ => format!("{}.{}.svc", self.metadata.name, self.metadata.namespace),
        };
        Ok(ServerRequest {
            name: name.trim().to_owned(),
            endpoint_url: Some(format!("{scheme}://{host}:{port}{path}")),
            transport_type: notes.get(TRANSPORT).map(|t| t.trim().to_owned()),
            description: Some(format!(
                "Kubernetes Service {}/{}",
                self.metadata.namespace, self.metadata.name
            )),
            tags: Some(vec!["kubernetes".to_owned()]),
            ..ServerRequest::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(annotations: &[(&str, &str)], cluster_ip: &str, ports: &[(&str, u16)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: "docs".into(),
                namespace: "tools".into(),
                annotations: annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            },
            spec: ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ports: ports.iter().map(|(n, p)| ServicePort { name: Some((*n).into()), port: *p }).collect(),
            },
        }
    }

    #[test]
    fn annotations_make_the_registration() {
        let s = service(&[(SERVER, "docs")], "10.0.3.7", &[("http", 8080), ("metrics", 9090)]);
        let r = s.request("docs").unwrap();
        assert_eq!(r.endpoint_url.as_deref(), Some("http://10.0.3.7:8080/mcp"));
        assert_eq!(r.transport_type, None);
        assert_eq!(s.owner(), "kubernetes:tools/docs");
        let s = service(
            &[(SERVER, "docs"), (PORT, "metrics"), (PATH, "/sse"), (TRANSPORT, "sse"), (SCHEME, "https")],
            "None",
            &[("http", 8080), ("metrics", 9090)],
        );
        let r = s.request("docs").unwrap();
        assert_eq!(r.endpoint_url.as_deref(), Some("https://docs.tools.svc:9090/sse"));
        assert_eq!(r.transport_type.as_deref(), Some("sse"));
        let v6 = service(&[(SERVER, "docs"), (PORT, "8080")], "fd00::1", &[("http", 8080)]);
        assert_eq!(v6.request("docs").unwrap().endpoint_url.as_deref(), Some("http://[fd00::1]:8080/mcp"));
    }

    #[test]
    fn bad_annotations_are_explained() {
        let no_port = service(&[(SERVER, "docs")], "10.0.0.1", &[]);
        assert!(no_port.request("docs").unwrap_err().contains("no port"));
        let wrong_port = service(&[(SERVER, "docs"), (PORT, "grpc")], "10.0.0.1", &[("http", 80)]);
        assert!(wrong_port.request("docs").unwrap_err().contains("names no port"));
        let scheme = service(&[(SERVER, "docs"), (SCHEME, "ftp")], "10.0.0.1", &[("http", 80)]);
        assert!(scheme.request("docs").unwrap_err().contains("http or https"));
        let path = service(&[(SERVER, "docs"), (PATH, "mcp")], "10.0.0.1", &[("http", 80)]);
        assert!(path.request("docs").unwrap_err().contains("start with /"));
    }
}
