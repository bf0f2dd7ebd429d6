//! The gRPC routing stream: one session per proxy — credential, Hello, a snapshot, then a delta per
//! published change.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::routing_discovery_server::{RoutingDiscovery, RoutingDiscoveryServer};
use mcpgw_proto::v1::{
    AuditAck, AuditBatch, ExchangeRequest, ExchangeResponse, Hello, LeaseRequest, LeaseResponse,
    ProxyMessage, ResourceKind, RoutingUpdate, proxy_message::Kind, resource,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{SecretToken, bearer};
use crate::db::store::audit::WriteError;
use crate::hub::RoutingHub;
use crate::metrics::METRICS;
use crate::passive::PassiveWriter;
use crate::proxies::ProxyHandle;

/// How long a new stream may take to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Updates buffered per stream before the session waits for the proxy to read.
const OUTBOUND_BUFFER: usize = 16;

/// Who may open the routing stream. The table names every API key's digest and every upstream, so it is
/// not for anyone who can reach the port.
#[derive(Debug, Clone)]
pub enum ProxyAuth {
    /// Proxies must send `authorization: Bearer <--proxy-token>`.
    Token(SecretToken),
    /// No `--proxy-token`: only peers on loopback (a proxy on the same host, or tests).
    LoopbackOnly,
}

impl ProxyAuth {
    pub fn new(token: Option<SecretToken>) -> Self {
        token.map_or(Self::LoopbackOnly, Self::Token)
    }

    /// Checks a stream's metadata and peer; the refusal never repeats what was presented.
    pub fn check(&self, metadata: &MetadataMap, peer: Option<SocketAddr>) -> Result<(), Status> {
        match self {
            Self::Token(token) => {
                let Some(value) = metadata.get("authorization") else {
                    return Err(Status::unauthenticated(
                        "the routing stream needs `authorization: Bearer <proxy token>` metadata (--proxy-token)",
                    ));
                };
                match value.to_str().ok().and_then(bearer) {
                    Some(candidate) if token.matches(candidate) => Ok(()),
                    _ => Err(Status::unauthenticated("the proxy token is not valid")),
                }
            }
            Self::LoopbackOnly if peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) => Ok(()),
            Self::LoopbackOnly => Err(Status::unauthenticated(
                "this control plane has no --proxy-token, so it accepts proxies from loopback only: set \
                 --proxy-token (MCPGW_PROXY_TOKEN) on the control plane and on every proxy",
            )),
        }
    }
}

/// Implements `RoutingDiscovery` on top of a `RoutingHub`.
#[derive(Clone)]
pub struct RoutingService {
    hub: Arc<RoutingHub>,
    auth: ProxyAuth,
    shutdown: CancellationToken,
}

impl RoutingService {
    /// Sessions end when `shutdown` is cancelled, so the server can stop without waiting for proxies.
    pub fn new(hub: Arc<RoutingHub>, auth: ProxyAuth, shutdown: CancellationToken) -> Self {
        Self { hub, auth, shutdown }
    }

