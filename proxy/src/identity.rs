//! Who is calling: the principal a request's credentials prove, checked against the credentials streamed in
//! the routing table (no network call per request). API keys are looked up by SHA-256 digest; a request
//! without credentials is refused with a challenge pointing at the resource's protected resource metadata
//! (RFC 9728), unless the proxy runs with `--anonymous` (local development).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpgw_proto::v1;
use mcpgw_proto::validate::{API_KEY_PREFIX, api_key_digest};
use pingora::http::RequestHeader;
use serde_json::json;

use crate::error::ProxyError;

/// The tenant of the anonymous principal and of credentials that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Who a request acts for. Authorization and audit read it; sessions are bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub tenant: Arc<str>,
    pub roles: Arc<[Arc<str>]>,
}

/// How the principal proved itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key (its id, never its secret).
    ApiKey { id: Arc<str> },
    /// A JWT: its issuer and subject.
    Token { issuer: Arc<str>, subject: Arc<str> },
    /// No credentials, accepted because the proxy runs with `--anonymous`.
    Anonymous,
}

impl Principal {
    fn anonymous() -> Self {
        Self { kind: PrincipalKind::Anonymous, tenant: Arc::from(DEFAULT_TENANT), roles: Arc::from([]) }
    }

    /// A stable name of the principal that a session is bound to: another principal presenting the same
    /// session token is not its owner.
    pub fn binding(&self) -> String {
        match &self.kind {
            PrincipalKind::ApiKey { id } => format!("key:{id}"),
            PrincipalKind::Token { issuer, subject } => format!("jwt:{issuer}#{subject}"),
            PrincipalKind::Anonymous => "anonymous".to_owned(),
        }
    }
}

/// An API key as the routing table carries it.
#[derive(Debug)]
pub struct ApiKeyEntry {
    principal: Principal,
    expires_at: Option<SystemTime>,
}

/// The credentials of one routing table, by what a proxy can look up without a network call.
#[derive(Debug, Default)]
pub struct Credentials {
    api_keys: HashMap<[u8; 32], Arc<ApiKeyEntry>>,
}

/// Why an API key resource was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("api key {id}: digest of {len} bytes, expected 32")]
pub struct KeyResourceError {
    pub id: String,
    pub len: usize,
}

impl Credentials {
    /// Adds an API key resource.
    pub fn add_api_key(&mut self, key: &v1::ApiKey) -> Result<(), KeyResourceError> {
        let digest: [u8; 32] = key
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| KeyResourceError { id: key.id.clone(), len: key.digest.len() })?;
        let tenant = if key.tenant_id.is_empty() { DEFAULT_TENANT } else { key.tenant_id.as_str() };
        let principal = Principal {
            kind: PrincipalKind::ApiKey { id: Arc::from(key.id.as_str()) },
            tenant: Arc::from(tenant),
            roles: key.roles.iter().map(|r| Arc::from(r.as_str())).collect(),
        };
        let expires_at = u64::try_from(key.expires_at_unix)
            .ok()
            .filter(|s| *s > 0)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s));
        self.api_keys.insert(digest, Arc::new(ApiKeyEntry { principal, expires_at }));
        Ok(())
    }

    /// Number of API keys known.
    pub fn api_key_count(&self) -> usize {
        self.api_keys.len()
    }
}

/// How the proxy treats requests without credentials.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Let callers without credentials through as the anonymous principal (`--anonymous`).
    pub anonymous: bool,
    /// `--public-url`: the base of every resource URL and metadata URL.
    pub public_url: url::Url,
}

