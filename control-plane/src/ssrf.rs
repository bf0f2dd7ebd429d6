//! The SSRF guard (`mcpgw_proto::ssrf`, shared with the proxy) and its resolver for the control plane's
//! HTTP client: every DNS answer is filtered, so discovery, health checks and metadata fetches never
//! connect to a refused address whatever a name resolves to later.

use std::net::SocketAddr;
use std::sync::Arc;

pub use mcpgw_proto::ssrf::{Cidr, RESOLVE_TIMEOUT, Refusal, ResolveError, SsrfError, SsrfPolicy};

/// A DNS resolver for the MCP client that drops refused addresses (a name resolving only to refused
/// addresses fails to connect, with the refusal as the error's cause).
pub fn resolver(policy: &Arc<SsrfPolicy>) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { policy: policy.clone() })
}

/// reqwest resolver applying an `SsrfPolicy` to every DNS answer.
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            type BoxError = Box<dyn std::error::Error + Send + Sync>;
            let addrs: Vec<SocketAddr> =
                policy.resolve(&url::Host::Domain(&host), 0).await.map_err(|e| match e {
                    ResolveError::Refused(refusal) => Box::new(refusal) as BoxError,
                    ResolveError::Lookup(detail) => detail.into(),
                })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
