//! Trusted issuers: OAuth / OIDC issuers whose JWT access tokens the proxies accept. The validated spec, the
//! stored row (configuration plus the JWKS last fetched), the JSON view and the `TrustedIssuer` resource.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use mcpgw_proto::v1::{self, resource::Kind};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::trusted_issuers;

/// Algorithms accepted when a registration names none.
pub const DEFAULT_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];
/// Claim names used when a registration names none.
pub const DEFAULT_SUBJECT_CLAIM: &str = "sub";
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
pub const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// A validated issuer registration (what POST creates and PATCH produces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuerSpec {
    /// The exact `iss` of the tokens.
    pub issuer: String,
    /// The JWKS URL given by the administrator; `None`: read from the issuer's metadata.
    pub jwks_uri: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub subject_claim: String,
    /// `None`: every principal gets `default_tenant`.
    pub tenant_claim: Option<String>,
    pub roles_claim: String,
    pub groups_claim: String,
    pub default_tenant: String,
}

/// A row of `trusted_issuers`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = trusted_issuers, check_for_backend(diesel::pg::Pg))]
pub struct TrustedIssuerRow {
    pub id: Uuid,
    pub issuer: String,
    /// Where the JWKS is fetched from.
    pub jwks_uri: String,
    /// Whether `jwks_uri` came from the issuer's metadata rather than the registration.
    pub jwks_uri_discovered: bool,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub subject_claim: String,
    pub tenant_claim: Option<String>,
    pub roles_claim: String,
    pub groups_claim: String,
    pub default_tenant: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The JWKS document as last fetched successfully.
    pub jwks: Option<Value>,
    pub jwks_fetched_at: Option<DateTime<Utc>>,
    /// When the stored JWKS last changed (a rotation reached the proxies then).
    pub jwks_changed_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last fetch failed; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// Claim names of a trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClaimsView {
    pub subject: String,
    /// `null`: every principal of this issuer is in `default_tenant`.
    pub tenant: Option<String>,
    pub roles: String,
    pub groups: String,
}

/// One signing key of the JWKS, as listed in the issuer's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub kid: Option<String>,
    pub kty: Option<String>,
    pub alg: Option<String>,
    #[serde(rename = "use")]
    pub key_use: Option<String>,
}

