//! Upstream credentials: how the gateway authenticates to a server's instances (one credential per server,
//! optionally one per instance that replaces it). Stored as a kind, a JSON of what may be shown and a sealed
//! JSON of the secret (`secrets`); read back as a view without the secret, and opened only into the
//! `UpstreamCredential` streamed to proxies and presented by discovery and health checks.
//!
//! Kinds: `static_header` (a fixed header); `oauth_client_credentials` (the control plane obtains a token
//! for the upstream from its authorization server, keeps it fresh in `upstream_tokens` and streams it to the
//! proxies as an `Authorization: Bearer` header); `token_exchange` (the proxies have the control plane's
//! authorization server exchange each caller's token for one whose audience is the upstream — RFC 8693
//! semantics — so the upstream sees who calls, never the caller's own token).
//!
//! The same table keeps stdio instances' secret environments (kind `stdio_env`: the names in `config`, the
//! values sealed), which the index holds apart: they are merged into the command proxies receive, never
//! presented as a credential.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use mcpgw_proto::v1;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::stdio::STDIO_ENV;
use crate::db::schema::upstream_credentials;
use crate::secrets::{OpenError, SecretsKey};

/// A fixed header on every upstream request.
pub const STATIC_HEADER: &str = "static_header";
/// A token the gateway obtains with its own client credentials at the upstream's authorization server.
pub const CLIENT_CREDENTIALS: &str = "oauth_client_credentials";
/// A token the gateway's authorization server issues on behalf of each caller, for the upstream.
pub const TOKEN_EXCHANGE: &str = "token_exchange";

/// Headers a credential may not set; the proxies refuse the same list, so a credential accepted here is never
/// refused there.
pub const RESERVED_HEADERS: &[&str] = mcpgw_proto::validate::RESERVED_CREDENTIAL_HEADERS;

/// The secret of a credential in a validated request.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretInput {
    /// No value given: keep the one stored for this owner (reads and exports never show it, so a read
    /// that is written back must not erase it).
    Keep,
    /// A new value, sealed when it is written.
    New(String),
}

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::New(_) => f.write_str("New(***)"),
        }
    }
}

/// A validated `upstream_auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamAuthSpec {
    /// No credential (for an instance: none of its own; it uses its server's).
    #[default]
    None,
    /// `header: value` on every upstream request.
    StaticHeader { header: String, value: SecretInput },
    /// OAuth client credentials grant at `token_url` (`scope` and RFC 8707 `resource` when given).
    ClientCredentials {
        token_url: String,
        client_id: String,
        scope: Option<String>,
        resource: Option<String>,
        client_secret: SecretInput,
    },
    /// A token per caller for `audience` (default: the instance's endpoint URL), scopes narrowed to `scopes`.
    TokenExchange { audience: Option<String>, scopes: Vec<String> },
}

impl UpstreamAuthSpec {
    /// The stored `kind`, `None` for no credential.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::StaticHeader { .. } => Some(STATIC_HEADER),
            Self::ClientCredentials { .. } => Some(CLIENT_CREDENTIALS),
            Self::TokenExchange { .. } => Some(TOKEN_EXCHANGE),
        }
    }

    /// What may be shown (the `config` column).
    pub fn config(&self) -> Value {
        match self {
            Self::None => Value::Null,
            Self::StaticHeader { header, .. } => json!({ "header": header }),
            Self::ClientCredentials { token_url, client_id, scope, resource, .. } => {
                json!({ "token_url": token_url, "client_id": client_id, "scope": scope, "resource": resource })
            }
            Self::TokenExchange { audience, scopes } => json!({ "audience": audience, "scopes": scopes }),
        }
    }

    /// The secret JSON to seal, when the request gave a new one.
    pub fn new_secret(&self) -> Option<Value> {
        match self {
            Self::StaticHeader { value: SecretInput::New(value), .. } => Some(json!({ "value": value })),
            Self::ClientCredentials { client_secret: SecretInput::New(secret), .. } => {
                Some(json!({ "client_secret": secret }))
            }
            // Nothing secret: an empty object is sealed (the column is never empty).
            Self::TokenExchange { .. } => Some(json!({})),
            _ => None,
        }
    }

    /// The form reads show.
    pub fn view(&self) -> UpstreamAuthView {
        UpstreamAuthView::from_config(self.kind().unwrap_or("none"), &self.config())
    }
}

