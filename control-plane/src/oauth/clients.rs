//! Clients: dynamic registration (RFC 7591, `application_type` required as the 2026-07-28 revision asks;
//! `--oauth-dcr false` turns it off) and client ID metadata documents (the client id is an https URL whose
//! document is fetched through the strict SSRF guard — no loopback, private or link-local address —
//! bounded in size and time, and cached).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde_json::{Value, json};
use url::Url;

use super::keys::random_token;
use super::{AuthServer, OAuthError, digest};
use crate::api::AppState;
use crate::db::store::oauth::{self as store, ClientRow};
use crate::jwks::FetchError;

/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
/// How long a fetched metadata document is used before it is fetched again.
const DOCUMENT_TTL: chrono::Duration = chrono::Duration::hours(1);
/// Largest metadata document accepted (serialized).
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

fn invalid_metadata(why: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_client_metadata", why)
}

/// Checks a redirect URI: absolute, no fragment; https, http on a loopback host (native apps, RFC 8252),
/// or a private-use scheme (`com.example.app:/cb`).
fn check_redirect_uri(raw: &str) -> Result<(), OAuthError> {
    let bad = |why: &str| {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_redirect_uri", format!("{raw:?}: {why}"))
    };
    let url = Url::parse(raw).map_err(|_| bad("not an absolute URL"))?;
    if url.fragment().is_some() {
        return Err(bad("a redirect URI has no fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::jwks::secure_or_loopback(&url) => Ok(()),
        "http" => Err(bad("http is allowed for loopback hosts only")),
        "javascript" | "data" | "file" | "vbscript" => Err(bad("not a redirect scheme")),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(bad("use https, http on loopback, or a reverse-domain private-use scheme")),
    }
}

fn strings(doc: &Value, field: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid_metadata(format!("{field} must hold strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid_metadata(format!("{field} must be an array of strings"))),
    }
}

/// The checked metadata shared by both kinds of client: redirect URIs, grant and response types, the
/// token endpoint authentication method.
struct Checked {
    redirect_uris: Vec<String>,
    auth_method: String,
    client_name: Option<String>,
}

fn check_metadata(doc: &Value, allowed_auth: &[&str]) -> Result<Checked, OAuthError> {
    if !doc.is_object() {
        return Err(invalid_metadata("the client metadata must be a JSON object"));
    }
    let redirect_uris = strings(doc, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            format!("redirect_uris must list 1 to {MAX_REDIRECT_URIS} URIs"),
        ));
    }
    redirect_uris.iter().try_for_each(|u| check_redirect_uri(u))?;
    let grants = strings(doc, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    if let Some(g) = grants.iter().find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token")) {
        return Err(invalid_metadata(format!("grant type {g:?} is not supported")));
    }
    let responses = strings(doc, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if responses.iter().any(|r| r != "code") {
        return Err(invalid_metadata("only the response type \"code\" is supported"));
    }
    let auth_method = match doc.get("token_endpoint_auth_method") {
        None => allowed_auth[0].to_owned(),
        Some(Value::String(m)) if allowed_auth.contains(&m.as_str()) => m.clone(),
        Some(other) => {
            return Err(invalid_metadata(format!(
                "token_endpoint_auth_method {other} is not supported here (use one of {allowed_auth:?})"
            )));
        }
    };
    let client_name = doc.get("client_name").and_then(Value::as_str).map(|n| n.chars().take(200).collect());
    Ok(Checked { redirect_uris, auth_method, client_name })
}

/// `POST /oauth/register`.
pub async fn register(state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, OAuthError> {
    let server = state.oauth()?;
    if !server.config.dcr {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "dynamic client registration is turned off here; use a client ID metadata document",
        ));
    }
    let mut doc: Value =
        serde_json::from_slice(&body).map_err(|e| invalid_metadata(format!("not JSON: {e}")))?;
    match doc.get("application_type").and_then(Value::as_str) {
        Some("web" | "native") => {}
        Some(other) => {
            return Err(invalid_metadata(format!("application_type {other:?} is neither web nor native")));
        }
        None => return Err(invalid_metadata("application_type is required (\"web\" or \"native\")")),
    }
    let checked = check_metadata(&doc, &["client_secret_basic", "client_secret_post", "none"])?;
    let client_id = format!("mcpgw-{}", random_token(16));
    let secret = (checked.auth_method != "none").then(|| random_token(32));
    let now = Utc::now();
    doc["client_id"] = json!(client_id);
    doc["token_endpoint_auth_method"] = json!(checked.auth_method);
    doc["client_id_issued_at"] = json!(now.timestamp());
    let row = ClientRow {
        client_id: client_id.clone(),
        kind: "registered".into(),
        secret_digest: secret.as_deref().map(digest),
        client_name: checked.client_name,
        redirect_uris: checked.redirect_uris,
        metadata: doc.clone(),
        created_at: now,
        fetched_at: now,
    };
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    store::put_client(&mut conn, &row).await.map_err(OAuthError::server_error)?;
    if let Some(secret) = secret {
        doc["client_secret"] = json!(secret);
        doc["client_secret_expires_at"] = json!(0);
    }
    tracing::info!(client_id, "Registered an OAuth client.");
    Ok(HttpResponse::Created().insert_header(("cache-control", "no-store")).json(doc))
}

/// Whether `client_id` is a client ID metadata document URL.
fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The client named `client_id`: registered, or described by its metadata document (fetched when not
/// cached or stale). `Ok(None)`: no such client.
pub async fn resolve(
    state: &AppState,
    server: &AuthServer,
    client_id: &str,
) -> Result<Option<ClientRow>, OAuthError> {
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let cached = store::client(&mut conn, client_id).await.map_err(OAuthError::server_error)?;
    if !is_document_url(client_id) {
        return Ok(cached.filter(|c| c.kind == "registered"));
    }
    if let Some(row) = cached.filter(|c| Utc::now() - c.fetched_at < DOCUMENT_TTL) {
        return Ok(Some(row));
    }
    drop(conn);
    let row = fetch_document(server, client_id).await?;
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    store::put_client(&mut conn, &row).await.map_err(OAuthError::server_error)?;
    Ok(Some(row))
}

async fn fetch_document(server: &AuthServer, client_id: &str) -> Result<ClientRow, OAuthError> {
    let refuse = |why: String| {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_client", format!("client {client_id:?}: {why}"))
    };
    let url = Url::parse(client_id).map_err(|e| refuse(e.to_string()))?;
    let loopback_http = url.scheme() == "http" && crate::jwks::secure_or_loopback(&url);
    if (url.scheme() != "https" && !loopback_http) || url.path() == "/" || url.fragment().is_some() {
        return Err(refuse("a client ID metadata document URL is https with a path and no fragment".into()));
    }
    let doc = server.documents.get_json(&url).await.map_err(|e| match e {
        FetchError::Refused { why, .. } => refuse(format!("its metadata document address is refused: {why}")),
        other => refuse(format!("its metadata document cannot be fetched: {other}")),
    })?;
    if doc.to_string().len() > MAX_DOCUMENT_BYTES {
        return Err(refuse(format!("the metadata document is larger than {MAX_DOCUMENT_BYTES} bytes")));
    }
    if doc.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(refuse("the document's client_id is not its own URL".into()));
    }
    if doc.get("client_secret").is_some() || doc.get("client_secret_expires_at").is_some() {
        return Err(refuse("a metadata document must not carry a client secret".into()));
    }
    let checked = check_metadata(&doc, &["none"]).map_err(|e| refuse(e.to_string()))?;
    let now = Utc::now();
    Ok(ClientRow {
        client_id: client_id.to_owned(),
        kind: "metadata_document".into(),
        secret_digest: None,
        client_name: checked.client_name,
        redirect_uris: checked.redirect_uris,
        metadata: doc,
        created_at: now,
        fetched_at: now,
    })
}

/// The token endpoint authentication method a client registered.
pub fn auth_method(client: &ClientRow) -> &str {
    client.metadata.get("token_endpoint_auth_method").and_then(Value::as_str).unwrap_or("none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "com.example.app:/oauth",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/relative",
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "myapp:/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_checks() {
        let ok = json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"});
        assert_eq!(check_metadata(&ok, &["none"]).expect("ok").auth_method, "none");
        for bad in [
            json!({"redirect_uris": []}),
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_basic"}),
            json!({"redirect_uris": "https://a.example/cb"}),
        ] {
            assert!(check_metadata(&bad, &["none"]).is_err(), "{bad}");
        }
    }
}