/// A trusted issuer as `GET /api/v1/trusted-issuers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrustedIssuerView {
    pub id: Uuid,
    pub issuer: String,
    pub jwks_uri: String,
    /// `configured` (given at registration) or `discovered` (from the issuer's metadata).
    pub jwks_uri_source: &'static str,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub claims: ClaimsView,
    pub default_tenant: String,
    /// The keys of the JWKS last fetched (what every proxy verifies tokens with).
    pub keys: Vec<KeyView>,
    /// When the JWKS was last fetched successfully, and when its content last changed.
    pub jwks_fetched_at: Option<DateTime<Utc>>,
    pub jwks_changed_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last refresh failed (the last good JWKS stays in use); `null` when it succeeded.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TrustedIssuerRow {
    /// The registration this row stores (PATCH merges into it).
    pub fn spec(&self) -> TrustedIssuerSpec {
        TrustedIssuerSpec {
            issuer: self.issuer.clone(),
            jwks_uri: (!self.jwks_uri_discovered).then(|| self.jwks_uri.clone()),
            audiences: self.audiences.clone(),
            algorithms: self.algorithms.clone(),
            subject_claim: self.subject_claim.clone(),
            tenant_claim: self.tenant_claim.clone(),
            roles_claim: self.roles_claim.clone(),
            groups_claim: self.groups_claim.clone(),
            default_tenant: self.default_tenant.clone(),
        }
    }

    pub fn view(&self) -> TrustedIssuerView {
        let text = |key: &Value, field: &str| key.get(field).and_then(Value::as_str).map(str::to_owned);
        let keys = self
            .jwks
            .as_ref()
            .and_then(|jwks| jwks.get("keys"))
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .map(|k| KeyView {
                        kid: text(k, "kid"),
                        kty: text(k, "kty"),
                        alg: text(k, "alg"),
                        key_use: text(k, "use"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        TrustedIssuerView {
            id: self.id,
            issuer: self.issuer.clone(),
            jwks_uri: self.jwks_uri.clone(),
            jwks_uri_source: if self.jwks_uri_discovered { "discovered" } else { "configured" },
            audiences: self.audiences.clone(),
            algorithms: self.algorithms.clone(),
            claims: ClaimsView {
                subject: self.subject_claim.clone(),
                tenant: self.tenant_claim.clone(),
                roles: self.roles_claim.clone(),
                groups: self.groups_claim.clone(),
            },
            default_tenant: self.default_tenant.clone(),
            keys,
            jwks_fetched_at: self.jwks_fetched_at,
            jwks_changed_at: self.jwks_changed_at,
            last_attempt_at: self.last_attempt_at,
            last_error: self.last_error.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The issuer as every proxy receives it; `None` until a JWKS was fetched (proxies could verify nothing).
    pub fn resource(&self) -> Option<v1::Resource> {
        let jwks = self.jwks.as_ref()?;
        Some(v1::Resource {
            kind: Some(Kind::TrustedIssuer(v1::TrustedIssuer {
                id: self.id.to_string(),
                issuer: self.issuer.clone(),
                jwks_json: jwks.to_string(),
                algorithms: self.algorithms.clone(),
                audiences: self.audiences.clone(),
                subject_claim: self.subject_claim.clone(),
                tenant_claim: self.tenant_claim.clone().unwrap_or_default(),
                default_tenant: self.default_tenant.clone(),
                roles_claim: self.roles_claim.clone(),
                groups_claim: self.groups_claim.clone(),
                authorization_server: false,
            })),
        })
    }
}

/// The trusted issuer of the control plane's own authorization server: its published keys and its claims
/// (`sub` = the user id, `tenant`, `roles`, `groups`); protected resource metadata names it.
pub fn own_issuer_resource(issuer: &str, keys: &[Value]) -> v1::Resource {
    v1::Resource {
        kind: Some(Kind::TrustedIssuer(v1::TrustedIssuer {
            id: "authorization-server".to_owned(),
            issuer: issuer.to_owned(),
            jwks_json: serde_json::json!({ "keys": keys }).to_string(),
            algorithms: vec![crate::oauth::keys::ALG.to_owned()],
            audiences: Vec::new(),
            subject_claim: "sub".to_owned(),
            tenant_claim: "tenant".to_owned(),
            default_tenant: super::DEFAULT_TENANT.to_owned(),
            roles_claim: "roles".to_owned(),
            groups_claim: "groups".to_owned(),
            authorization_server: true,
        })),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row(jwks: Option<Value>) -> TrustedIssuerRow {
        let at = Utc::now();
        TrustedIssuerRow {
            id: Uuid::nil(),
            issuer: "https://idp.example/".into(),
            jwks_uri: "https://idp.example/jwks".into(),
            jwks_uri_discovered: true,
            audiences: vec!["api://mcp".into()],
            algorithms: vec!["RS256".into()],
            subject_claim: "oid".into(),
            tenant_claim: None,
            roles_claim: "roles".into(),
            groups_claim: "groups".into(),
            default_tenant: "default".into(),
            created_at: at,
            updated_at: at,
            jwks,
            jwks_fetched_at: None,
            jwks_changed_at: None,
            last_attempt_at: None,
            last_error: None,
        }
    }

    #[test]
    fn resource_carries_the_jwks_and_the_claim_mapping() {
        assert!(row(None).resource().is_none(), "no JWKS, nothing to verify with");
        let jwks = json!({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "AQAB", "e": "AQAB"}]});
        let row = row(Some(jwks.clone()));
        let Some(Kind::TrustedIssuer(t)) = row.resource().and_then(|r| r.kind) else { panic!("an issuer") };
        assert_eq!(t.issuer, "https://idp.example/", "the exact iss, trailing slash kept");
        assert_eq!(serde_json::from_str::<Value>(&t.jwks_json).expect("JSON"), jwks);
        assert_eq!((t.subject_claim.as_str(), t.tenant_claim.as_str()), ("oid", ""));
        assert_eq!(t.audiences, ["api://mcp"]);
        let view = serde_json::to_value(row.view()).expect("json");
        assert_eq!(view["keys"], json!([{"kid": "k1", "kty": "RSA", "alg": "RS256", "use": "sig"}]));
        assert_eq!(view["jwks_uri_source"], "discovered");
        assert_eq!(row.spec().jwks_uri, None, "a discovered URI is not part of the registration");
    }
}
