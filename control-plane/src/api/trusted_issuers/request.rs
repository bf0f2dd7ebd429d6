//! The body of `POST /api/v1/trusted-issuers` (and the form PATCH merges into), and its validation into a
//! `TrustedIssuerSpec`.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::api::servers::valid_tenant;
use crate::api::{ApiError, Code};
use crate::jwks::secure_or_loopback;
use crate::model::{
    DEFAULT_ALGORITHMS, DEFAULT_GROUPS_CLAIM, DEFAULT_ROLES_CLAIM, DEFAULT_SUBJECT_CLAIM, DEFAULT_TENANT,
    TrustedIssuerSpec,
};

/// Longest issuer or JWKS URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Most extra audiences, and the longest one.
pub const MAX_AUDIENCES: usize = 32;
pub const MAX_AUDIENCE_CHARS: usize = 1024;
/// Longest claim name.
pub const MAX_CLAIM_CHARS: usize = 100;

/// Algorithms a registration may allow: every asymmetric algorithm the proxies verify. `none` and the
/// HMAC family are refused: an HMAC "key" would be the issuer's public JWKS, which anyone can read.
pub const ALLOWED_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// Claim names mapping a token onto a principal; absent ones keep their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimsRequest {
    /// The principal's name (default `sub`; Entra ID: `oid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The principal's tenant (default: none, so every principal is in `default_tenant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Role names (default `roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    /// Group names (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
}

/// Body of `POST /api/v1/trusted-issuers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerRequest {
    /// The exact `iss` of the tokens: an https URL (http only on a loopback host), compared as given
    /// (a trailing slash matters).
    pub issuer: String,
    /// Where the signing keys are; default: the `jwks_uri` of the issuer's metadata
    /// (`<issuer>/.well-known/openid-configuration`, else `/.well-known/oauth-authorization-server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Audiences accepted besides the exact resource URL a token is presented to
    /// (`<public-url>/mcp/{server}`), e.g. an Entra ID application ID URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Allowed `alg` values (default `["RS256", "ES256"]`); `none` and `HS*` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ClaimsRequest>,
    /// Tenant of principals whose token has no tenant claim (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub default_tenant: Option<String>,
}

fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// Checks an issuer or JWKS URL: an absolute https URL (http on loopback), no credentials, no fragment.
fn check_url(field: &str, raw: &str, code: Code) -> Result<Url, ApiError> {
    let bad = |why: &str| err(code, format!("{field} {raw:?} {why}"));
    if raw.is_empty()
        || raw.chars().count() > MAX_URL_CHARS
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad(&format!("must be a URL of 1-{MAX_URL_CHARS} characters without spaces")));
    }
    let url = Url::parse(raw).map_err(|e| bad(&format!("is not an absolute URL: {e}")))?;
    if !secure_or_loopback(&url) {
        return Err(bad("must use https (http is allowed only for a loopback host)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not carry a fragment"));
    }
    Ok(url)
}

fn claim(field: &str, raw: Option<String>, default: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(default.map(str::to_owned)) };
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_CLAIM_CHARS || name.chars().any(char::is_control) {
        return Err(err(
            Code::InvalidClaims,
            format!("claims.{field} must be a claim name of 1-{MAX_CLAIM_CHARS} printable characters"),
        ));
    }
    Ok(Some(name.to_owned()))
}