/// Why a request was not authenticated. Every case is 401 with a challenge; the `error` parameter follows
/// RFC 6750 §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all: a challenge without `error`, so the client starts its authorization flow.
    Missing,
    /// A token in the query string or a non-Bearer scheme.
    InvalidRequest(&'static str),
    /// Credentials that prove nothing: unknown, expired, or not a kind this proxy verifies.
    InvalidToken(&'static str),
}

impl AuthSettings {
    /// `<public-url>/mcp/{server}` (or `<public-url>/mcp` for `None`): the resource a token must be for.
    pub fn resource(&self, server: Option<&str>) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        match server {
            Some(name) => format!("{base}/mcp/{name}"),
            None => format!("{base}/mcp"),
        }
    }

    /// The RFC 9728 metadata URL of a resource: the well-known suffix inserted between host and path.
    pub fn metadata_url(&self, server: Option<&str>) -> String {
        let origin = self.public_url.origin().ascii_serialization();
        let prefix = self.public_url.path().trim_end_matches('/');
        let tail = server.map_or_else(|| "/mcp".to_owned(), |name| format!("/mcp/{name}"));
        format!("{origin}/.well-known/oauth-protected-resource{prefix}{tail}")
    }

    /// The `WWW-Authenticate` value of a refusal for `server`'s resource.
    pub fn challenge(&self, server: Option<&str>, refusal: Refusal) -> String {
        let metadata = self.metadata_url(server);
        match refusal {
            Refusal::Missing => format!("Bearer resource_metadata=\"{metadata}\""),
            Refusal::InvalidRequest(detail) => format!(
                "Bearer resource_metadata=\"{metadata}\", error=\"invalid_request\", error_description=\"{detail}\""
            ),
            Refusal::InvalidToken(detail) => format!(
                "Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\", error_description=\"{detail}\""
            ),
        }
    }

    /// RFC 9728 protected resource metadata of `server` (`None`: the aggregate `/mcp`).
    pub fn metadata(&self, server: Option<&str>, authorization_servers: &[String]) -> serde_json::Value {
        json!({
            "resource": self.resource(server),
            "authorization_servers": authorization_servers,
            "bearer_methods_supported": ["header"],
            "resource_name": server.map_or_else(|| "mcpgw".to_owned(), |name| format!("mcpgw: {name}")),
        })
    }

    /// Authenticates a request for `server` against `credentials` at `now`.
    pub fn authenticate(
        &self,
        req: &RequestHeader,
        credentials: &Credentials,
        server: Option<&str>,
        now: SystemTime,
    ) -> Result<Principal, ProxyError> {
        let refuse = |refusal: Refusal| ProxyError::Unauthenticated {
            challenge: self.challenge(server, refusal),
            detail: match refusal {
                Refusal::Missing => {
                    "this endpoint needs credentials: `Authorization: Bearer <token or API key>`"
                }
                Refusal::InvalidRequest(d) | Refusal::InvalidToken(d) => d,
            },
        };
        if token_in_query(req) {
            return Err(refuse(Refusal::InvalidRequest(
                "tokens are accepted only in the Authorization header",
            )));
        }
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            return if self.anonymous { Ok(Principal::anonymous()) } else { Err(refuse(Refusal::Missing)) };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(refuse(Refusal::InvalidRequest(
                "the Authorization header must use the Bearer scheme",
            )));
        };
        if token.starts_with(API_KEY_PREFIX) {
            let entry = credentials
                .api_keys
                .get(&api_key_digest(token))
                .ok_or_else(|| refuse(Refusal::InvalidToken("the API key is not valid")))?;
            if entry.expires_at.is_some_and(|at| now >= at) {
                return Err(refuse(Refusal::InvalidToken("the API key has expired")));
            }
            return Ok(entry.principal.clone());
        }
        Err(refuse(Refusal::InvalidToken("the token is not valid")))
    }
}

