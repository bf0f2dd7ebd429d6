//! `upstream_auth` of a registration or an instance: how the gateway authenticates to the upstream. The
//! value is write-only: reads, lists and exports show the type and header only, and a request without a
//! value keeps the stored one.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::err;
use crate::api::{ApiError, Code};
use crate::model::{
    CLIENT_CREDENTIALS, RESERVED_HEADERS, STATIC_HEADER, SecretInput, TOKEN_EXCHANGE, UpstreamAuthSpec,
    UpstreamAuthView,
};

/// Longest header name, and longest value.
pub const MAX_HEADER_CHARS: usize = 100;
pub const MAX_VALUE_CHARS: usize = 8192;

/// `{"type": "none"}`, `{"type": "static_header", "header": "X-API-Key", "value": "..."}`,
/// `{"type": "oauth_client_credentials", "token_url", "client_id", "client_secret", "scope"?, "resource"?}`
/// or `{"type": "token_exchange", "audience"?, "scopes"?}`. Without `value` / `client_secret`, the stored
/// secret is kept (a read written back changes nothing). `Debug` hides the secrets.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthRequest {
    /// `none` or `static_header`.
    #[serde(rename = "type")]
    #[schema(example = "static_header")]
    pub kind: String,
    /// For `static_header`: the header sent with every upstream request, e.g. `X-API-Key` or
    /// `Authorization`; headers that frame or route the request are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// For `static_header`: the header's value. Write-only: stored sealed, never returned. Absent: keep the
    /// stored value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(write_only)]
    pub value: Option<String>,
    /// For `oauth_client_credentials`: the upstream authorization server's token endpoint (https, or http
    /// on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// For `oauth_client_credentials`: the gateway's client id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// For `oauth_client_credentials`: the client secret. Write-only; absent: keep the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(write_only)]
    pub client_secret: Option<String>,
    /// For `oauth_client_credentials`: the scope asked for (space-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// For `oauth_client_credentials`: the RFC 8707 resource asked for (the upstream's canonical URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// For `token_exchange`: the audience of the exchanged tokens (default: each instance's endpoint URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// For `token_exchange`: the scopes the exchanged tokens carry at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl fmt::Debug for UpstreamAuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAuthRequest")
            .field("kind", &self.kind)
            .field("header", &self.header)
            .field("value", &self.value.as_ref().map(|_| "***"))
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl UpstreamAuthRequest {
    /// The canonical request of a stored or validated credential: type and header, never the value.
    pub fn from_view(view: &UpstreamAuthView) -> Option<Self> {
        match view {
            UpstreamAuthView::None => None,
            UpstreamAuthView::StaticHeader { header } => {
                Some(Self { kind: STATIC_HEADER.to_owned(), header: Some(header.clone()), ..Self::default() })
            }
            UpstreamAuthView::OauthClientCredentials { token_url, client_id, scope, resource } => {
                Some(Self {
                    kind: CLIENT_CREDENTIALS.to_owned(),
                    token_url: Some(token_url.clone()),
                    client_id: Some(client_id.clone()),
                    scope: scope.clone(),
                    resource: resource.clone(),
                    ..Self::default()
                })
            }
            UpstreamAuthView::TokenExchange { audience, scopes } => Some(Self {
                kind: TOKEN_EXCHANGE.to_owned(),
                audience: audience.clone(),
                scopes: (!scopes.is_empty()).then(|| scopes.clone()),
                ..Self::default()
            }),
        }
    }

    /// Validates; `at` prefixes messages (`instances[0]: `), `instance` refuses `none` (an instance
    /// without a credential of its own uses its server's; it cannot opt out of it).
    pub fn validate(self, at: &str, instance: bool) -> Result<UpstreamAuthSpec, ApiError> {
        let bad = |why: String| err(Code::InvalidUpstreamAuth, format!("{at}upstream_auth{why}"));
        let oauth_fields = self.token_url.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some()
            || self.scope.is_some()
            || self.resource.is_some();
        let exchange_fields = self.audience.is_some() || self.scopes.is_some();
        let header_fields = self.header.is_some() || self.value.is_some();
        let foreign = match self.kind.as_str() {
            STATIC_HEADER => oauth_fields || exchange_fields,
            CLIENT_CREDENTIALS => header_fields || exchange_fields,
            TOKEN_EXCHANGE => header_fields || oauth_fields,
            _ => false,
        };
        if foreign {
            return Err(bad(format!(": a field of another type is given with type {:?}", self.kind)));
        }
        match self.kind.as_str() {
            "none" if instance => {
                Err(bad(": an instance without upstream_auth uses its server's; \"none\" cannot override it"
                    .into()))
            }
            "none" if header_fields || oauth_fields || exchange_fields => {
                Err(bad(": type \"none\" takes no other field".into()))
            }
            "none" => Ok(UpstreamAuthSpec::None),
            STATIC_HEADER => {
                let header =
                    self.header.ok_or_else(|| bad(".header is required for static_header".into()))?;
                check_header(&header).map_err(|why| bad(format!(".header {header:?} {why}")))?;
                let value = match self.value {
                    None => SecretInput::Keep,
                    Some(value) => {
                        check_value(&value).map_err(|why| bad(format!(".value {why}")))?;
                        SecretInput::New(value)
                    }
                };
                Ok(UpstreamAuthSpec::StaticHeader { header, value })
            }
            CLIENT_CREDENTIALS => {
                let token_url = self.token_url.ok_or_else(|| bad(".token_url is required".into()))?;
                match url::Url::parse(&token_url) {
                    Ok(u) if crate::jwks::secure_or_loopback(&u) && u.fragment().is_none() => {}
                    _ => {
                        return Err(bad(format!(
                            ".token_url {token_url:?} is not an https URL (or http on loopback)"
                        )));
                    }
                }
                let client_id = self
                    .client_id
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| bad(".client_id is required".into()))?;
                let client_secret = match self.client_secret {
                    None => SecretInput::Keep,
                    Some(secret) => {
                        check_value(&secret).map_err(|why| bad(format!(".client_secret {why}")))?;
                        SecretInput::New(secret)
                    }
                };
                if let Some(resource) = &self.resource
                    && url::Url::parse(resource).is_err()
                {
                    return Err(bad(format!(".resource {resource:?} is not an absolute URL")));
                }
                Ok(UpstreamAuthSpec::ClientCredentials {
                    token_url,
                    client_id,
                    scope: self.scope.filter(|s| !s.trim().is_empty()),
                    resource: self.resource,
                    client_secret,
                })
            }
            TOKEN_EXCHANGE => {
                if let Some(audience) = &self.audience
                    && (audience.trim().is_empty() || audience.len() > 2048)
                {
                    return Err(bad(".audience must be 1-2048 characters".into()));
                }
                let scopes = self.scopes.unwrap_or_default();
                if scopes.iter().any(|s| s.is_empty() || s.contains(char::is_whitespace)) {
                    return Err(bad(".scopes must be scope tokens without spaces".into()));
                }
                Ok(UpstreamAuthSpec::TokenExchange { audience: self.audience, scopes })
            }
            other => Err(bad(format!(
                ".type {other:?} is not one of \"none\", \"static_header\", \"oauth_client_credentials\", \"token_exchange\""
            ))),
        }
    }
}

