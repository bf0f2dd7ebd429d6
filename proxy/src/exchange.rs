//! Upstream tokens on behalf of the caller, for servers whose credential is `token_exchange`: the caller's
//! credential is exchanged by the control plane's authorization server (the `ExchangeToken` call on the
//! authenticated gRPC channel) for a token whose audience is the upstream. Tokens are cached per caller
//! credential and audience until shortly before they expire, so a caller's session costs one exchange, not
//! one per request. Nothing here runs for servers with other credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use mcpgw_proto::v1::ExchangeRequest;
use mcpgw_proto::v1::routing_discovery_client::RoutingDiscoveryClient;
use mcpgw_proto::validate::api_key_digest;
use tokio::sync::OnceCell;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Most cached tokens; the cache is emptied when full (tokens are obtained again).
const MAX_CACHED: usize = 10_000;
/// A cached token is not used in its last seconds.
const EXPIRY_MARGIN_SECS: i64 = 30;
/// How long one exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cached tokens by (digest of the caller's credential, audience): the header value and its expiry.
type TokenCache = HashMap<([u8; 32], String), (HeaderValue, i64)>;

/// Exchanges callers' credentials through the control plane.
pub struct Exchanger {
    endpoint: Endpoint,
    proxy_token: Option<MetadataValue<Ascii>>,
    channel: OnceCell<Channel>,
    cache: Mutex<TokenCache>,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Exchanger {
    /// An exchanger for the control plane at `control_plane` (https with `ca` as trust root when given).
    pub fn new(
        control_plane: &str,
        ca: Option<&[u8]>,
        proxy_token: Option<MetadataValue<Ascii>>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(control_plane.to_owned())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(EXCHANGE_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(ca) = ca {
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )?;
        }
        Ok(Self { endpoint, proxy_token, channel: OnceCell::new(), cache: Mutex::new(HashMap::new()) })
    }

    /// The `Authorization` value for `audience` on behalf of the caller who presented `subject_token`.
    pub async fn header(
        &self,
        subject_token: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<HeaderValue, String> {
        let key = (api_key_digest(subject_token), audience.to_owned());
        let now = now_unix();
        if let Some((value, exp)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *exp - EXPIRY_MARGIN_SECS > now
        {
            return Ok(value.clone());
        }
        // Connected once, on first use (inside the runtime), then shared.
        let channel = self.channel.get_or_init(|| async { self.endpoint.connect_lazy() }).await.clone();
        let mut request = tonic::Request::new(ExchangeRequest {
            subject_token: subject_token.to_owned(),
            audience: audience.to_owned(),
            scopes: scopes.to_vec(),
        });
        if let Some(token) = &self.proxy_token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        let answer = RoutingDiscoveryClient::new(channel)
            .exchange_token(request)
            .await
            .map_err(|status| format!("the control plane refused the exchange: {}", status.message()))?
            .into_inner();
        let mut value = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| "the exchanged token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (value.clone(), answer.expires_at_unix));
        Ok(value)
    }
}
