//! RFC 8414 and OpenID discovery metadata, and the JWKS.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::{AuthServer, OAuthError, SCOPES};
use crate::api::AppState;

fn document(server: &AuthServer) -> Value {
    let mut doc = json!({
        "issuer": server.issuer,
        "authorization_endpoint": server.endpoint("/oauth/authorize"),
        "token_endpoint": server.endpoint("/oauth/token"),
        "jwks_uri": server.endpoint("/oauth/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "scopes_supported": SCOPES,
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [super::keys::ALG],
    });
    if server.config.dcr {
        doc["registration_endpoint"] = json!(server.endpoint("/oauth/register"));
    }
    doc
}

fn answer(state: &AppState) -> Result<HttpResponse, OAuthError> {
    let server = state.oauth()?;
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "max-age=300")).json(document(server)))
}

/// `/.well-known/oauth-authorization-server`.
pub async fn authorization_server(state: web::Data<AppState>) -> Result<HttpResponse, OAuthError> {
    answer(&state)
}

/// `/.well-known/openid-configuration`.
pub async fn openid_configuration(state: web::Data<AppState>) -> Result<HttpResponse, OAuthError> {
    answer(&state)
}

/// `/oauth/jwks`: the keys published now.
pub async fn jwks(state: web::Data<AppState>) -> Result<HttpResponse, OAuthError> {
    let keys = &state.oauth()?.keys;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .content_type("application/jwk-set+json")
        .body(keys.jwks().to_string()))
}

/// The authorization server cannot sign without --secrets-key.
pub fn not_configured() -> OAuthError {
    OAuthError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_configured",
        "the authorization server is off: the control plane was started without --secrets-key",
    )
}