/// An HTTP field name (RFC 9110 token) that does not frame or route the request.
fn check_header(name: &str) -> Result<(), &'static str> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || name.len() > MAX_HEADER_CHARS || !name.chars().all(token) {
        return Err("is not a header name (1-100 characters of letters, digits and !#$%&'*+-.^_`|~)");
    }
    if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err("frames or routes the request and cannot carry a credential");
    }
    Ok(())
}

/// A header value: printable, no leading or trailing whitespace, bounded.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("must be 1-{MAX_VALUE_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if value.trim() != value {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: serde_json::Value, instance: bool) -> Result<UpstreamAuthSpec, Code> {
        let request: UpstreamAuthRequest = serde_json::from_value(body).map_err(|_| Code::MalformedJson)?;
        request.validate("", instance).map_err(|e| e.code())
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(check(json!({"type": "none"}), false), Ok(UpstreamAuthSpec::None));
        assert_eq!(
            check(json!({"type": "static_header", "header": "X-API-Key", "value": "k 1"}), true),
            Ok(UpstreamAuthSpec::StaticHeader {
                header: "X-API-Key".into(),
                value: SecretInput::New("k 1".into())
            })
        );
        assert_eq!(
            check(json!({"type": "static_header", "header": "Authorization"}), false),
            Ok(UpstreamAuthSpec::StaticHeader { header: "Authorization".into(), value: SecretInput::Keep })
        );
    }

    #[test]
    fn refusals_never_echo_the_value() {
        for (body, instance) in [
            (json!({"type": "basic", "header": "X", "value": "v"}), false),
            (json!({"type": "none", "header": "X"}), false),
            (json!({"type": "none"}), true),
            (json!({"type": "static_header", "value": "s3cret"}), false),
            (json!({"type": "static_header", "header": "X Y", "value": "s3cret"}), false),
            (json!({"type": "static_header", "header": "", "value": "s3cret"}), false),
            (json!({"type": "static_header", "header": "x:y", "value": "s3cret"}), false),
            (json!({"type": "static_header", "header": "X", "value": ""}), false),
            (json!({"type": "static_header", "header": "X", "value": "s3cret\n"}), false),
            (json!({"type": "static_header", "header": "X", "value": " s3cret"}), false),
        ] {
            let request: UpstreamAuthRequest = serde_json::from_value(body.clone()).expect("parses");
            let error = request.validate("", instance).expect_err("refused");
            assert_eq!(error.code(), Code::InvalidUpstreamAuth, "{body}");
            assert!(!error.message().contains("s3cret"), "{}", error.message());
        }
        for reserved in RESERVED_HEADERS.iter().chain(&["Host", "MCP-Session-Id", "Transfer-Encoding"]) {
            let body = json!({"type": "static_header", "header": reserved, "value": "v"});
            assert_eq!(check(body, false), Err(Code::InvalidUpstreamAuth), "{reserved}");
        }
        assert_eq!(
            check(json!({"type": "static_header", "header": "X", "secret": "v"}), false),
            Err(Code::MalformedJson)
        );
        let debug = format!(
            "{:?}",
            UpstreamAuthRequest {
                kind: "static_header".into(),
                value: Some("s3cret".into()),
                ..Default::default()
            }
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
