//! The token endpoint: the authorization code grant (PKCE S256 checked, the code single use — a second use
//! revokes what the first one issued) and the refresh token grant (rotated at every use; a token used twice
//! revokes its family). Access tokens are short-lived ES256 JWTs (RFC 9068 `at+jwt`) whose `aud` is exactly
//! the resource the client asked for.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::keys::random_token;
use super::{AuthServer, OAuthError, Params, clients, digest, s256};
use crate::api::AppState;
use crate::db::store::oauth::{self as store, ClientRow, CodeRow, Redeemed, RefreshRow, UserRow};

/// The audience of tokens for the admin REST API.
pub fn admin_resource(issuer: &str) -> String {
    format!("{issuer}/api")
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

fn invalid_client(description: impl Into<String>) -> OAuthError {
    OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// Client authentication: HTTP Basic, `client_secret` in the form, or none (public clients name themselves
/// with `client_id`). The client must use the method it registered.
async fn authenticate(
    state: &AppState,
    server: &AuthServer,
    req: &HttpRequest,
    params: &Params,
) -> Result<ClientRow, OAuthError> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b64| {
            let decoded = STANDARD
                .decode(b64.trim())
                .map_err(|_| invalid_client("the Basic credentials are not base64"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| invalid_client("the Basic credentials are not UTF-8"))?;
            let (id, secret) =
                text.split_once(':').ok_or_else(|| invalid_client("the Basic credentials have no ':'"))?;
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok::<_, OAuthError>((decode(id), decode(secret)))
        })
        .transpose()?;
    let (client_id, secret, method) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request("use one client authentication method, not two"));
        }
        (Some((id, secret)), None) => (id, Some(secret), "client_secret_basic"),
        (None, Some(secret)) => {
            (params.require("client_id")?.to_owned(), Some(secret.to_owned()), "client_secret_post")
        }
        (None, None) => (params.require("client_id")?.to_owned(), None, "none"),
    };
    if params.get("client_id").is_some_and(|id| id != client_id) {
        return Err(invalid_client("client_id differs from the authenticated client"));
    }
    let client = clients::resolve(state, server, &client_id)
        .await?
        .ok_or_else(|| invalid_client(format!("unknown client {client_id:?}")))?;
    let registered = clients::auth_method(&client);
    if registered != method {
        return Err(invalid_client(format!("this client authenticates with {registered}, not {method}")));
    }
    if let Some(secret) = secret
        && client.secret_digest.as_deref() != Some(digest(&secret).as_slice())
    {
        return Err(invalid_client("the client secret is wrong"));
    }
    Ok(client)
}

/// `POST /oauth/token`.
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let server = state.oauth()?;
    let params = Params::parse(&body)?;
    let grant = params.require("grant_type")?;
    if !matches!(grant, "authorization_code" | "refresh_token") {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {grant:?} is not supported"),
        ));
    }
    let client = authenticate(&state, server, &req, &params).await?;
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let now = Utc::now();
    let (user_id, scope, resource, family, refresh_expires) = if grant == "authorization_code" {
        let code = params.require("code")?;
        let verifier = params.require("code_verifier")?;
        let row =
            redeem_code(&mut conn, &client.client_id, code, verifier, params.get("redirect_uri")).await?;
        check_resource(&params, &row.resource)?;
        (row.user_id, row.scope, row.resource, row.family_id, now + server.config.refresh_token_ttl)
    } else {
        let presented = params.require("refresh_token")?;
        let row = match store::redeem_refresh(&mut conn, &digest(presented))
            .await
            .map_err(OAuthError::server_error)?
        {
            Redeemed::Fresh(row) => row,
            Redeemed::Replayed => {
                tracing::warn!(
                    client_id = client.client_id,
                    "A refresh token was used twice; its family is revoked."
                );
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used or revoked; its family is revoked",
                ));
            }
            Redeemed::Unknown => return Err(OAuthError::invalid_grant("unknown refresh token")),
        };
        if row.client_id != client.client_id {
            return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
        }
        if row.expires_at <= now {
            return Err(OAuthError::invalid_grant("the refresh token has expired"));
        }
        check_resource(&params, &row.resource)?;
        let scope = match params.get("scope") {
            None => row.scope.clone(),
            Some(asked) if asked.split(' ').all(|s| row.scope.split(' ').any(|g| g == s)) => asked.to_owned(),
            Some(_) => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a refresh may only narrow the scopes",
                ));
            }
        };
        // Rotation keeps the family's absolute lifetime: refreshing never extends it.
        (row.user_id, scope, row.resource, row.family_id, row.expires_at)
    };
    let user = store::user(&mut conn, user_id)
        .await
        .map_err(OAuthError::server_error)?
        .ok_or_else(|| OAuthError::invalid_grant("the user no longer exists"))?;
    let roles = gateway_roles(&mut conn, server, &user).await?;
    let (access_token, expires_in) =
        access_token(server, &user, &roles, &client.client_id, &scope, &resource)?;
    let mut answer = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": scope,
    });
    let refreshable = client
        .metadata
        .get("grant_types")
        .and_then(|g| g.as_array())
        .is_some_and(|g| g.iter().any(|t| t == "refresh_token"));
    if refreshable {
        let refresh = random_token(32);
        let row = RefreshRow {
            token_digest: digest(&refresh),
            family_id: family,
            client_id: client.client_id.clone(),
            user_id,
            scope: scope.clone(),
            resource,
            created_at: now,
            expires_at: refresh_expires,
            used_at: None,
            revoked_at: None,
        };
        store::create_refresh(&mut conn, &row).await.map_err(OAuthError::server_error)?;
        answer["refresh_token"] = json!(refresh);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(answer))
}

