//! Who is calling: the principal a request's credentials prove, checked against the credentials streamed in
//! the routing table (no network call per request). API keys are looked up by SHA-256 digest; JWTs are
//! verified against the signing keys of the trusted issuers (fetched by the control plane) and then cached
//! by digest until they expire, so a verified token costs a hash and a lookup. A request without
//! credentials is refused with a challenge pointing at the resource's protected resource metadata (RFC
//! 9728), unless the proxy runs with `--anonymous` (local development).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use mcpgw_proto::v1;
use mcpgw_proto::validate::{API_KEY_PREFIX, api_key_digest};
use pingora::http::RequestHeader;
use serde_json::json;

use crate::error::ProxyError;
use crate::headers::Noted;

/// The tenant of the anonymous principal and of credentials that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Who a request acts for. Authorization and audit read it; sessions are bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub tenant: Arc<str>,
    pub roles: Arc<[Arc<str>]>,
    /// Group names from the IdP (role mapping rules read them).
    pub groups: Arc<[Arc<str>]>,
    /// An API key's own permissions, which narrow what its roles allow (`None`: no narrowing).
    pub permissions: Option<Arc<crate::policy::RuleSet>>,
    /// [`Principal::binding`], made once when the credential is loaded, not per request.
    binding: Arc<str>,
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
    fn new(kind: PrincipalKind, tenant: Arc<str>, roles: Arc<[Arc<str>]>, groups: Arc<[Arc<str>]>) -> Self {
        let binding = match &kind {
            PrincipalKind::ApiKey { id } => Arc::from(format!("key:{id}")),
            PrincipalKind::Token { issuer, subject } => Arc::from(format!("jwt:{issuer}#{subject}")),
            PrincipalKind::Anonymous => Arc::from("anonymous"),
        };
        Self { kind, tenant, roles, groups, permissions: None, binding }
    }

    /// The anonymous principal (`--anonymous`), built once: letting a caller through costs a clone.
    fn anonymous() -> Self {
        static ANONYMOUS: std::sync::LazyLock<Principal> = std::sync::LazyLock::new(|| {
            Principal::new(PrincipalKind::Anonymous, Arc::from(DEFAULT_TENANT), Arc::from([]), Arc::from([]))
        });
        ANONYMOUS.clone()
    }

    /// A stable name of the principal that a session is bound to: another principal presenting the same
    /// session token is not its owner.
    pub fn binding(&self) -> &Arc<str> {
        &self.binding
    }
}

/// An API key as the routing table carries it.
#[derive(Debug)]
pub struct ApiKeyEntry {
    principal: Principal,
    expires_at: Option<SystemTime>,
}

/// The credentials of one routing table, by what a proxy can look up without a network call. A new table
/// starts with an empty cache of verified tokens, so a key rotated out of an issuer's JWKS stops verifying
/// as soon as the table without it is served.
#[derive(Default)]
pub struct Credentials {
    api_keys: HashMap<[u8; 32], Arc<ApiKeyEntry>>,
    issuers: HashMap<String, Issuer>,
    verified: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_keys", &self.api_keys.len())
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Most verified tokens cached per table; beyond it the cache starts over (a bound, not an eviction policy:
/// at worst a token is verified again).
const VERIFIED_CACHE: usize = 50_000;
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// A trusted issuer, ready to verify: its keys by `kid` and how its claims map onto a principal.
struct Issuer {
    issuer: Arc<str>,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    audiences: Vec<String>,
    subject_claim: String,
    tenant_claim: String,
    default_tenant: Arc<str>,
    roles_claim: String,
    groups_claim: String,
    /// The control plane's own authorization server.
    authorization_server: bool,
}

/// A token whose signature verified: who it names, for which audiences, until when.
struct Verified {
    principal: Principal,
    audiences: Vec<String>,
    expires_at: u64,
    issuer: Arc<str>,
}

/// Why a credential resource was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyResourceError {
    #[error("api key {id}: digest of {len} bytes, expected 32")]
    Digest { id: String, len: usize },
    #[error("trusted issuer {id}: {reason}")]
    Issuer { id: String, reason: String },
}

impl Credentials {
    /// Adds an API key resource.
    pub fn add_api_key(&mut self, key: &v1::ApiKey) -> Result<(), KeyResourceError> {
        let digest: [u8; 32] = key
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| KeyResourceError::Digest { id: key.id.clone(), len: key.digest.len() })?;
        let tenant = if key.tenant_id.is_empty() { DEFAULT_TENANT } else { key.tenant_id.as_str() };
        let mut principal = Principal::new(
            PrincipalKind::ApiKey { id: Arc::from(key.id.as_str()) },
            Arc::from(tenant),
            key.roles.iter().map(|r| Arc::from(r.as_str())).collect(),
            Arc::from([]),
        );
        principal.permissions =
            (!key.permissions.is_empty()).then(|| crate::policy::compile(&key.permissions));
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