/// An upstream credential as every read, list, export and health view shows it: its kind and the settings
/// that are not secret. The secret itself is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UpstreamAuthView {
    /// No credential.
    None,
    /// A fixed header; its value is stored sealed and sent only to proxies.
    StaticHeader { header: String },
    /// OAuth client credentials; the secret is stored sealed, the tokens obtained are never shown.
    OauthClientCredentials {
        token_url: String,
        client_id: String,
        scope: Option<String>,
        resource: Option<String>,
    },
    /// Token exchange on behalf of each caller.
    TokenExchange { audience: Option<String>, scopes: Vec<String> },
}

impl UpstreamAuthView {
    /// The view of a stored `kind` and `config`.
    pub fn from_config(kind: &str, config: &Value) -> Self {
        let text = |field: &str| config.get(field).and_then(Value::as_str).map(str::to_owned);
        match kind {
            STATIC_HEADER => Self::StaticHeader { header: text("header").unwrap_or_default() },
            CLIENT_CREDENTIALS => Self::OauthClientCredentials {
                token_url: text("token_url").unwrap_or_default(),
                client_id: text("client_id").unwrap_or_default(),
                scope: text("scope"),
                resource: text("resource"),
            },
            TOKEN_EXCHANGE => Self::TokenExchange {
                audience: text("audience"),
                scopes: config
                    .get("scopes")
                    .and_then(Value::as_array)
                    .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                    .unwrap_or_default(),
            },
            _ => Self::None,
        }
    }
}

/// The token last obtained for a client credentials credential (sealed), as the hub reads it.
#[derive(Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = crate::db::schema::upstream_tokens, check_for_backend(diesel::pg::Pg))]
pub struct UpstreamTokenRow {
    pub credential_id: Uuid,
    pub sealed: Option<Vec<u8>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub fetched_at: Option<DateTime<Utc>>,
    pub last_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

impl fmt::Debug for UpstreamTokenRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokenRow")
            .field("credential_id", &self.credential_id)
            .field("expires_at", &self.expires_at)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

/// The sealing context of a credential's obtained token.
pub fn token_context(credential_id: Uuid) -> String {
    format!("upstream-token:{credential_id}")
}

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Server(Uuid),
    Instance(Uuid),
}

/// A row of `upstream_credentials`. `Debug` leaves the sealed bytes out.
#[derive(Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = upstream_credentials, check_for_backend(diesel::pg::Pg))]
pub struct CredentialRow {
    pub id: Uuid,
    pub server_id: Option<Uuid>,
    pub instance_id: Option<Uuid>,
    pub kind: String,
    pub config: Value,
    /// `secrets::SecretsKey::seal` of the secret JSON, with `kind` as authenticated data.
    pub sealed: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialRow")
            .field("id", &self.id)
            .field("server_id", &self.server_id)
            .field("instance_id", &self.instance_id)
            .field("kind", &self.kind)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a stored credential could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the control plane has no --secrets-key to open it")]
    NoKey,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the stored credential is malformed (kind {0:?})")]
    Malformed(String),
    #[error("no valid token has been obtained yet (see its last_error)")]
    NoToken,
}

impl CredentialRow {
    pub fn owner(&self) -> Option<Owner> {
        match (self.server_id, self.instance_id) {
            (Some(id), None) => Some(Owner::Server(id)),
            (None, Some(id)) => Some(Owner::Instance(id)),
            _ => None,
        }
    }

    /// The non-secret view.
    pub fn view(&self) -> UpstreamAuthView {
        UpstreamAuthView::from_config(&self.kind, &self.config)
    }

