//! Tokens for upstreams that use `token_exchange`: the proxies present the caller's credential (an access
//! token of this authorization server for one of the gateway's resources, or an API key) over their
//! authenticated gRPC channel, and get a token on behalf of that caller whose audience is the upstream —
//! RFC 8693 semantics: the caller stays the subject, the gateway is the actor (`act`), scopes are the
//! credential's, the lifetime never outlives the caller's. Health checks and discovery get a token of the
//! control plane itself for the same audience.

use chrono::Utc;
use mcpgw_proto::validate::{API_KEY_PREFIX, api_key_digest};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AccessClaims, AuthServer};
use crate::db::store;

/// The `act` of exchanged tokens, and the subject of the control plane's own.
pub const GATEWAY_ACTOR: &str = "mcpgw-gateway";

#[derive(Serialize)]
struct ExchangedClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: String,
    scope: String,
    tenant: String,
    roles: Vec<String>,
    groups: Vec<String>,
    act: Value,
}

/// Who the caller is, from the credential presented.
struct Subject {
    sub: String,
    client_id: String,
    tenant: String,
    roles: Vec<String>,
    groups: Vec<String>,
    expires_at: i64,
}

impl AuthServer {
    async fn subject(&self, token: &str) -> Result<Subject, String> {
        let ttl = self.config.access_token_ttl.as_secs() as i64;
        if token.starts_with(API_KEY_PREFIX) {
            let mut conn = self.hub.pool().get().await.map_err(|e| e.to_string())?;
            let key = store::api_keys::by_digest(&mut conn, &api_key_digest(token))
                .await
                .map_err(|e| e.to_string())?
                .filter(|k| !k.is_expired(Utc::now()))
                .ok_or("the API key is unknown, revoked or expired")?;
            let expires_at = key.expires_at.map_or(i64::MAX, |e| e.timestamp());
            return Ok(Subject {
                sub: format!("api-key:{}", key.id),
                client_id: GATEWAY_ACTOR.to_owned(),
                tenant: key.tenant_id,
                roles: vec![key.role],
                groups: Vec::new(),
                expires_at: expires_at.min(Utc::now().timestamp() + ttl),
            });
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| "the credential is neither an API key nor a JWT")?;
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(self.keys.jwks()).map_err(|e| e.to_string())?;
        let jwk = jwks.find(header.kid.as_deref().unwrap_or_default()).ok_or(
            "only access tokens of this gateway's authorization server and API keys can be exchanged",
        )?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.validate_aud = false;
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|e| format!("the access token is not valid: {e}"))?
            .claims;
        if !self.known_resource(&claims.aud) {
            return Err("the access token is not for one of this gateway's resources".into());
        }
        Ok(Subject {
            sub: claims.sub,
            client_id: claims.client_id,
            tenant: claims.tenant,
            roles: claims.roles,
            groups: claims.groups,
            expires_at: claims.exp,
        })
    }

    /// A token on behalf of the caller whose credential is `subject_token`, for `audience`, carrying
    /// `scopes`; the token and its expiry (seconds since the epoch).
    pub async fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<(String, i64), String> {
        if audience.is_empty() {
            return Err("no audience".into());
        }
        let subject = self.subject(subject_token).await?;
        let now = Utc::now().timestamp();
        let exp = subject.expires_at.min(now + self.config.access_token_ttl.as_secs() as i64);
        if exp <= now {
            return Err("the caller's credential has expired".into());
        }
        let claims = ExchangedClaims {
            iss: self.issuer.clone(),
            sub: subject.sub,
            aud: audience.to_owned(),
            exp,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            client_id: subject.client_id,
            scope: scopes.join(" "),
            tenant: subject.tenant,
            roles: subject.roles,
            groups: subject.groups,
            act: json!({ "sub": GATEWAY_ACTOR }),
        };
        let signer = self.keys.signer().ok_or("no signing key is loaded yet")?;
        let token = signer.sign("at+jwt", &claims).map_err(|e| e.to_string())?;
        Ok((token, exp))
    }

    /// A token of the control plane itself for `audience` (discovery and health checks of an upstream that
    /// uses token exchange).
    pub fn service_token(&self, audience: &str, scopes: &[String]) -> Option<String> {
        let now = Utc::now().timestamp();
        let claims = ExchangedClaims {
            iss: self.issuer.clone(),
            sub: GATEWAY_ACTOR.to_owned(),
            aud: audience.to_owned(),
            exp: now + self.config.access_token_ttl.as_secs() as i64,
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            client_id: GATEWAY_ACTOR.to_owned(),
            scope: scopes.join(" "),
            tenant: crate::model::DEFAULT_TENANT.to_owned(),
            roles: Vec::new(),
            groups: Vec::new(),
            act: json!({ "sub": GATEWAY_ACTOR }),
        };
        self.keys.signer()?.sign("at+jwt", &claims).ok()
    }
}