    /// The tonic service to add to a `Server`.
    pub fn into_server(self) -> RoutingDiscoveryServer<Self> {
        RoutingDiscoveryServer::new(self)
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<RoutingUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingDiscovery for RoutingService {
    type StreamRoutesStream = UpdateStream;
    type StreamAuditStream = Pin<Box<dyn Stream<Item = Result<AuditAck, Status>> + Send>>;

    async fn stream_audit(
        &self,
        request: Request<Streaming<AuditBatch>>,
    ) -> Result<Response<Self::StreamAuditStream>, Status> {
        let remote = request.remote_addr();
        self.auth.check(request.metadata(), remote)?;
        let peer = remote.map(|a| a.to_string());
        tracing::debug!(peer = peer.as_deref().unwrap_or("-"), "A proxy opened the audit stream.");
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        tokio::spawn(ingest_audit(self.hub.clone(), request.into_inner(), tx, peer, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stream_routes(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let remote = request.remote_addr();
        let peer = remote.map(|a| a.to_string());
        if let Err(status) = self.auth.check(request.metadata(), remote) {
            tracing::warn!(
                peer = peer.as_deref().unwrap_or("-"),
                reason = status.message(),
                "Refused a routing stream."
            );
            return Err(status);
        }
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::invalid_argument("no Hello within 10 s of opening the stream")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Status::invalid_argument("the stream closed before Hello")),
            Ok(Ok(Some(ProxyMessage { kind: Some(Kind::Hello(hello)) }))) => hello,
            Ok(Ok(Some(_))) => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let Hello { proxy_id, applied_version, build_version } = hello;
        if proxy_id.is_empty() {
            return Err(Status::invalid_argument("Hello.proxy_id must not be empty"));
        }
        tracing::info!(%proxy_id, peer = peer.as_deref().unwrap_or("-"), applied_version, %build_version,
            "A proxy connected to the routing stream.");
        let handle = self.hub.proxies().register(proxy_id.clone(), peer);
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let passive = PassiveWriter::spawn(self.hub.pool().clone(), proxy_id.clone());
        let session = Session { proxy_id, handle, tables: self.hub.subscribe(), inbound, tx, passive };
        tokio::spawn(session.run(self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn exchange_token(
        &self,
        request: Request<ExchangeRequest>,
    ) -> Result<Response<ExchangeResponse>, Status> {
        self.auth.check(request.metadata(), request.remote_addr())?;
        let server = self.hub.authorization_server().ok_or_else(|| {
            Status::failed_precondition("the authorization server is off (no --secrets-key)")
        })?;
        let ExchangeRequest { subject_token, audience, scopes } = request.into_inner();
        match server.exchange(&subject_token, &audience, &scopes).await {
            Ok((access_token, expires_at_unix)) => {
                Ok(Response::new(ExchangeResponse { access_token, expires_at_unix }))
            }
            Err(why) => {
                tracing::info!(%audience, reason = %why, "Refused a token exchange.");
                Err(Status::permission_denied(why))
            }
        }
    }

    /// Registers a server for the caller of the gateway's `register_server` tool by calling this replica's
    /// own REST API with the caller's credential: one code path for validation, permissions and audit.
    async fn register_server(
        &self,
        request: Request<mcpgw_proto::v1::RegisterServerRequest>,
    ) -> Result<Response<mcpgw_proto::v1::RegisterServerResponse>, Status> {
        self.auth.check(request.metadata(), request.remote_addr())?;
        let addr =
            self.hub.rest_addr().ok_or_else(|| Status::unavailable("the REST API is not serving yet"))?;
        let mcpgw_proto::v1::RegisterServerRequest { subject_token, server_json } = request.into_inner();
        if server_json.len() > MAX_REGISTER_BODY {
            return Err(Status::invalid_argument(format!(
                "a server registration is at most {MAX_REGISTER_BODY} bytes"
            )));
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut post = client
            .post(format!("http://{addr}/api/v1/servers"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(server_json);
        if !subject_token.is_empty() {
            post = post.bearer_auth(subject_token);
        }
        let answer = post.send().await.map_err(|e| Status::unavailable(format!("the REST API: {e}")))?;
        let status = u32::from(answer.status().as_u16());
        let body_json = answer.text().await.map_err(|e| Status::unavailable(format!("the REST API: {e}")))?;
        Ok(Response::new(mcpgw_proto::v1::RegisterServerResponse { status, body_json }))
    }

    async fn lease_budget(&self, request: Request<LeaseRequest>) -> Result<Response<LeaseResponse>, Status> {
        self.auth.check(request.metadata(), request.remote_addr())?;
        let LeaseRequest { limit_id, key, tokens } = request.into_inner();
        let table = self.hub.current();
        let limit = match table.get(ResourceKind::RateLimit, &limit_id).and_then(|r| r.kind.as_ref()) {
            Some(resource::Kind::RateLimit(limit)) if limit.global => limit.clone(),
            _ => return Err(Status::not_found(format!("no global rate limit has id {limit_id:?}"))),
        };
        let redis = self.hub.redis().ok_or_else(|| {
            Status::failed_precondition("global rate limits need the control plane's --redis-url")
        })?;
        if key.len() > 4096 || tokens == 0 || tokens > MAX_LEASE {
            return Err(Status::invalid_argument(format!(
                "a lease takes 1 to {MAX_LEASE} tokens of a key ≤ 4 KiB"
            )));
        }
        match crate::budgets::lease(redis, &limit, &key, tokens).await {
            Ok(grant) => Ok(Response::new(LeaseResponse {
                granted: grant.granted,
                retry_after_ms: u64::try_from(grant.retry_after.as_micros().div_ceil(1000))
                    .unwrap_or(u64::MAX),
            })),
            Err(why) => {
                tracing::warn!(limit_id, reason = %why, "Cannot lease a global rate limit's budget.");
                Err(Status::unavailable(why))
            }
        }
    }
}

/// Most tokens one lease may ask for.
const MAX_LEASE: u32 = mcpgw_proto::MAX_LEASE_TOKENS;
/// Largest server registration `RegisterServer` forwards (the REST API's own body limit still applies).
const MAX_REGISTER_BODY: usize = 1024 * 1024;

/// Batches of one audit stream written at once: the next one is read and written while the previous
/// commits, on two pooled connections, and acknowledgements still go out in the batches' order.
const AUDIT_CONCURRENCY: usize = 2;

/// One proxy's audit stream: each batch is written (one statement, so one transaction) and acknowledged
/// after its commit, in the order received. A batch that cannot be written ends the stream with
/// UNAVAILABLE; the proxy keeps it and every later unacknowledged one and sends them again (a batch written
/// meanwhile is then written once).
async fn ingest_audit(
    hub: Arc<RoutingHub>,
    mut inbound: Streaming<AuditBatch>,
    tx: mpsc::Sender<Result<AuditAck, Status>>,
    peer: Option<String>,
    shutdown: CancellationToken,
) {
    let peer = peer.as_deref();
    let mut writing = FuturesOrdered::new();
    let mut open = true;
    while open || !writing.is_empty() {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.try_send(Err(Status::unavailable("the control plane is shutting down")));
                return;
            }
            _ = tx.closed() => return,
            message = inbound.message(), if open && writing.len() < AUDIT_CONCURRENCY => match message {
                Ok(Some(batch)) => writing.push_back(write_audit(&hub, peer, batch)),
                Ok(None) => open = false,
                Err(status) => {
                    tracing::debug!(peer = peer.unwrap_or("-"), %status, "The audit stream failed.");
                    return;
                }
            },
            Some(reply) = writing.next(), if !writing.is_empty() => {
                let failed = reply.is_err();
                if failed {
                    METRICS.audit_batch_error();
                }
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        }
    }
}

/// Writes one batch and answers its acknowledgement; records without a `proxy_id` are attributed to the
/// peer's address.
async fn write_audit(hub: &RoutingHub, peer: Option<&str>, batch: AuditBatch) -> Result<AuditAck, Status> {
    let (seq, records) = (batch.seq, batch.records);
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::warn!(seq, records = records.len(), %error,
            "Cannot write an audit batch; the proxy keeps it and sends it again.");
        Status::unavailable("the audit batch cannot be written now; send it again")
    };
    let _writer = hub.audit().writer().await;
    let mut conn = hub.pool().get().await.map_err(|e| unavailable(&e))?;
    let inserted = hub.audit().write_mcp(&mut conn, peer, &records).await.map_err(|error| match error {
        WriteError::Invalid { .. } => {
            tracing::warn!(seq, %error, "Refused an audit batch.");
            Status::invalid_argument(error.to_string())
        }
        WriteError::Db(e) => unavailable(&e),
    })?;
    METRICS.audit_batch_ok(&inserted);
    Ok(AuditAck { seq, written: u32::try_from(inserted.written).unwrap_or(u32::MAX) })
}

/// One proxy's stream after Hello.
struct Session {
    proxy_id: String,
    handle: ProxyHandle,
    tables: watch::Receiver<Arc<ResourceSet>>,
    inbound: Streaming<ProxyMessage>,
    tx: mpsc::Sender<Result<RoutingUpdate, Status>>,
    passive: PassiveWriter,
}

impl Session {
    async fn run(mut self, shutdown: CancellationToken) {
        let reason = self.serve(shutdown).await;
        tracing::info!(proxy_id = %self.proxy_id, reason, "A proxy left the routing stream.");
        // Dropping `self.handle` removes the proxy from the registry.
    }

    async fn serve(&mut self, shutdown: CancellationToken) -> &'static str {
        let mut last_sent = self.tables.borrow_and_update().clone();
        if self.tx.send(Ok(last_sent.snapshot())).await.is_err() {
            return "closed by the proxy";
        }
        // After a Nack the proxy's table is unknown: the next update must be a snapshot.
        let mut snapshot_next = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.tx.try_send(Err(Status::unavailable("the control plane is shutting down")));
                    return "shutdown";
                }
                _ = self.tx.closed() => return "closed by the proxy",
                changed = self.tables.changed() => {
                    if changed.is_err() {
                        return "the hub stopped";
                    }
                    let current = self.tables.borrow_and_update().clone();
                    if current.version() <= last_sent.version() {
                        continue;
                    }
                    let update =
                        if snapshot_next { current.snapshot() } else { last_sent.delta_to(&current) };
                    if self.tx.send(Ok(update)).await.is_err() {
                        return "closed by the proxy";
                    }
                    last_sent = current;
                    snapshot_next = false;
                }
                message = self.inbound.message() => match message {
                    Ok(Some(ProxyMessage { kind: Some(kind) })) => {
                        if self.record(kind) {
                            snapshot_next = true;
                        }
                    }
                    Ok(Some(ProxyMessage { kind: None })) => {}
                    Ok(None) => return "closed by the proxy",
                    Err(status) => {
                        tracing::debug!(proxy_id = %self.proxy_id, %status, "The proxy stream failed.");
                        return "stream error";
                    }
                },
            }
        }
    }

    /// Records an Ack or Nack; `true` when the proxy refused an update.
    fn record(&self, kind: Kind) -> bool {
        match kind {
            Kind::Ack(ack) => {
                self.handle.ack(ack.version);
                false
            }
            Kind::Nack(nack) => {
                tracing::warn!(proxy_id = %self.proxy_id, version = nack.version, reason = %nack.reason,
                    "A proxy refused a routing update; it gets a full snapshot with the next change.");
                self.handle.nack(nack.version, nack.reason);
                true
            }
            Kind::Hello(_) => {
                tracing::debug!(proxy_id = %self.proxy_id, "Ignoring a repeated Hello.");
                false
            }
            Kind::Stats(stats) => {
                self.handle.stats(&stats);
                false
            }
            Kind::PassiveHealth(report) => {
                tracing::debug!(proxy_id = %self.proxy_id, instances = report.instances.len(), "Passive health report.");
                self.passive.report(report);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut map = MetadataMap::new();
        if let Some(value) = authorization {
            map.insert("authorization", value.parse().expect("ascii"));
        }
        map
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("socket address"))
    }

    #[test]
    fn a_token_is_required_from_everyone_when_configured() {
        let auth = ProxyAuth::new(Some(SecretToken::new("p-tok")));
        let local = addr("127.0.0.1:5000");
        assert!(auth.check(&metadata(Some("Bearer p-tok")), addr("10.0.0.7:5000")).is_ok());
        assert!(auth.check(&metadata(Some("bearer p-tok")), local).is_ok());
        for refused in [None, Some("Bearer nope"), Some("p-tok"), Some("Basic p-tok")] {
            let status = auth.check(&metadata(refused), local).expect_err("refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(!status.message().contains("nope"));
        }
    }

    #[test]
    fn without_a_token_only_loopback_peers() {
        let auth = ProxyAuth::new(None);
        for ok in ["127.0.0.1:1", "127.8.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(auth.check(&metadata(None), addr(ok)).is_ok(), "{ok}");
        }
        for refused in ["10.0.0.7:1", "192.168.1.2:1", "[2001:db8::1]:1", "[::ffff:10.0.0.1]:1"] {
            let status = auth.check(&metadata(Some("Bearer x")), addr(refused)).expect_err(refused);
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains("--proxy-token"));
        }
        assert!(auth.check(&metadata(None), None).is_err(), "an unknown peer is not loopback");
    }
}
