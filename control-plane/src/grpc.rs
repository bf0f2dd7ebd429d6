//! The gRPC routing stream: one session per proxy — Hello, a snapshot, then a delta per published change.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use mcpgw_proto::ResourceSet;
use mcpgw_proto::v1::routing_discovery_server::{RoutingDiscovery, RoutingDiscoveryServer};
use mcpgw_proto::v1::{Hello, ProxyMessage, RoutingUpdate, proxy_message::Kind};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::RoutingHub;
use crate::passive::PassiveWriter;
use crate::proxies::ProxyHandle;

/// How long a new stream may take to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Updates buffered per stream before the session waits for the proxy to read.
const OUTBOUND_BUFFER: usize = 16;

/// Implements `RoutingDiscovery` on top of a `RoutingHub`.
#[derive(Clone)]
pub struct RoutingService {
    hub: Arc<RoutingHub>,
    shutdown: CancellationToken,
}

impl RoutingService {
    /// Sessions end when `shutdown` is cancelled, so the server can stop without waiting for proxies.
    pub fn new(hub: Arc<RoutingHub>, shutdown: CancellationToken) -> Self {
        Self { hub, shutdown }
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

    async fn stream_routes(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string());
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
            Kind::PassiveHealth(report) => {
                tracing::debug!(proxy_id = %self.proxy_id, instances = report.instances.len(), "Passive health report.");
                self.passive.report(report);
                false
            }
        }
    }
}
