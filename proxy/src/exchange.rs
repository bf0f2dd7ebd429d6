//! Upstream tokens on behalf of the caller, for servers whose credential is `token_exchange`: the caller's
//! credential is exchanged by the control plane's authorization server (the `ExchangeToken` call on the
//! authenticated gRPC channel) for a token whose audience is the upstream. Tokens are cached per caller
//! credential and audience until shortly before they expire, so a caller's session costs one exchange, not
//! one per request. Nothing here runs for servers with other credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use mcpgw_proto::v1::ExchangeRequest;
use mcpgw_proto::validate::api_key_digest;

use crate::rpc::ControlPlane;

/// Most cached tokens; the cache is emptied when full (tokens are obtained again).
const MAX_CACHED: usize = 10_000;
/// A cached token is not used in its last seconds.
const EXPIRY_MARGIN_SECS: i64 = 30;

/// Cached tokens by (digest of the caller's credential, audience): the header value and its expiry.
type TokenCache = HashMap<([u8; 32], String), (HeaderValue, i64)>;

/// Exchanges callers' credentials through the control plane.
pub struct Exchanger {
    control_plane: Arc<ControlPlane>,
    cache: Mutex<TokenCache>,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Exchanger {
    pub fn new(control_plane: Arc<ControlPlane>) -> Self {
        Self { control_plane, cache: Mutex::new(HashMap::new()) }
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
        let request = self.control_plane.request(ExchangeRequest {
            subject_token: subject_token.to_owned(),
            audience: audience.to_owned(),
            scopes: scopes.to_vec(),
        });
        let answer = self
            .control_plane
            .client()
            .await
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