    /// Adds a trusted issuer: its JWKS parsed into verifying keys, its algorithms checked (asymmetric only:
    /// an HMAC "key" would be the issuer's public key, which anyone can read).
    pub fn add_issuer(&mut self, t: &v1::TrustedIssuer) -> Result<(), KeyResourceError> {
        let bad = |reason: String| KeyResourceError::Issuer { id: t.id.clone(), reason };
        if t.issuer.is_empty() {
            return Err(bad("issuer is empty".into()));
        }
        let mut algorithms = Vec::new();
        for name in &t.algorithms {
            let alg: Algorithm = name.parse().map_err(|_| bad(format!("unknown algorithm {name:?}")))?;
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(bad(format!("{name} is symmetric; only public-key algorithms are allowed")));
            }
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            algorithms = vec![Algorithm::RS256, Algorithm::ES256];
        }
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&t.jwks_json).map_err(|e| bad(format!("JWKS is not valid: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Keys of a type this build cannot verify, or meant for encryption, are skipped, not fatal:
            // issuers publish such keys next to their signing keys. Many (Entra ID among them) give no
            // `alg`: the token's header and the allow-list decide then.
            let unsupported_alg = jwk.common.key_algorithm.is_some() && !jwk.is_supported();
            if unsupported_alg
                || matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption))
            {
                continue;
            }
            if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            // jsonwebtoken takes the first 32 bytes of an Ed25519 key without checking its length: a shorter
            // one would panic on the first token checked with it.
            let ed25519 = matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_));
            if ed25519 && !key.try_get_as_bytes().is_ok_and(|x| x.len() >= 32) {
                continue;
            }
            keys.insert(jwk.common.key_id.clone().unwrap_or_default(), key);
        }
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[t.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let or =
            |value: &str, default: &str| if value.is_empty() { default.to_owned() } else { value.to_owned() };
        self.issuers.insert(
            t.issuer.clone(),
            Issuer {
                issuer: Arc::from(t.issuer.as_str()),
                keys,
                validation,
                audiences: t.audiences.clone(),
                subject_claim: or(&t.subject_claim, "sub"),
                tenant_claim: t.tenant_claim.clone(),
                default_tenant: Arc::from(or(&t.default_tenant, DEFAULT_TENANT)),
                roles_claim: or(&t.roles_claim, "roles"),
                groups_claim: or(&t.groups_claim, "groups"),
                authorization_server: t.authorization_server,
            },
        );
        Ok(())
    }

    /// The control plane's own authorization server, when the table has one.
    pub fn own_authorization_server(&self) -> Option<&str> {
        self.issuers.values().find(|i| i.authorization_server).map(|i| &*i.issuer)
    }

    /// The authorization servers protected resource metadata names: the control plane's own when it has
    /// one (clients sign in there), else every issuer whose tokens are accepted.
    pub fn issuer_names(&self) -> Vec<String> {
        let own = self.issuers.values().any(|i| i.authorization_server);
        let mut names: Vec<String> = self
            .issuers
            .iter()
            .filter(|(_, i)| !own || i.authorization_server)
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Verifies a JWT presented for `resource` at `now` (seconds since the epoch): from the cache when its
    /// signature was verified before, otherwise against its issuer's keys.
    fn verify_jwt(&self, token: &str, resource: &str, now: u64) -> Result<Principal, &'static str> {
        let digest = api_key_digest(token);
        let cached = self.verified.lock().unwrap_or_else(|e| e.into_inner()).get(&digest).cloned();
        let verified = match cached {
            Some(v) if now <= v.expires_at.saturating_add(LEEWAY_SECS) => v,
            Some(_) => return Err("the token has expired"),
            None => {
                let v = Arc::new(self.verify_signature(token, resource)?);
                let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                cache.insert(digest, v.clone());
                v
            }
        };
        let issuer = self.issuers.get(&*verified.issuer).ok_or("the token's issuer is not trusted")?;
        let for_resource = verified
            .audiences
            .iter()
            .any(|a| a == resource || issuer.audiences.iter().any(|extra| extra == a));
        if !for_resource {
            return Err("the token was not issued for this resource (audience)");
        }
        Ok(verified.principal.clone())
    }

    fn verify_signature(&self, token: &str, resource: &str) -> Result<Verified, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is not a valid JWT")?;
        let peek: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| "the token is not a valid JWT")?;
        let issuer = peek
            .get("iss")
            .and_then(Value::as_str)
            .and_then(|iss| self.issuers.get(iss))
            .ok_or("the token's issuer is not trusted")?;
        let key = match header.kid.as_deref() {
            Some(kid) => issuer.keys.get(kid),
            None if issuer.keys.len() == 1 => issuer.keys.values().next(),
            None => None,
        }
        .ok_or("the token's signing key is not among the issuer's keys")?;
        if !issuer.validation.algorithms.contains(&header.alg) {
            return Err("the token's algorithm is not allowed");
        }
        let mut validation = issuer.validation.clone();
        // jsonwebtoken wants every allowed algorithm to fit the key's family; the allow-list of an issuer
        // may mix families (RS256 and ES256), so validate with the one the header names and the list allows.
        validation.algorithms = vec![header.alg];
        let mut audiences = vec![resource.to_owned()];
        audiences.extend(issuer.audiences.iter().cloned());
        validation.set_audience(&audiences);
        let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidAudience => "the token was not issued for this resource (audience)",
                ErrorKind::InvalidIssuer => "the token's issuer is not trusted",
                ErrorKind::InvalidAlgorithm => "the token's algorithm is not allowed",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud)",
                _ => "the token's signature does not verify",
            }
        })?;
        let claims = data.claims;
        let names = |claim: &str| -> Arc<[Arc<str>]> {
            match claims.get(claim) {
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(Arc::from).collect(),
                Some(Value::String(one)) => one.split_whitespace().map(Arc::from).collect(),
                _ => Arc::from([]),
            }
        };
        let subject = claims
            .get(&issuer.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the token names no subject")?;
        let tenant = Some(issuer.tenant_claim.as_str())
            .filter(|c| !c.is_empty())
            .and_then(|c| claims.get(c))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map_or_else(|| issuer.default_tenant.clone(), Arc::from);
        let audiences = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.clone()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Verified {
            principal: Principal::new(
                PrincipalKind::Token { issuer: issuer.issuer.clone(), subject: Arc::from(subject) },
                tenant,
                names(&issuer.roles_claim),
                names(&issuer.groups_claim),
            ),
            audiences,
            // A NumericDate may have a fraction: rounded, as jsonwebtoken did when it checked it.
            expires_at: claims
                .get("exp")
                .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f.round() as u64)))
                .unwrap_or(0),
            issuer: issuer.issuer.clone(),
        })
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
        noted: Noted,
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
        let Some(value) = noted.get(&req.headers, &http::header::AUTHORIZATION) else {
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
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        credentials
            .verify_jwt(token, &self.resource(server), now_secs)
            .map_err(|detail| refuse(Refusal::InvalidToken(detail)))
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
            ..Default::default()
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
        s.authenticate(&req(auth, path), Noted::ANY, c, Some("a"), SystemTime::now()).map_err(|e| match e {
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
        assert_eq!(&**p.binding(), "key:k1");
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

    /// An Ed25519 signing key and its public JWK.
    struct Signer {
        pkcs8: Vec<u8>,
        kid: &'static str,
        x: String,
    }

    impl Signer {
        fn new(kid: &'static str) -> Self {
            use base64::Engine;
            use ring::signature::KeyPair;
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            Self { pkcs8, kid, x }
        }

        /// Without `alg`, as many issuers publish their keys.
        fn jwk(&self) -> Value {
            json!({"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig"})
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
            header.kid = Some(self.kid.into());
            jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8))
                .unwrap()
        }
    }

    const ISSUER: &str = "https://idp.example";

    fn issuer_credentials(keys: &[&Signer]) -> Credentials {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        let mut c = Credentials::default();
        c.add_issuer(&v1::TrustedIssuer {
            id: "idp".into(),
            issuer: ISSUER.into(),
            jwks_json: jwks.to_string(),
            // Families mixed on purpose, as in the default RS256 + ES256.
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            tenant_claim: "tid".into(),
            ..Default::default()
        })
        .unwrap();
        c
    }

    fn unix_now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn claims(aud: &str) -> Value {
        let now = unix_now();
        json!({"iss": ISSUER, "sub": "alice", "aud": aud, "exp": now + 300, "iat": now, "tid": "acme",
               "roles": ["user"], "groups": ["g-ops", "g-dev"]})
    }

    const RESOURCE_A: &str = "https://gw.example/base/mcp/a";

    fn verify(c: &Credentials, token: &str) -> Result<Principal, String> {
        let req = req(Some(&format!("Bearer {token}")), "/mcp/a");
        settings(false)
            .authenticate(&req, Noted::ANY, c, Some("a"), SystemTime::now())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn metadata_names_the_own_authorization_server_when_there_is_one() {
        let signer = Signer::new("k1");
        let mut c = issuer_credentials(&[&signer]);
        assert_eq!(c.issuer_names(), [ISSUER]);
        let jwks = json!({"keys": [signer.jwk()]}).to_string();
        c.add_issuer(&v1::TrustedIssuer {
            id: "authorization-server".into(),
            issuer: "https://gw.example/".into(),
            jwks_json: jwks,
            algorithms: vec!["EdDSA".into()],
            authorization_server: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.issuer_names(), ["https://gw.example/"], "clients sign in there, not at the others");
    }

    #[test]
    fn jwts_from_a_trusted_issuer() {
        let signer = Signer::new("k1");
        let c = issuer_credentials(&[&signer]);
        let token = signer.sign(&claims(RESOURCE_A));
        let p = verify(&c, &token).unwrap();
        assert_eq!(&**p.binding(), "jwt:https://idp.example#alice");
        assert_eq!((&*p.tenant, p.roles.len(), p.groups.len()), ("acme", 1, 2));
        assert_eq!(verify(&c, &token).unwrap(), p, "the cached verdict is the same");
        assert_eq!(c.issuer_names(), vec![ISSUER.to_owned()]);
    }

    #[test]
    fn token_attacks_are_refused() {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let signer = Signer::new("k1");
        let c = issuer_credentials(&[&signer]);
        let now = unix_now();
        let refused = |token: String, why: &str| {
            let e = verify(&c, &token).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        };
        // alg: none
        refused(format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims(RESOURCE_A))), "not a valid JWT");
        // HS256 with the issuer's public key as the secret
        let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
        hs.kid = Some("k1".into());
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&signer.x).unwrap();
        let forged =
            jsonwebtoken::encode(&hs, &claims(RESOURCE_A), &jsonwebtoken::EncodingKey::from_secret(&public))
                .unwrap();
        refused(forged, "algorithm is not allowed");
        // A key the issuer does not publish
        refused(Signer::new("k-unknown").sign(&claims(RESOURCE_A)), "signing key");
        // The issuer's key id on a token signed with another key
        refused(Signer::new("k1").sign(&claims(RESOURCE_A)), "signature does not verify");
        // Another issuer, another resource, expired, not yet valid, no audience
        let mut other_iss = claims(RESOURCE_A);
        other_iss["iss"] = json!("https://evil.example");
        refused(signer.sign(&other_iss), "issuer is not trusted");
        refused(signer.sign(&claims("https://gw.example/base/mcp/b")), "audience");
        let mut expired = claims(RESOURCE_A);
        expired["exp"] = json!(now - 120);
        refused(signer.sign(&expired), "expired");
        let mut early = claims(RESOURCE_A);
        early["nbf"] = json!(now + 600);
        refused(signer.sign(&early), "not valid yet");
        let mut no_aud = claims(RESOURCE_A);
        no_aud.as_object_mut().unwrap().remove("aud");
        refused(signer.sign(&no_aud), "required claim");
    }

    #[test]
    fn a_token_verified_for_one_server_is_refused_by_another() {
        let signer = Signer::new("k1");
        let c = issuer_credentials(&[&signer]);
        let token = signer.sign(&claims(RESOURCE_A));
        assert!(verify(&c, &token).is_ok());
        let req = req(Some(&format!("Bearer {token}")), "/mcp/b");
        let e = settings(false).authenticate(&req, Noted::ANY, &c, Some("b"), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("audience"), "{e}");
    }

    #[test]
    fn a_key_rotated_out_of_the_jwks_stops_verifying() {
        let (old, new) = (Signer::new("old"), Signer::new("new"));
        let before = issuer_credentials(&[&old, &new]);
        let token = old.sign(&claims(RESOURCE_A));
        assert!(verify(&before, &token).is_ok());
        let after = issuer_credentials(&[&new]);
        assert!(verify(&after, &token).unwrap_err().contains("signing key"));
        assert!(verify(&after, &new.sign(&claims(RESOURCE_A))).is_ok());
    }

    /// An Ed25519 key is 32 bytes; jsonwebtoken slices a shorter one and panics on the first token checked
    /// with it. Such a key is skipped like any other unusable one (found by fuzzing,
    /// `fuzz/regressions/jwt_parse`).
    #[test]
    fn a_truncated_ed25519_key_verifies_nothing_and_panics_nowhere() {
        let signer = Signer::new("k1");
        let jwks =
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "Z9ngHMzV76e8Tus9uPHvRVEU", "kid": "k1"}]});
        let mut c = Credentials::default();
        c.add_issuer(&v1::TrustedIssuer {
            id: "idp".into(),
            issuer: ISSUER.into(),
            jwks_json: jwks.to_string(),
            algorithms: vec!["EdDSA".into()],
            ..Default::default()
        })
        .unwrap();
        let e = verify(&c, &signer.sign(&claims(RESOURCE_A))).unwrap_err();
        assert!(e.contains("signing key"), "{e}");
    }

    /// `exp` is a NumericDate, which may have a fraction; jsonwebtoken accepts it, and the cache of verified
    /// tokens must keep the same expiry rather than take the token for expired the next time it is
    /// presented (found by fuzzing, `fuzz/regressions/jwt_parse`).
    #[test]
    fn a_fractional_expiry_is_honoured_from_the_cache_too() {
        let signer = Signer::new("k1");
        let c = issuer_credentials(&[&signer]);
        let mut fractional = claims(RESOURCE_A);
        fractional["exp"] = json!(unix_now() as f64 + 300.52);
        let token = signer.sign(&fractional);
        let first = verify(&c, &token).unwrap();
        assert_eq!(verify(&c, &token), Ok(first), "the cached verdict is the same");
    }

    #[test]
    fn symmetric_algorithms_cannot_be_trusted() {
        let mut c = Credentials::default();
        let hs = v1::TrustedIssuer {
            id: "x".into(),
            issuer: ISSUER.into(),
            jwks_json: r#"{"keys":[]}"#.into(),
            algorithms: vec!["HS256".into()],
            ..Default::default()
        };
        assert!(c.add_issuer(&hs).is_err());
    }

    #[test]
    fn a_digest_of_the_wrong_length_is_refused() {
        let mut c = Credentials::default();
        let bad = v1::ApiKey { id: "k".into(), digest: vec![1, 2, 3], ..Default::default() };
        assert!(matches!(c.add_api_key(&bad), Err(KeyResourceError::Digest { len: 3, .. })));
    }
}
