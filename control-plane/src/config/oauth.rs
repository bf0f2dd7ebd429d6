//! Settings of the authorization server (`--issuer-url`, `--public-url`, `--oidc-*`, token lifetimes).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use url::Url;

use super::{ConfigError, parse_duration};

/// Environment variable of `--issuer-url`.
pub const ENV_ISSUER_URL: &str = "MCPGW_ISSUER_URL";
/// Environment variable of `--public-url` (the proxies' flag of the same name).
pub const ENV_PUBLIC_URL: &str = "MCPGW_PUBLIC_URL";
/// Environment variable of `--oidc-issuer`.
pub const ENV_OIDC_ISSUER: &str = "MCPGW_OIDC_ISSUER";
/// Environment variable of `--oidc-client-id`.
pub const ENV_OIDC_CLIENT_ID: &str = "MCPGW_OIDC_CLIENT_ID";
/// Environment variable of `--oidc-client-secret`.
pub const ENV_OIDC_CLIENT_SECRET: &str = "MCPGW_OIDC_CLIENT_SECRET";
/// Environment variable of `--oidc-scopes`.
pub const ENV_OIDC_SCOPES: &str = "MCPGW_OIDC_SCOPES";
/// Environment variable of `--oidc-admin-roles`.
pub const ENV_OIDC_ADMIN_ROLES: &str = "MCPGW_OIDC_ADMIN_ROLES";
/// Environment variable of `--oauth-dcr`.
pub const ENV_OAUTH_DCR: &str = "MCPGW_OAUTH_DCR";
/// Environment variable of `--access-token-ttl`.
pub const ENV_ACCESS_TOKEN_TTL: &str = "MCPGW_ACCESS_TOKEN_TTL";
/// Environment variable of `--refresh-token-ttl`.
pub const ENV_REFRESH_TOKEN_TTL: &str = "MCPGW_REFRESH_TOKEN_TTL";
/// Environment variable of `--signing-key-rotation`.
pub const ENV_SIGNING_KEY_ROTATION: &str = "MCPGW_SIGNING_KEY_ROTATION";

/// The authorization server's flags.
#[derive(Debug, Clone, Args)]
pub struct OauthSettings {
    /// The authorization server's issuer: the exact `iss` of the tokens it issues and the base of its
    /// metadata (`<issuer>/.well-known/oauth-authorization-server`) and endpoints (`<issuer>/oauth/...`).
    /// Default `http://<--http-addr>`.
    #[arg(long, global = true, env = ENV_ISSUER_URL)]
    pub issuer_url: Option<String>,
    /// Base URL MCP clients use to reach the proxies (the proxies' --public-url): tokens are issued for
    /// `<public-url>/mcp/{server}` and `<public-url>/mcp` only.
    #[arg(long, global = true, env = ENV_PUBLIC_URL, default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// The company IdP users sign in at (any OpenID provider, found by discovery; Entra ID v2 issuers with
    /// a tenant id included). Without it (and without providers added through REST) nobody can sign in.
    #[arg(long, global = true, env = ENV_OIDC_ISSUER)]
    pub oidc_issuer: Option<String>,
    /// The control plane's client id at --oidc-issuer (one pre-registered client; the redirect URI to
    /// register there is `<issuer-url>/oauth/callback`).
    #[arg(long, global = true, env = ENV_OIDC_CLIENT_ID)]
    pub oidc_client_id: Option<String>,
    /// Its client secret.
    #[arg(long, global = true, env = ENV_OIDC_CLIENT_SECRET, hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// Scopes asked of the IdP at sign-in.
    #[arg(long, global = true, env = ENV_OIDC_SCOPES, default_value = "openid email profile")]
    pub oidc_scopes: String,
    /// IdP roles or groups (comma-separated) whose members are administrators of the REST API when they
    /// sign in; none by default.
    #[arg(long, global = true, env = ENV_OIDC_ADMIN_ROLES, value_delimiter = ',')]
    pub oidc_admin_roles: Vec<String>,
    /// Whether clients may register dynamically (RFC 7591) at `<issuer>/oauth/register`.
    #[arg(long, global = true, env = ENV_OAUTH_DCR, default_value_t = true, action = clap::ArgAction::Set)]
    pub oauth_dcr: bool,
    /// Lifetime of the access tokens the authorization server issues.
    #[arg(long, global = true, env = ENV_ACCESS_TOKEN_TTL, default_value = "10m")]
    pub access_token_ttl: String,
    /// Lifetime of a refresh token (each use rotates it).
    #[arg(long, global = true, env = ENV_REFRESH_TOKEN_TTL, default_value = "30d")]
    pub refresh_token_ttl: String,
    /// Age at which a new signing key takes over; the old one stays published until the tokens it signed
    /// have expired.
    #[arg(long, global = true, env = ENV_SIGNING_KEY_ROTATION, default_value = "30d")]
    pub signing_key_rotation: String,
}

