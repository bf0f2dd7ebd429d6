//! The body of `POST /api/v1/api-keys`, and its validation into an `ApiKeySpec`.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::api::servers::valid_tenant;
use crate::api::{ApiError, Code};
use crate::model::{ApiKeySpec, DEFAULT_ROLE, DEFAULT_TENANT, PermissionRule};

/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest role name.
pub const MAX_ROLE_CHARS: usize = 64;
/// Most rules in `permissions`, and most patterns in one rule's list.
pub const MAX_RULES: usize = 256;
pub const MAX_PATTERNS: usize = 256;
/// Longest server name or pattern in a rule.
pub const MAX_PATTERN_CHARS: usize = 512;

/// Body of `POST /api/v1/api-keys`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// What the key is for (1-100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// The key's tenant (1-100 characters of `[A-Za-z0-9._-]`; default `default`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,100}$")]
    pub tenant_id: Option<String>,
    /// `admin`, `server_owner`, `user` (default) or a custom role name of `[a-z0-9_-]{1,64}`. Only `admin`
    /// keys may use this REST API.
    #[serde(default)]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub role: Option<String>,
    /// What the key may use on the proxies (default none besides its role).
    #[serde(default)]
    #[schema(max_items = 256)]
    pub permissions: Option<Vec<PermissionRule>>,
    /// When the key stops working (RFC 3339, in the future); absent: never.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

