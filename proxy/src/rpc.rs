//! Unary calls to the control plane beside the routing stream (token exchange, rate-limit budgets): one
//! lazily connected channel to `--control-plane`, authenticated with the proxy token like the stream.

use std::time::Duration;

use mcpgw_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use tokio::sync::OnceCell;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The control plane, for unary calls.
pub struct ControlPlane {
    endpoint: Endpoint,
    /// The same endpoint without the per-call timeout, for long-lived streams.
    streaming: Endpoint,
    streaming_channel: OnceCell<Channel>,
    proxy_token: Option<MetadataValue<Ascii>>,
    channel: OnceCell<Channel>,
}

impl ControlPlane {
    /// The control plane at `url` (https with `ca` as trust root when given).
    pub fn new(
        url: &str,
        ca: Option<&[u8]>,
        proxy_token: Option<MetadataValue<Ascii>>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut streaming =
            Endpoint::from_shared(url.to_owned())?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
        if let Some(ca) = ca {
            streaming = streaming.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )?;
        }
        let endpoint = streaming.clone().timeout(CALL_TIMEOUT);
        Ok(Self {
            endpoint,
            streaming,
            proxy_token,
            channel: OnceCell::new(),
            streaming_channel: OnceCell::new(),
        })
    }

    /// A channel for long-lived streams (no per-call timeout), of its own.
    pub async fn streaming_channel(&self) -> Channel {
        self.streaming_channel.get_or_init(|| async { self.streaming.connect_lazy() }).await.clone()
    }

    /// A client on the shared channel (connected on first use, inside the runtime).
    pub async fn client(&self) -> RoutingDiscoveryClient<Channel> {
        let channel = self.channel.get_or_init(|| async { self.endpoint.connect_lazy() }).await.clone();
        RoutingDiscoveryClient::new(channel)
    }

    /// `message` as a request carrying the proxy token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.proxy_token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        request
    }
}
