//! The company IdP users sign in at: any OpenID provider, found by discovery. The control plane is one
//! pre-registered confidential client there (authorization code with PKCE and a nonce); the MCP client's
//! `resource` is never sent to it (Entra ID refuses it). The ID token is verified against the IdP's JWKS
//! (fetched through the SSRF guard, refetched once when a `kid` is unknown), its `iss` compared with the
//! metadata's — an Entra ID multi-tenant issuer template `{tenantid}` is filled with the token's `tid`.
//! A registered IdP may map its users onto a tenant (`TenantRule`): a claim's value, or one tenant for all.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use url::Url;

use crate::api::servers::valid_tenant;
use crate::config::OidcProvider;
use crate::db::store::oauth::{IdentityProviderRow, UserLogin};
use crate::jwks::{FetchError, JwksFetcher, metadata_urls, secure_or_loopback};
use crate::model::DEFAULT_TENANT;

/// How long discovered metadata and keys are used before they are fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Entra ID's placeholder in the issuer of multi-tenant metadata.
const TENANT_TEMPLATE: &str = "{tenantid}";

/// What discovery found.
#[derive(Clone)]
struct Discovered {
    issuer: String,
    authorization_endpoint: Url,
    token_endpoint: Url,
    jwks: JwkSet,
    at: Instant,
}

/// One company IdP.
pub struct IdentityProvider {
    pub name: String,
    config: OidcProvider,
    fetcher: JwksFetcher,
    discovered: RwLock<Option<Discovered>>,
}

/// Why sign-in at the IdP failed (shown to the user; never contains a token).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached: {0}")]
    Fetch(#[from] FetchError),
    #[error("the identity provider's metadata is not usable: {0}")]
    Metadata(String),
    #[error("the identity provider refused the code: {0}")]
    Token(String),
    #[error("the identity provider's ID token is not valid: {0}")]
    IdToken(String),
}

fn url_field(doc: &Value, field: &str) -> Result<Url, LoginError> {
    let raw =
        doc.get(field).and_then(Value::as_str).ok_or_else(|| LoginError::Metadata(format!("no {field}")))?;
    match Url::parse(raw) {
        Ok(url) if secure_or_loopback(&url) => Ok(url),
        _ => Err(LoginError::Metadata(format!("{field} {raw:?} is not https (or http on loopback)"))),
    }
}

/// Whether the metadata's issuer names the configured one: equal exactly, or an Entra ID template
/// (`https://login.microsoftonline.com/{tenantid}/v2.0`) configured as `.../common/v2.0`,
/// `.../organizations/v2.0` or a tenant id.
fn metadata_issuer_matches(configured: &str, published: &str) -> bool {
    if configured == published {
        return true;
    }
    let Some((before, after)) = published.split_once(TENANT_TEMPLATE) else { return false };
    configured
        .strip_prefix(before)
        .and_then(|rest| rest.strip_suffix(after))
        .is_some_and(|tenant| !tenant.is_empty() && !tenant.contains('/'))
}

/// Whether a token's `iss` is the metadata's issuer (the template filled with the token's `tid`).
fn token_issuer_matches(published: &str, iss: &str, tid: Option<&str>) -> bool {
    if !published.contains(TENANT_TEMPLATE) {
        return iss == published;
    }
    tid.is_some_and(|tid| !tid.is_empty() && iss == published.replace(TENANT_TEMPLATE, tid))
}

fn strings(claims: &Value, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(one)) => one.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The tenant an IdP's users belong to. Without a rule (the `--oidc-*` IdP, or a registered one without
/// `tenant_claim` and `tenant_id`) everyone is in `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantRule {
    /// The ID token claim whose value is the user's tenant (Entra ID: `tid`; or an `org` claim).
    pub claim: Option<String>,
    /// Everyone's tenant; with `claim`, the tenant of users whose token lacks that claim.
    pub tenant_id: Option<String>,
}

impl From<&IdentityProviderRow> for TenantRule {
    fn from(row: &IdentityProviderRow) -> Self {
        Self { claim: row.tenant_claim.clone(), tenant_id: row.tenant_id.clone() }
    }
}

impl TenantRule {
    /// The tenant of the user these verified claims describe, or why they cannot sign in: the claim's
    /// value must be a tenant id (1-100 characters of `[A-Za-z0-9._-]`); a missing claim falls back on
    /// `tenant_id` when one is set, else refuses.
    pub fn tenant(&self, claims: &Value) -> Result<String, String> {
        let fixed = || self.tenant_id.clone().unwrap_or_else(|| DEFAULT_TENANT.to_owned());
        let Some(name) = &self.claim else { return Ok(fixed()) };
        match claims.get(name) {
            Some(Value::String(value)) if valid_tenant(value) => Ok(value.clone()),
            None | Some(Value::Null) if self.tenant_id.is_some() => Ok(fixed()),
            None | Some(Value::Null) => Err(format!(
                "the identity provider's ID token has no {name:?} claim to choose your tenant by"
            )),
            Some(other) => {
                let shown: String = other.to_string().chars().take(100).collect();
                Err(format!(
                    "the ID token's {name:?} claim ({shown}) is not a tenant id: 1-100 letters, digits, '.', '_' or '-'"
                ))
            }
        }
    }
}