impl TrustedIssuerRequest {
    /// Checks every field; the first problem found is reported. Nothing here touches the network: the
    /// metadata and JWKS are fetched (and so checked) by the handler.
    pub fn validate(self) -> Result<TrustedIssuerSpec, ApiError> {
        let issuer = check_url("issuer", &self.issuer, Code::InvalidIssuer)?;
        if issuer.query().is_some() {
            return Err(err(Code::InvalidIssuer, format!("issuer {:?} must not have a query", self.issuer)));
        }
        let jwks_uri = self
            .jwks_uri
            .map(|raw| check_url("jwks_uri", &raw, Code::InvalidJwksUri).map(|_| raw))
            .transpose()?;
        let audiences = self.audiences.unwrap_or_default();
        if audiences.len() > MAX_AUDIENCES {
            return Err(err(
                Code::InvalidAudiences,
                format!("at most {MAX_AUDIENCES} audiences are allowed"),
            ));
        }
        for (i, audience) in audiences.iter().enumerate() {
            if audience.trim().is_empty()
                || audience.chars().count() > MAX_AUDIENCE_CHARS
                || audience.chars().any(char::is_control)
            {
                return Err(err(
                    Code::InvalidAudiences,
                    format!("audiences[{i}] must be 1-{MAX_AUDIENCE_CHARS} printable characters"),
                ));
            }
            if audiences[..i].contains(audience) {
                return Err(err(
                    Code::InvalidAudiences,
                    format!("audiences[{i}] {audience:?} is listed twice"),
                ));
            }
        }
        let algorithms = match self.algorithms {
            None => DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
            Some(list) if list.is_empty() => {
                return Err(err(Code::InvalidAlgorithms, "algorithms must name at least one algorithm"));
            }
            Some(list) => {
                for (i, alg) in list.iter().enumerate() {
                    if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
                        let why = if alg.eq_ignore_ascii_case("none")
                            || alg.to_ascii_uppercase().starts_with("HS")
                        {
                            "is refused: only public-key algorithms can be verified safely"
                        } else {
                            "is not a supported algorithm"
                        };
                        return Err(err(
                            Code::InvalidAlgorithms,
                            format!("algorithms[{i}] {alg:?} {why}; use {}", ALLOWED_ALGORITHMS.join(", ")),
                        ));
                    }
                    if list[..i].contains(alg) {
                        return Err(err(
                            Code::InvalidAlgorithms,
                            format!("algorithms[{i}] {alg:?} is listed twice"),
                        ));
                    }
                }
                list
            }
        };
        let claims = self.claims.unwrap_or_default();
        let subject_claim =
            claim("subject", claims.subject, Some(DEFAULT_SUBJECT_CLAIM))?.unwrap_or_default();
        let tenant_claim = claim("tenant", claims.tenant, None)?;
        let roles_claim = claim("roles", claims.roles, Some(DEFAULT_ROLES_CLAIM))?.unwrap_or_default();
        let groups_claim = claim("groups", claims.groups, Some(DEFAULT_GROUPS_CLAIM))?.unwrap_or_default();
        let default_tenant = match self.default_tenant.as_deref().map(str::trim) {
            None => DEFAULT_TENANT.to_owned(),
            Some(t) if valid_tenant(t) => t.to_owned(),
            Some(t) => {
                return Err(err(
                    Code::InvalidTenant,
                    format!(
                        "default_tenant {t:?} must be 1-100 characters of letters, digits, '.', '_' or '-'"
                    ),
                ));
            }
        };
        Ok(TrustedIssuerSpec {
            issuer: self.issuer,
            jwks_uri,
            audiences,
            algorithms,
            subject_claim,
            tenant_claim,
            roles_claim,
            groups_claim,
            default_tenant,
        })
    }

    /// The request that recreates a stored registration (PATCH merges into it).
    pub fn from_spec(spec: &TrustedIssuerSpec) -> Self {
        Self {
            issuer: spec.issuer.clone(),
            jwks_uri: spec.jwks_uri.clone(),
            audiences: Some(spec.audiences.clone()),
            algorithms: Some(spec.algorithms.clone()),
            claims: Some(ClaimsRequest {
                subject: Some(spec.subject_claim.clone()),
                tenant: spec.tenant_claim.clone(),
                roles: Some(spec.roles_claim.clone()),
                groups: Some(spec.groups_claim.clone()),
            }),
            default_tenant: Some(spec.default_tenant.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: serde_json::Value) -> Result<TrustedIssuerSpec, Code> {
        let request: TrustedIssuerRequest = serde_json::from_value(body).map_err(|_| Code::MalformedJson)?;
        request.validate().map_err(|e| e.code())
    }

    #[test]
    fn defaults_and_round_trip() {
        let spec = check(json!({"issuer": "https://login.example/tenant/v2.0/"})).expect("valid");
        assert_eq!(spec.issuer, "https://login.example/tenant/v2.0/", "kept exactly");
        assert_eq!(spec.algorithms, ["RS256", "ES256"]);
        assert_eq!((spec.subject_claim.as_str(), spec.roles_claim.as_str()), ("sub", "roles"));
        assert_eq!((spec.tenant_claim.as_deref(), spec.default_tenant.as_str()), (None, "default"));
        assert_eq!(spec.jwks_uri, None);
        let again = TrustedIssuerRequest::from_spec(&spec).validate().expect("the canonical form validates");
        assert_eq!(again, spec);
        let full = check(json!({"issuer": "http://127.0.0.1:9000", "jwks_uri": "http://localhost:9000/jwks",
            "audiences": ["api://mcp"], "algorithms": ["EdDSA", "PS256"],
            "claims": {"subject": "oid", "tenant": "tid", "roles": "app_roles", "groups": "grp"},
            "default_tenant": "acme"}))
        .expect("valid");
        assert_eq!(full.tenant_claim.as_deref(), Some("tid"));
        assert_eq!(full.algorithms, ["EdDSA", "PS256"]);
    }

    #[test]
    fn refusals() {
        for (body, code) in [
            (json!({"issuer": "http://idp.example"}), Code::InvalidIssuer),
            (json!({"issuer": "idp.example"}), Code::InvalidIssuer),
            (json!({"issuer": "https://u:p@idp.example"}), Code::InvalidIssuer),
            (json!({"issuer": "https://idp.example/?x=1"}), Code::InvalidIssuer),
            (json!({"issuer": "https://idp.example/#f"}), Code::InvalidIssuer),
            (json!({"issuer": ""}), Code::InvalidIssuer),
            (
                json!({"issuer": "https://idp.example", "jwks_uri": "http://10.0.0.1/jwks"}),
                Code::InvalidJwksUri,
            ),
            (json!({"issuer": "https://idp.example", "audiences": [""]}), Code::InvalidAudiences),
            (json!({"issuer": "https://idp.example", "audiences": ["a", "a"]}), Code::InvalidAudiences),
            (json!({"issuer": "https://idp.example", "algorithms": []}), Code::InvalidAlgorithms),
            (json!({"issuer": "https://idp.example", "algorithms": ["none"]}), Code::InvalidAlgorithms),
            (json!({"issuer": "https://idp.example", "algorithms": ["HS256"]}), Code::InvalidAlgorithms),
            (json!({"issuer": "https://idp.example", "algorithms": ["rs256"]}), Code::InvalidAlgorithms),
            (json!({"issuer": "https://idp.example", "claims": {"subject": " "}}), Code::InvalidClaims),
            (json!({"issuer": "https://idp.example", "default_tenant": "a b"}), Code::InvalidTenant),
            (json!({"issuer": "https://idp.example", "claims": {"email": "x"}}), Code::MalformedJson),
            (json!({"issuer": "https://idp.example", "secret": "x"}), Code::MalformedJson),
        ] {
            assert_eq!(check(body.clone()).err(), Some(code), "{body}");
        }
        let message = TrustedIssuerRequest {
            issuer: "https://idp.example".into(),
            algorithms: Some(vec!["HS256".into()]),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(message.message().contains("public-key"), "{}", message.message());
    }
}