    /// The names a `stdio_env` row holds (its `config`).
    pub fn secret_env_names(&self) -> Vec<String> {
        self.config
            .get("names")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The values of a `stdio_env` row, opened with `key`.
    pub fn secret_env(&self, key: Option<&SecretsKey>) -> Result<BTreeMap<String, String>, CredentialError> {
        let secret = self.secret(key)?;
        secret
            .get("env")
            .and_then(|env| serde_json::from_value(env.clone()).ok())
            .ok_or_else(|| CredentialError::Malformed(self.kind.clone()))
    }

    /// The secret JSON, opened with `key`.
    pub fn secret(&self, key: Option<&SecretsKey>) -> Result<Value, CredentialError> {
        let key = key.ok_or(CredentialError::NoKey)?;
        let plain = key.open(&self.kind, &self.sealed)?;
        serde_json::from_slice(&plain).map_err(|_| CredentialError::Malformed(self.kind.clone()))
    }

    /// The credential as proxies receive it, secret included. A client credentials credential becomes the
    /// bearer header of its last token, when that token is still valid and was obtained for these settings.
    pub fn open(
        &self,
        key: Option<&SecretsKey>,
        token: Option<&UpstreamTokenRow>,
    ) -> Result<v1::UpstreamCredential, CredentialError> {
        let malformed = || CredentialError::Malformed(self.kind.clone());
        let kind = |k| Ok(v1::UpstreamCredential { kind: Some(k) });
        match self.kind.as_str() {
            CLIENT_CREDENTIALS => {
                let token = token
                    .filter(|t| t.fetched_at.is_some_and(|at| at >= self.updated_at))
                    .filter(|t| t.expires_at.is_none_or(|exp| exp > Utc::now()))
                    .and_then(|t| t.sealed.as_ref())
                    .ok_or(CredentialError::NoToken)?;
                let key = key.ok_or(CredentialError::NoKey)?;
                let plain = key.open(&token_context(self.id), token)?;
                let token = String::from_utf8(plain).map_err(|_| malformed())?;
                kind(v1::upstream_credential::Kind::StaticHeader(v1::StaticHeader {
                    name: "authorization".to_owned(),
                    value: format!("Bearer {token}"),
                }))
            }
            TOKEN_EXCHANGE => {
                let UpstreamAuthView::TokenExchange { audience, scopes } = self.view() else {
                    return Err(malformed());
                };
                kind(v1::upstream_credential::Kind::TokenExchange(v1::TokenExchange {
                    audience: audience.unwrap_or_default(),
                    scopes,
                }))
            }
            STATIC_HEADER => {
                let name = self.config.get("header").and_then(Value::as_str).ok_or_else(malformed)?;
                let secret = self.secret(key)?;
                let value = secret.get("value").and_then(Value::as_str).ok_or_else(malformed)?;
                Ok(v1::UpstreamCredential {
                    kind: Some(v1::upstream_credential::Kind::StaticHeader(v1::StaticHeader {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })),
                })
            }
            _ => Err(malformed()),
        }
    }

    /// Whether `spec` would store exactly this credential (same kind, settings and secret). A spec that
    /// keeps the stored secret matches when kind and settings do.
    pub fn matches(
        &self,
        spec: &UpstreamAuthSpec,
        key: Option<&SecretsKey>,
    ) -> Result<bool, CredentialError> {
        if spec.kind() != Some(self.kind.as_str()) || spec.config() != self.config {
            return Ok(false);
        }
        match spec.new_secret() {
            None => Ok(true),
            Some(wanted) => Ok(self.secret(key)? == wanted),
        }
    }
}

/// Credentials of a set of servers and their instances, by owner; and the secret environments of stdio
/// instances (stored in the same table, kind `stdio_env`), by instance.
#[derive(Debug, Clone, Default)]
pub struct CredentialIndex {
    pub servers: HashMap<Uuid, CredentialRow>,
    pub instances: HashMap<Uuid, CredentialRow>,
    pub secret_env: HashMap<Uuid, CredentialRow>,
}

impl CredentialIndex {
    pub fn from_rows(rows: impl IntoIterator<Item = CredentialRow>) -> Self {
        let mut index = Self::default();
        for row in rows {
            match row.owner() {
                Some(Owner::Instance(id)) if row.kind == STDIO_ENV => drop(index.secret_env.insert(id, row)),
                Some(Owner::Server(id)) => drop(index.servers.insert(id, row)),
                Some(Owner::Instance(id)) => drop(index.instances.insert(id, row)),
                None => {}
            }
        }
        index
    }

    /// The names of a stdio instance's secret environment (empty without one).
    pub fn secret_env_names(&self, id: Uuid) -> Vec<String> {
        self.secret_env.get(&id).map(CredentialRow::secret_env_names).unwrap_or_default()
    }