/// Maps verified ID token claims onto the user record (in `default`: `TenantRule::tenant` decides). Entra ID: `oid` (stable across applications,
/// unlike its pairwise `sub`) names the user when the token has a `tid`; `preferred_username` stands in
/// for a missing `email`; a group overage (`_claim_names.groups`) is recorded, not resolved.
pub fn user_from_claims(issuer: &str, claims: &Value) -> Result<UserLogin, String> {
    let text =
        |name: &str| claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let subject = match (text("tid"), text("oid")) {
        (Some(_), Some(oid)) => oid,
        _ => text("sub").ok_or("the ID token has no sub")?,
    };
    let preferred = text("preferred_username");
    let email = text("email").or_else(|| preferred.clone().filter(|p| p.contains('@')));
    Ok(UserLogin {
        issuer: issuer.to_owned(),
        subject,
        email,
        name: text("name").or(preferred),
        tenant_id: DEFAULT_TENANT.to_owned(),
        roles: strings(claims, "roles"),
        groups: strings(claims, "groups"),
        groups_overage: claims.pointer("/_claim_names/groups").is_some(),
        claims: claims.clone(),
    })
}

impl IdentityProvider {
    pub fn new(name: &str, config: OidcProvider, fetcher: JwksFetcher) -> Self {
        Self { name: name.to_owned(), config, fetcher, discovered: RwLock::new(None) }
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn discovered(&self, force: bool) -> Result<Discovered, LoginError> {
        if !force
            && let Some(d) = self.discovered.read().unwrap_or_else(|e| e.into_inner()).as_ref()
            && d.at.elapsed() < METADATA_TTL
        {
            return Ok(d.clone());
        }
        let issuer = Url::parse(&self.config.issuer).map_err(|e| LoginError::Metadata(e.to_string()))?;
        let mut failures = Vec::new();
        let mut found = None;
        for url in metadata_urls(&issuer) {
            match self.fetcher.get_json(&url).await {
                Ok(doc) => {
                    found = Some(doc);
                    break;
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        let doc = found.ok_or_else(|| LoginError::Metadata(failures.join("; ")))?;
        let published = doc.get("issuer").and_then(Value::as_str).unwrap_or_default().to_owned();
        if !metadata_issuer_matches(&self.config.issuer, &published) {
            return Err(LoginError::Metadata(format!(
                "the metadata names the issuer {published:?}, not {:?}",
                self.config.issuer
            )));
        }
        let jwks_uri = url_field(&doc, "jwks_uri")?;
        let jwks: JwkSet = serde_json::from_value(self.fetcher.get_json(&jwks_uri).await?)
            .map_err(|e| LoginError::Metadata(format!("the JWKS is not valid: {e}")))?;
        let d = Discovered {
            issuer: published,
            authorization_endpoint: url_field(&doc, "authorization_endpoint")?,
            token_endpoint: url_field(&doc, "token_endpoint")?,
            jwks,
            at: Instant::now(),
        };
        *self.discovered.write().unwrap_or_else(|e| e.into_inner()) = Some(d.clone());
        Ok(d)
    }

    /// Fetches the metadata and keys now (a registration is checked this way before it is stored).
    pub async fn check(&self) -> Result<(), LoginError> {
        self.discovered(true).await.map(drop)
    }

    /// Where to send the user: the IdP's authorization endpoint with our client, PKCE and nonce.
    pub async fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<Url, LoginError> {
        let d = self.discovered(false).await?;
        let mut url = d.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes)
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url)
    }

    /// Redeems the IdP's code and verifies its ID token; the user it names.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<UserLogin, LoginError> {
        let d = self.discovered(false).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let basic = Some((self.config.client_id.as_str(), self.config.client_secret.as_str()));
        let (status, doc) = self.fetcher.post_form(&d.token_endpoint, &form, basic).await?;
        if !(200..300).contains(&status) {
            let error = doc.get("error").and_then(Value::as_str).unwrap_or("error");
            let description = doc.get("error_description").and_then(Value::as_str).unwrap_or_default();
            return Err(LoginError::Token(format!("HTTP {status} {error} {description}").trim().to_owned()));
        }
        let id_token = doc
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| LoginError::Token("the token response has no id_token".into()))?;
        let claims = self.verify_id_token(id_token, &d).await?;
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(LoginError::IdToken("the nonce does not match this sign-in".into()));
        }
        user_from_claims(&self.config.issuer, &claims).map_err(LoginError::IdToken)
    }

    async fn verify_id_token(&self, token: &str, d: &Discovered) -> Result<Value, LoginError> {
        let bad = |why: String| LoginError::IdToken(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| bad(e.to_string()))?;
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(bad(format!("{:?} is not accepted", header.alg)));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let find = |set: &JwkSet| {
            set.keys.iter().find(|k| k.common.key_id.as_deref().unwrap_or_default() == kid).cloned()
        };
        let jwk = match find(&d.jwks) {
            Some(jwk) => jwk,
            // The IdP may have rotated its keys since discovery: fetch them once more.
            None => {
                find(&self.discovered(true).await?.jwks).ok_or_else(|| bad(format!("unknown kid {kid:?}")))?
            }
        };
        let key = crate::jwks::decoding_key(&jwk).map_err(bad)?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| bad(e.to_string()))?;
        let claims = data.claims;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
        if !token_issuer_matches(&d.issuer, iss, claims.get("tid").and_then(Value::as_str)) {
            return Err(bad(format!("iss {iss:?} is not the identity provider's")));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entra_issuer_templates() {
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        assert!(metadata_issuer_matches("https://idp.example", "https://idp.example"));
        assert!(!metadata_issuer_matches("https://idp.example", "https://idp.example/"));
        assert!(metadata_issuer_matches("https://login.microsoftonline.com/common/v2.0", template));
        assert!(!metadata_issuer_matches("https://evil.example/common/v2.0", template));
        assert!(!metadata_issuer_matches("https://login.microsoftonline.com/a/b/v2.0", template));
        let tenant = "https://login.microsoftonline.com/9188040d-6c67/v2.0";
        assert!(token_issuer_matches(template, tenant, Some("9188040d-6c67")));
        assert!(!token_issuer_matches(template, tenant, Some("other")));
        assert!(!token_issuer_matches(template, tenant, None));
        assert!(token_issuer_matches(tenant, tenant, None));
        assert!(!token_issuer_matches(tenant, "https://login.microsoftonline.com/x/v2.0", Some("x")));
    }

    #[test]
    fn claims_map_onto_users() {
        let entra = json!({"sub": "pairwise", "oid": "0f1e", "tid": "t1", "preferred_username": "ann@corp.example",
                           "roles": ["mcp.admin"], "_claim_names": {"groups": "src1"}});
        let user = user_from_claims("https://login.example/t1/v2.0", &entra).expect("user");
        assert_eq!((user.subject.as_str(), user.email.as_deref()), ("0f1e", Some("ann@corp.example")));
        assert_eq!(
            (user.roles.as_slice(), user.groups.len(), user.groups_overage),
            (&["mcp.admin".to_owned()][..], 0, true)
        );
        let plain =
            json!({"sub": "bob", "oid": "ignored-without-tid", "email": "bob@x", "groups": ["g1", "g2"]});
        let user = user_from_claims("https://idp", &plain).expect("user");
        assert_eq!((user.subject.as_str(), user.groups.len(), user.groups_overage), ("bob", 2, false));
        assert!(user_from_claims("https://idp", &json!({"email": "x"})).is_err());
    }

    #[test]
    fn tenants_come_from_the_rule() {
        let rule = |claim: Option<&str>, tenant: Option<&str>| TenantRule {
            claim: claim.map(str::to_owned),
            tenant_id: tenant.map(str::to_owned),
        };
        let entra = json!({"sub": "s", "tid": "72f988bf-86f1", "org": "acme", "bad": "a/b", "num": 7});
        assert_eq!(TenantRule::default().tenant(&entra).as_deref(), Ok("default"));
        assert_eq!(rule(None, Some("globex")).tenant(&entra).as_deref(), Ok("globex"));
        assert_eq!(rule(Some("tid"), None).tenant(&entra).as_deref(), Ok("72f988bf-86f1"));
        assert_eq!(rule(Some("org"), Some("globex")).tenant(&entra).as_deref(), Ok("acme"), "the claim wins");
        assert_eq!(rule(Some("team"), Some("globex")).tenant(&entra).as_deref(), Ok("globex"), "fallback");
        let missing = rule(Some("team"), None).tenant(&entra).expect_err("no claim, no fallback");
        assert!(missing.contains("no \"team\" claim"), "{missing}");
        for claim in ["bad", "num"] {
            // A claim that is not a tenant id is refused even with a fallback: it names something else.
            let refused = rule(Some(claim), Some("globex")).tenant(&entra).expect_err("not a tenant id");
            assert!(refused.contains("is not a tenant id"), "{refused}");
        }
        let long = json!({"org": "x".repeat(101)});
        assert!(rule(Some("org"), None).tenant(&long).is_err(), "over 100 characters");
    }
}