fn err(code: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl ApiKeyRequest {
    /// Checks every field against `now`; the first problem found is reported.
    pub fn validate(self, now: DateTime<Utc>) -> Result<ApiKeySpec, ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(err(
                Code::InvalidApiKeyName,
                format!("name must be 1-{MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        let tenant_id = match self.tenant_id.as_deref().map(str::trim) {
            None => DEFAULT_TENANT.to_owned(),
            Some(t) if valid_tenant(t) => t.to_owned(),
            Some(t) => {
                return Err(err(
                    Code::InvalidTenant,
                    format!("tenant_id {t:?} must be 1-100 characters of letters, digits, '.', '_' or '-'"),
                ));
            }
        };
        let role = match self.role.as_deref() {
            None => DEFAULT_ROLE.to_owned(),
            Some(r) if valid_role(r) => r.to_owned(),
            Some(r) => {
                return Err(err(
                    Code::InvalidRole,
                    format!(
                        "role {r:?} must be \"admin\", \"server_owner\", \"user\" or a custom role of \
                         1-{MAX_ROLE_CHARS} characters of [a-z0-9_-]"
                    ),
                ));
            }
        };
        let permissions = self.permissions.unwrap_or_default();
        check_permissions(&permissions)?;
        let expires_at = self.expires_at.as_deref().map(|raw| expiry(raw, now)).transpose()?;
        Ok(ApiKeySpec { name: name.to_owned(), tenant_id, role, permissions, expires_at })
    }
}

/// `[a-z0-9_-]{1,64}`: the built-in roles match it too.
pub(crate) fn valid_role(role: &str) -> bool {
    (1..=MAX_ROLE_CHARS).contains(&role.len())
        && role.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(crate) fn check_permissions(rules: &[PermissionRule]) -> Result<(), ApiError> {
    let bad = |why: String| Err(err(Code::InvalidPermissions, why));
    if rules.len() > MAX_RULES {
        return bad(format!("permissions has {} rules; at most {MAX_RULES} are allowed", rules.len()));
    }
    let valid = |p: &str| {
        !p.trim().is_empty() && p.chars().count() <= MAX_PATTERN_CHARS && !p.chars().any(char::is_control)
    };
    for (i, rule) in rules.iter().enumerate() {
        if !valid(&rule.server) {
            return bad(format!(
                "permissions[{i}].server must be a server name or glob of 1-{MAX_PATTERN_CHARS} printable characters"
            ));
        }
        for (field, list) in
            [("tools", &rule.tools), ("prompts", &rule.prompts), ("resources", &rule.resources)]
        {
            let Some(list) = list else { continue };
            if list.len() > MAX_PATTERNS {
                return bad(format!("permissions[{i}].{field} has more than {MAX_PATTERNS} entries"));
            }
            if let Some(j) = list.iter().position(|p| !valid(p)) {
                return bad(format!(
                    "permissions[{i}].{field}[{j}] must be a name or glob of 1-{MAX_PATTERN_CHARS} printable characters"
                ));
            }
        }
    }
    Ok(())
}

fn expiry(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(raw.trim()).map_err(|e| {
        err(
            Code::InvalidExpiresAt,
            format!("expires_at {raw:?} is not an RFC 3339 date-time like \"2030-01-31T12:00:00Z\": {e}"),
        )
    })?;
    let at = at.to_utc();
    if at <= now {
        return Err(err(Code::InvalidExpiresAt, format!("expires_at {raw:?} is not in the future")));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").expect("date").to_utc()
    }

    fn check(body: serde_json::Value) -> Result<ApiKeySpec, Code> {
        let request: ApiKeyRequest = serde_json::from_value(body).map_err(|_| Code::MalformedJson)?;
        request.validate(now()).map_err(|e| e.code())
    }

    #[test]
    fn defaults() {
        let spec = check(json!({"name": " ci "})).expect("valid");
        assert_eq!(
            spec,
            ApiKeySpec {
                name: "ci".into(),
                tenant_id: "default".into(),
                role: "user".into(),
                permissions: vec![],
                expires_at: None,
            }
        );
    }

    #[test]
    fn every_field() {
        let spec = check(json!({
            "name": "deploy bot",
            "tenant_id": "acme",
            "role": "server_owner",
            "permissions": [{"server": "git*", "tools": ["read_*"]}, {"server": "docs", "resources": ["docs://*"]}],
            "expires_at": "2027-01-01T10:00:00+02:00",
        }))
        .expect("valid");
        assert_eq!(spec.role, "server_owner");
        assert_eq!(spec.permissions[0].tools.as_deref(), Some(&["read_*".to_owned()][..]));
        assert_eq!(spec.expires_at.map(|t| t.to_rfc3339()).as_deref(), Some("2027-01-01T08:00:00+00:00"));
        for role in ["admin", "user", "auditor", "team-a_1"] {
            assert!(check(json!({"name": "k", "role": role})).is_ok(), "{role}");
        }
    }

    #[test]
    fn refusals() {
        let long = "x".repeat(101);
        for (body, code) in [
            (json!({"name": ""}), Code::InvalidApiKeyName),
            (json!({"name": "   "}), Code::InvalidApiKeyName),
            (json!({"name": long}), Code::InvalidApiKeyName),
            (json!({"name": "a\u{0}b"}), Code::InvalidApiKeyName),
            (json!({"name": "k", "tenant_id": "a b"}), Code::InvalidTenant),
            (json!({"name": "k", "tenant_id": ""}), Code::InvalidTenant),
            (json!({"name": "k", "role": "Admin"}), Code::InvalidRole),
            (json!({"name": "k", "role": ""}), Code::InvalidRole),
            (json!({"name": "k", "role": "r".repeat(65)}), Code::InvalidRole),
            (json!({"name": "k", "permissions": [{"server": ""}]}), Code::InvalidPermissions),
            (
                json!({"name": "k", "permissions": [{"server": "s", "tools": ["ok", "\u{0}"]}]}),
                Code::InvalidPermissions,
            ),
            (json!({"name": "k", "expires_at": "tomorrow"}), Code::InvalidExpiresAt),
            (json!({"name": "k", "expires_at": "2026-11-30T23:59:59Z"}), Code::InvalidExpiresAt),
            (json!({"name": "k", "expires_at": "2026-12-01T00:00:00Z"}), Code::InvalidExpiresAt),
        ] {
            assert_eq!(check(body.clone()).err(), Some(code), "{body}");
        }
        let many: Vec<_> = (0..=MAX_RULES).map(|_| json!({"server": "s"})).collect();
        assert_eq!(check(json!({"name": "k", "permissions": many})).err(), Some(Code::InvalidPermissions));
    }
}