/// The company IdP configured by flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcProvider {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: String,
}

/// The validated authorization server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthConfig {
    /// `None`: `http://<bound REST address>`, known once the listener is bound.
    pub issuer: Option<String>,
    /// Without a trailing slash.
    pub public_url: String,
    pub oidc: Option<OidcProvider>,
    pub admin_roles: Vec<String>,
    pub dcr: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub signing_key_rotation: Duration,
}

impl OauthConfig {
    /// The issuer once the REST listener is bound at `http_addr` (serving HTTPS when `tls`).
    pub fn issuer_for(&self, http_addr: SocketAddr, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        self.issuer.clone().unwrap_or_else(|| format!("{scheme}://{http_addr}"))
    }
}

fn invalid(flag: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Oauth { flag, why: why.into() }
}

/// A base URL: http(s), a host, no query or fragment; returned without a trailing slash.
fn base_url(flag: &'static str, raw: &str) -> Result<String, ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| invalid(flag, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(flag, "must be an http(s) URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(flag, "must have no query or fragment"));
    }
    Ok(raw.trim().trim_end_matches('/').to_owned())
}

/// Checks the authorization server settings.
pub fn validate(raw: &OauthSettings) -> Result<OauthConfig, ConfigError> {
    let issuer = match raw.issuer_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(base_url("issuer-url", url)?),
    };
    let public_url = base_url("public-url", &raw.public_url)?;
    let present =
        |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let oidc = match (
        present(&raw.oidc_issuer),
        present(&raw.oidc_client_id),
        present(&raw.oidc_client_secret),
    ) {
        (None, None, None) => None,
        (Some(issuer), Some(client_id), Some(client_secret)) => {
            // The issuer is compared as a string with the IdP's metadata and tokens: kept as given.
            base_url("oidc-issuer", &issuer)?;
            let scopes = raw.oidc_scopes.split_whitespace().collect::<Vec<_>>().join(" ");
            if !scopes.split(' ').any(|s| s == "openid") {
                return Err(invalid("oidc-scopes", "must include `openid`"));
            }
            Some(OidcProvider { issuer, client_id, client_secret, scopes })
        }
        _ => {
            return Err(invalid(
                "oidc-issuer",
                "--oidc-issuer, --oidc-client-id and --oidc-client-secret go together: give all three or none",
            ));
        }
    };
    let day = Duration::from_secs(86_400);
    let second = Duration::from_secs(1);
    let access_token_ttl = parse_duration("access-token-ttl", &raw.access_token_ttl, second, day)?;
    let refresh_token_ttl = parse_duration("refresh-token-ttl", &raw.refresh_token_ttl, second, 365 * day)?;
    let signing_key_rotation =
        parse_duration("signing-key-rotation", &raw.signing_key_rotation, second, 365 * day)?;
    Ok(OauthConfig {
        issuer,
        public_url,
        oidc,
        admin_roles: raw
            .oidc_admin_roles
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect(),
        dcr: raw.oauth_dcr,
        access_token_ttl,
        refresh_token_ttl,
        signing_key_rotation,
    })
}