    /// Every stdio instance's secret environment opened with `key`, by instance. One that cannot be opened
    /// is left out (its processes start without it; logged).
    pub fn open_secret_env(&self, key: Option<&SecretsKey>) -> HashMap<Uuid, BTreeMap<String, String>> {
        let mut opened = HashMap::new();
        for (id, row) in &self.secret_env {
            match row.secret_env(key) {
                Ok(env) => drop(opened.insert(*id, env)),
                Err(error) => tracing::error!(instance = %id, %error,
                    "A stdio instance's secret environment cannot be opened; its processes start without it."),
            }
        }
        opened
    }

    /// The view of a server's credential (`none` without one).
    pub fn server_view(&self, id: Uuid) -> UpstreamAuthView {
        self.servers.get(&id).map_or(UpstreamAuthView::None, CredentialRow::view)
    }

    /// The view of an instance's own credential, if it has one.
    pub fn instance_view(&self, id: Uuid) -> Option<UpstreamAuthView> {
        self.instances.get(&id).map(CredentialRow::view)
    }

    /// Every credential opened with `key` (client credentials with their `tokens`), by owner. One that
    /// cannot be opened is left out (its owner is then reached without it, which the upstream refuses: no
    /// secret leaks, and the error is logged).
    pub fn open_all(
        &self,
        key: Option<&SecretsKey>,
        tokens: &HashMap<Uuid, UpstreamTokenRow>,
    ) -> HashMap<Owner, v1::UpstreamCredential> {
        let mut opened = HashMap::new();
        for row in self.servers.values().chain(self.instances.values()) {
            let Some(owner) = row.owner() else { continue };
            match row.open(key, tokens.get(&row.id)) {
                Ok(credential) => drop(opened.insert(owner, credential)),
                Err(CredentialError::NoToken) => {
                    tracing::warn!(
                        ?owner,
                        "No token for an upstream yet; it is reached without one until the control plane obtains it."
                    );
                }
                Err(error) => tracing::error!(?owner, %error,
                    "An upstream credential cannot be opened; its upstream is reached without it."),
            }
        }
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &SecretsKey, header: &str, value: &str) -> CredentialRow {
        let sealed = key.seal(STATIC_HEADER, json!({ "value": value }).to_string().as_bytes()).expect("seal");
        CredentialRow {
            id: Uuid::nil(),
            server_id: Some(Uuid::nil()),
            instance_id: None,
            kind: STATIC_HEADER.into(),
            config: json!({ "header": header }),
            sealed,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn opens_into_the_proxy_form_and_hides_the_secret_elsewhere() {
        let key = SecretsKey::from_bytes(&[3u8; 32]).expect("key");
        let row = row(&key, "X-API-Key", "s3cret-value");
        let Some(v1::upstream_credential::Kind::StaticHeader(h)) =
            row.open(Some(&key), None).expect("opens").kind
        else {
            panic!("a static header")
        };
        assert_eq!((h.name.as_str(), h.value.as_str()), ("X-API-Key", "s3cret-value"));
        assert_eq!(row.open(None, None), Err(CredentialError::NoKey));
        let other = SecretsKey::from_bytes(&[4u8; 32]).expect("key");
        assert!(matches!(row.open(Some(&other), None), Err(CredentialError::Open(_))));
        let view = serde_json::to_value(row.view()).expect("json");
        assert_eq!(view, json!({"type": "static_header", "header": "X-API-Key"}));
        assert!(!format!("{row:?}").contains("sealed"));
        assert!(!format!("{:?}", SecretInput::New("s3cret-value".into())).contains("s3cret"));
        assert_eq!(serde_json::to_value(UpstreamAuthView::None).expect("json"), json!({"type": "none"}));
    }

    #[test]
    fn matches_compares_the_secret_only_when_one_is_given() {
        let key = SecretsKey::from_bytes(&[3u8; 32]).expect("key");
        let row = row(&key, "X-API-Key", "v1");
        let spec = |header: &str, value: SecretInput| UpstreamAuthSpec::StaticHeader {
            header: header.into(),
            value,
        };
        assert_eq!(row.matches(&spec("X-API-Key", SecretInput::Keep), None), Ok(true));
        assert_eq!(row.matches(&spec("X-API-Key", SecretInput::New("v1".into())), Some(&key)), Ok(true));
        assert_eq!(row.matches(&spec("X-API-Key", SecretInput::New("v2".into())), Some(&key)), Ok(false));
        assert_eq!(row.matches(&spec("X-Other", SecretInput::Keep), None), Ok(false));
        assert_eq!(row.matches(&UpstreamAuthSpec::None, None), Ok(false));
    }
}