/// Spends authorization code `code` of `client_id`, checking its expiry, redirect URI and PKCE verifier: the
/// token endpoint's `authorization_code` grant and the console's sign-in (`console::login`) both redeem
/// codes here. A code presented twice revokes what it issued.
pub async fn redeem_code(
    conn: &mut diesel_async::AsyncPgConnection,
    client_id: &str,
    code: &str,
    verifier: &str,
    redirect_uri: Option<&str>,
) -> Result<CodeRow, OAuthError> {
    let row = match store::redeem_code(conn, &digest(code)).await.map_err(OAuthError::server_error)? {
        Redeemed::Fresh(row) => row,
        Redeemed::Replayed => {
            tracing::warn!(client_id, "An authorization code was used twice; what it issued is revoked.");
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens issued for it are revoked",
            ));
        }
        Redeemed::Unknown => return Err(OAuthError::invalid_grant("unknown code")),
    };
    if row.client_id != client_id {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    if row.expires_at <= Utc::now() {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    if redirect_uri != Some(row.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant("redirect_uri differs from the authorization request's"));
    }
    if s256(verifier) != row.code_challenge {
        return Err(OAuthError::invalid_grant("the PKCE code_verifier does not match the code_challenge"));
    }
    Ok(row)
}

fn check_resource(params: &Params, granted: &str) -> Result<(), OAuthError> {
    match params.get("resource") {
        Some(asked) if asked != granted => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("this grant is for {granted:?}, not {asked:?}"),
        )),
        _ => Ok(()),
    }
}

/// The gateway roles of a signed-in user, mapped from what the IdP said at the last sign-in: the custom
/// roles of the user's tenant (fixed at the first sign-in by the IdP's tenant rule) that name one of the
/// user's IdP roles or groups, and `admin` (of that tenant) for members of `--oidc-admin-roles`. None:
/// the proxies treat the user as `user` (every server of the tenant).
async fn gateway_roles(
    conn: &mut diesel_async::AsyncPgConnection,
    server: &AuthServer,
    user: &UserRow,
) -> Result<Vec<String>, OAuthError> {
    let idp: Vec<String> = user.roles.iter().chain(&user.groups).cloned().collect();
    let mut roles = crate::db::store::roles::granted(conn, &user.tenant_id, &idp)
        .await
        .map_err(OAuthError::server_error)?;
    if idp.iter().any(|g| server.config.admin_roles.contains(g)) {
        roles.push("admin".to_owned());
    }
    Ok(roles)
}

/// Signs an access token for `user` holding gateway `roles`; the token and its lifetime in seconds.
fn access_token(
    server: &AuthServer,
    user: &UserRow,
    roles: &[String],
    client_id: &str,
    scope: &str,
    resource: &str,
) -> Result<(String, u64), OAuthError> {
    let signer =
        server.keys.signer().ok_or_else(|| OAuthError::unavailable("no signing key is loaded yet"))?;
    let now = Utc::now().timestamp();
    let ttl = server.config.access_token_ttl.as_secs();
    let claims = AccessClaims {
        iss: server.issuer.clone(),
        sub: user.id.to_string(),
        aud: resource.to_owned(),
        exp: now + ttl as i64,
        iat: now,
        nbf: now,
        jti: Uuid::new_v4().to_string(),
        client_id: client_id.to_owned(),
        scope: scope.to_owned(),
        tenant: user.tenant_id.clone(),
        roles: roles.to_vec(),
        groups: user.groups.clone(),
        email: user.email.clone(),
    };
    let token = signer.sign("at+jwt", &claims).map_err(OAuthError::server_error)?;
    Ok((token, ttl))
}

/// Verifies an access token of this authorization server for the admin API; the user id it names.
pub fn verify_admin_token(server: &AuthServer, token: &str) -> Result<Uuid, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a valid JWT: {e}"))?;
    let kid = header.kid.unwrap_or_default();
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(server.keys.jwks()).map_err(|e| e.to_string())?;
    let jwk = jwks.find(&kid).ok_or("the token is not signed by this control plane")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[server.issuer.as_str()]);
    validation.set_audience(&[admin_resource(&server.issuer)]);
    validation.leeway = 30;
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
        .map_err(|e| format!("the token is not valid here: {e}"))?;
    data.claims.sub.parse().map_err(|_| "the token's subject is not a user".to_owned())
}