/// Whether the query string carries a token (`access_token`, RFC 6750 §2.3), which MCP forbids: URLs end
/// up in logs and browser histories.
fn token_in_query(req: &RequestHeader) -> bool {
    req.uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next().is_some_and(|name| name.eq_ignore_ascii_case("access_token")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(anonymous: bool) -> AuthSettings {
        AuthSettings { anonymous, public_url: url::Url::parse("https://gw.example/base").unwrap() }
    }

    fn req(auth: Option<&str>, path: &str) -> RequestHeader {
        let mut r = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        if let Some(a) = auth {
            r.insert_header("authorization", a).unwrap();
        }
        r
    }

    fn credentials(expires_at_unix: i64) -> Credentials {
        let mut c = Credentials::default();
        c.add_api_key(&v1::ApiKey {
            id: "k1".into(),
            digest: api_key_digest("mcpgw_good").to_vec(),
            name: "ci".into(),
            tenant_id: "acme".into(),
            roles: vec!["user".into()],
            expires_at_unix,
        })
        .unwrap();
        c
    }

    fn outcome(
        s: &AuthSettings,
        c: &Credentials,
        auth: Option<&str>,
        path: &str,
    ) -> Result<Principal, String> {
        s.authenticate(&req(auth, path), c, Some("a"), SystemTime::now()).map_err(|e| match e {
            ProxyError::Unauthenticated { challenge, .. } => challenge,
            other => panic!("unexpected {other}"),
        })
    }

    #[test]
    fn urls_follow_rfc_9728() {
        let s = settings(false);
        assert_eq!(s.resource(Some("a")), "https://gw.example/base/mcp/a");
        assert_eq!(s.resource(None), "https://gw.example/base/mcp");
        assert_eq!(
            s.metadata_url(Some("a")),
            "https://gw.example/.well-known/oauth-protected-resource/base/mcp/a"
        );
        assert_eq!(s.metadata(None, &[])["resource"], "https://gw.example/base/mcp");
    }

    #[test]
    fn api_keys() {
        let (s, c) = (settings(false), credentials(0));
        let p = outcome(&s, &c, Some("Bearer mcpgw_good"), "/mcp/a").unwrap();
        assert_eq!(p.binding(), "key:k1");
        assert_eq!(&*p.tenant, "acme");
        assert!(outcome(&s, &c, Some("bearer  mcpgw_good "), "/mcp/a").is_ok());
        let missing = outcome(&s, &c, None, "/mcp/a").unwrap_err();
        assert_eq!(
            missing,
            "Bearer resource_metadata=\"https://gw.example/.well-known/oauth-protected-resource/base/mcp/a\""
        );
        for bad in ["Bearer mcpgw_bad", "Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer "] {
            let challenge = outcome(&s, &c, Some(bad), "/mcp/a").unwrap_err();
            assert!(
                challenge.contains("error=\"invalid_token\"") || challenge.contains("invalid_request"),
                "{bad}"
            );
        }
        assert!(
            outcome(&s, &c, Some("Basic bWNwZ3dfZ29vZA=="), "/mcp/a")
                .unwrap_err()
                .contains("invalid_request")
        );
        let query = outcome(&s, &c, Some("Bearer mcpgw_good"), "/mcp/a?access_token=mcpgw_good").unwrap_err();
        assert!(query.contains("invalid_request"), "{query}");
        let expired = outcome(&s, &credentials(1), Some("Bearer mcpgw_good"), "/mcp/a").unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        assert!(outcome(&s, &credentials(i64::MAX), Some("Bearer mcpgw_good"), "/mcp/a").is_ok());
    }

    #[test]
    fn anonymous_only_when_configured() {
        let c = Credentials::default();
        let p = outcome(&settings(true), &c, None, "/mcp/a").unwrap();
        assert_eq!(p.kind, PrincipalKind::Anonymous);
        assert!(
            outcome(&settings(true), &c, Some("Bearer mcpgw_nope"), "/mcp/a").is_err(),
            "bad credentials are never anonymous"
        );
    }

    #[test]
    fn a_digest_of_the_wrong_length_is_refused() {
        let mut c = Credentials::default();
        let bad = v1::ApiKey { id: "k".into(), digest: vec![1, 2, 3], ..Default::default() };
        assert_eq!(c.add_api_key(&bad).unwrap_err().len, 3);
    }
}
