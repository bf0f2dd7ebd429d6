//! API keys: the validated creation spec, the secret's generation, the stored row, the JSON views and the
//! `ApiKey` routing resource every proxy verifies presented keys against.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use mcpgw_proto::v1::{self, resource::Kind};
use mcpgw_proto::validate::{API_KEY_PREFIX, api_key_digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db::schema::api_keys;

/// Random bytes in a key (256 bits), written as 43 base64url characters after `mcpgw_`.
pub const SECRET_BYTES: usize = 32;
/// Characters of a key kept as its `prefix`: `mcpgw_` and six characters of the secret, enough to tell
/// keys apart in a list and far too few to help guess the other 37.
pub const PREFIX_CHARS: usize = 12;
/// The role that may use the admin API.
pub const ADMIN_ROLE: &str = "admin";
/// Role of a key created without one.
pub const DEFAULT_ROLE: &str = "user";
/// Tenant of a key created without one.
pub const DEFAULT_TENANT: &str = "default";

/// One rule of a key's `permissions`: a server (name or glob) and, optionally, the tools, prompts and
/// resources on it. Stored as given; the proxies enforce them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionRule {
    /// A server name, or a glob over names (`*`).
    #[schema(min_length = 1, max_length = 512)]
    pub server: String,
    /// Tool names or globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Prompt names or globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<Vec<String>>,
    /// Resource URIs or globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
}

/// A validated request to create a key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySpec {
    pub name: String,
    pub tenant_id: String,
    pub role: String,
    pub permissions: Vec<PermissionRule>,
    /// `None`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl PermissionRule {
    /// The rule as proxies decide with it: an absent list allows every item of that kind on the server,
    /// an empty one none.
    pub fn to_proto(&self) -> v1::PermissionRule {
        let list = |l: &Option<Vec<String>>| l.clone().unwrap_or_else(|| vec!["*".to_owned()]);
        v1::PermissionRule {
            server: self.server.clone(),
            tools: list(&self.tools),
            prompts: list(&self.prompts),
            resources: list(&self.resources),
        }
    }
}

/// A freshly generated key: the secret (shown once, never stored), its digest and its prefix. `Debug`
/// shows the prefix only.
pub struct NewKey {
    pub secret: String,
    pub digest: [u8; 32],
    pub prefix: String,
}

impl NewKey {
    /// `mcpgw_` + base64url (no padding) of 32 bytes from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut bytes = [0u8; SECRET_BYTES];
        SystemRandom::new().fill(&mut bytes)?;
        Ok(Self::from_secret(format!("{API_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
    }

    fn from_secret(secret: String) -> Self {
        let prefix = secret.chars().take(PREFIX_CHARS).collect();
        Self { digest: api_key_digest(&secret), prefix, secret }
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({}…)", self.prefix)
    }
}

/// A row of `api_keys`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    pub tenant_id: String,
    pub role: String,
    pub permissions: Value,
    /// SHA-256 of the key, 32 bytes (a CHECK constraint holds it to that).
    pub digest: Vec<u8>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl ApiKeyRow {
    /// Whether the key is refused at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The key as every proxy receives it: digest, tenant, role and expiry, never the secret.
    pub fn resource(&self) -> v1::Resource {
        v1::Resource {
            kind: Some(Kind::ApiKey(v1::ApiKey {
                id: self.id.to_string(),
                digest: self.digest.clone(),
                name: self.name.clone(),
                tenant_id: self.tenant_id.clone(),
                roles: vec![self.role.clone()],
                // Creation refuses expiries in the past, so a stored one is after the epoch (0 = never).
                expires_at_unix: self.expires_at.map_or(0, |at| at.timestamp().max(1)),
                permissions: serde_json::from_value::<Vec<PermissionRule>>(self.permissions.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(PermissionRule::to_proto)
                    .collect(),
            })),
        }
    }

    /// The JSON of lists and reads: no secret, no digest.
    pub fn view(&self) -> ApiKeyView {
        ApiKeyView {
            id: self.id,
            name: self.name.clone(),
            tenant_id: self.tenant_id.clone(),
            role: self.role.clone(),
            permissions: self.permissions.clone(),
            prefix: self.prefix.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }
}

/// An API key as `GET /api/v1/api-keys` shows it: never the secret nor its digest.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub tenant_id: String,
    pub role: String,
    #[schema(value_type = Vec<PermissionRule>)]
    pub permissions: Value,
    /// The key's first 12 characters, to recognise it.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// `null`: never expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /api/v1/api-keys`: the view and, this once, the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    /// The key to send as `Authorization: Bearer <key>`. It is shown only here: the control plane keeps
    /// its SHA-256 digest, not the key.
    pub key: String,
    pub name: String,
    pub tenant_id: String,
    pub role: String,
    #[schema(value_type = Vec<PermissionRule>)]
    pub permissions: Value,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreatedApiKey {
    pub fn new(row: &ApiKeyRow, key: NewKey) -> Self {
        let view = row.view();
        Self {
            id: view.id,
            key: key.secret,
            name: view.name,
            tenant_id: view.tenant_id,
            role: view.role,
            permissions: view.permissions,
            prefix: view.prefix,
            created_at: view.created_at,
            expires_at: view.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let keys: Vec<NewKey> = (0..64).map(|_| NewKey::generate().expect("randomness")).collect();
        for key in &keys {
            assert!(key.secret.starts_with("mcpgw_"));
            assert_eq!(key.secret.len(), 6 + 43, "{}", key.prefix);
            let body = &key.secret[6..];
            assert!(body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), SECRET_BYTES);
            assert_eq!(key.prefix, key.secret[..12]);
            assert_eq!(key.digest, api_key_digest(&key.secret));
            assert!(!format!("{key:?}").contains(&key.secret[12..]));
        }
        let distinct: HashSet<_> = keys.iter().map(|k| k.secret.clone()).collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn resource_carries_digest_role_and_expiry() {
        let key = NewKey::from_secret("mcpgw_known".to_owned());
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.6Z").expect("date").to_utc();
        let mut row = ApiKeyRow {
            id: Uuid::nil(),
            name: "ci".into(),
            tenant_id: "acme".into(),
            role: "admin".into(),
            permissions: Value::Array(vec![]),
            digest: key.digest.to_vec(),
            prefix: key.prefix.clone(),
            created_at: at,
            expires_at: Some(at),
        };
        let Some(Kind::ApiKey(resource)) = row.resource().kind else { panic!("an ApiKey resource") };
        assert_eq!(resource.digest, api_key_digest("mcpgw_known").to_vec());
        assert_eq!(resource.roles, vec!["admin".to_owned()]);
        assert_eq!((resource.name.as_str(), resource.tenant_id.as_str()), ("ci", "acme"));
        assert_eq!(resource.expires_at_unix, 1_893_553_445);
        assert!(row.is_expired(at) && !row.is_expired(at - chrono::Duration::seconds(1)));
        row.expires_at = None;
        let Some(Kind::ApiKey(resource)) = row.resource().kind else { panic!("an ApiKey resource") };
        assert_eq!(resource.expires_at_unix, 0);
        assert!(!row.is_expired(at));
        let view = serde_json::to_value(row.view()).expect("json");
        assert!(view.get("digest").is_none() && view.get("key").is_none(), "{view}");
    }
}
