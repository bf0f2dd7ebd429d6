//! The authorization endpoint, the IdP's callback and the consent page.
//!
//! `/oauth/authorize` checks the client, its exact redirect URI, PKCE (S256 only), the `resource` (RFC 8707:
//! one the gateway serves) and the scopes, stores the request, and sends the user to the company IdP with
//! a single-use state of its own. `/oauth/callback` consumes that state, redeems the IdP's code and records
//! the user; unless this user already approved this client for these scopes, it shows the consent page
//! (confused-deputy rule: consent per user and per client id). The consent form is CSRF-protected by a
//! token held both in a `SameSite=Lax`, `HttpOnly` cookie (`__Host-` over https) and in the form, bound to
//! the stored request; the page cannot be framed. Errors before the client and its redirect URI are known
//! are shown to the user, never redirected (no open redirector); later ones go back to the client with
//! `iss` (RFC 9207) — but a user refused for their tenant (no tenant for them in the ID token, or another
//! one than at their first sign-in) is told why on a page: only they and their administrator can act.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use url::Url;
use uuid::Uuid;

use super::idp::TenantRule;
use super::keys::random_token;
use super::{
    AuthServer, CODE_TTL, IdentityProvider, OAuthError, Params, REQUEST_TTL, SCOPES, clients, digest, s256,
};
use crate::api::AppState;
use crate::auth::cookies::{self, SameSite};
use crate::db::store::oauth::{self as store, ClientRow, CodeRow, RequestRow};

/// An answer to the user's browser: a page (errors the client must not see) or a redirect.
pub struct Page(HttpResponse);

impl Page {
    /// The response itself, for a handler that adds to it.
    pub fn into_response(self) -> HttpResponse {
        self.0
    }
}

/// The web console's client id: built in and first party, so never registered and never shown a consent
/// page; its requests are made by `/ui/login` itself (`console_sign_in`).
pub const CONSOLE_CLIENT_ID: &str = "mcpgw-console";

/// Starts a console sign-in: the same stored request, IdP round trip and single-use code as a client's
/// `/oauth/authorize`, for the admin API (`<issuer>/api`), sent back to `redirect_uri` (the console's
/// `/ui/callback` on the origin the browser used).
pub async fn console_sign_in(
    state: &AppState,
    redirect_uri: String,
    client_state: String,
    code_challenge: String,
) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let checked = Checked {
        client_id: CONSOLE_CLIENT_ID.to_owned(),
        redirect_uri,
        scope: "mcp".to_owned(),
        state: Some(client_state),
        code_challenge,
        resource: super::admin_resource(&server.issuer),
    };
    begin(state, server, checked).await
}

impl actix_web::Responder for Page {
    type Body = actix_web::body::BoxBody;

    fn respond_to(self, _: &HttpRequest) -> HttpResponse {
        self.0
    }
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Headers of every page: not cached, not framed, no scripts.
fn page(status: StatusCode, title: &str, body: &str, form_action: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{t}</title><style>body{{font:16px system-ui,sans-serif;\
         max-width:36rem;margin:3rem auto;padding:0 1rem}}code{{word-break:break-all}}button{{font-size:1rem;\
         margin-right:1rem;padding:.4rem 1.2rem}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            format!("default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'"),
        ))
        .content_type("text/html; charset=utf-8")
        .body(html)
}

fn error_page(status: StatusCode, message: &str) -> Page {
    Page(page(status, "Sign-in failed", &format!("<p>{}</p>", escape(message)), "'none'"))
}

fn redirect(status: StatusCode, location: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The client's redirect URI with `params` and `iss` added to its query.
fn back_to_client(
    server: &AuthServer,
    redirect_uri: &str,
    params: &[(&str, &str)],
    state: Option<&str>,
) -> String {
    let Ok(mut url) = Url::parse(redirect_uri) else { return redirect_uri.to_owned() };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &server.issuer);
    }
    url.into()
}

fn client_error(
    server: &AuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Page {
    let location =
        back_to_client(server, redirect_uri, &[("error", error), ("error_description", description)], state);
    Page(redirect(StatusCode::FOUND, &location))
}

/// A checked authorization request, before the user signs in.
struct Checked {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    code_challenge: String,
    resource: String,
}

/// `GET /oauth/authorize`.
pub async fn authorize(state: web::Data<AppState>, req: HttpRequest) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let params = match Params::parse(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return Ok(error_page(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let Some(client_id) = params.get("client_id") else {
        return Ok(error_page(StatusCode::BAD_REQUEST, "the request names no client_id"));
    };
    let client = match clients::resolve(&state, server, client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return Ok(error_page(StatusCode::BAD_REQUEST, &format!("unknown client {client_id:?}"))),
        Err(e) => return Ok(error_page(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let redirect_uri = match (params.get("redirect_uri"), client.redirect_uris.as_slice()) {
        // Exact string comparison (no normalisation, no prefix or pattern matching).
        (Some(given), registered) if registered.iter().any(|r| r == given) => given.to_owned(),
        (None, [only]) => only.clone(),
        (Some(given), _) => {
            return Ok(error_page(
                StatusCode::BAD_REQUEST,
                &format!("the redirect URI {given:?} is not one client {client_id:?} registered"),
            ));
        }
        (None, _) => {
            return Ok(error_page(StatusCode::BAD_REQUEST, "redirect_uri is required for this client"));
        }
    };
    let client_state = params.get("state").map(str::to_owned);
    let fail = |error: &str, description: &str| {
        client_error(server, &redirect_uri, client_state.as_deref(), error, description)
    };
    match check(server, &params, &client, &redirect_uri) {
        Ok(checked) => {
            begin(&state, server, checked).await.or_else(|e| Ok(fail("server_error", &e.to_string())))
        }
        Err((error, description)) => Ok(fail(error, &description)),
    }
}

fn check(
    server: &AuthServer,
    params: &Params,
    client: &ClientRow,
    redirect_uri: &str,
) -> Result<Checked, (&'static str, String)> {
    if params.get("response_type") != Some("code") {
        return Err(("unsupported_response_type", "only response_type=code is supported".into()));
    }
    let challenge = params
        .get("code_challenge")
        .ok_or(("invalid_request", "PKCE is required: code_challenge is missing".into()))?;
    if params.get("code_challenge_method") != Some("S256") {
        return Err(("invalid_request", "code_challenge_method must be S256".into()));
    }
    if challenge.len() != 43
        || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err((
            "invalid_request",
            "code_challenge is not an S256 challenge (43 base64url characters)".into(),
        ));
    }
    let resource = params.get("resource").ok_or((
        "invalid_target",
        format!("resource is required (RFC 8707): the MCP endpoint, e.g. {}/mcp/<server>", server.public_url),
    ))?;
    if !server.known_resource(resource) {
        return Err(("invalid_target", format!("{resource:?} is not a resource this gateway serves")));
    }
    let scope = match params.get("scope") {
        None => "mcp".to_owned(),
        Some(scope) => {
            let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(unknown) = scopes.iter().find(|s| !SCOPES.contains(s)) {
                return Err((
                    "invalid_scope",
                    format!("scope {unknown:?} is not offered (offered: {})", SCOPES.join(" ")),
                ));
            }
            scopes.join(" ")
        }
    };
    Ok(Checked {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: params.get("state").map(str::to_owned),
        code_challenge: challenge.to_owned(),
        resource: resource.to_owned(),
    })
}

/// Stores the request and sends the user to the IdP; with several IdPs, first to a page to choose one.
async fn begin(state: &AppState, server: &AuthServer, checked: Checked) -> Result<Page, OAuthError> {
    let providers = server.providers(&state.pool).await?;
    let now = Utc::now();
    let mut row = RequestRow {
        id: random_token(24),
        idp_state_digest: None,
        idp_name: String::new(),
        idp_nonce: random_token(16),
        idp_verifier: random_token(48),
        client_id: checked.client_id,
        redirect_uri: checked.redirect_uri.clone(),
        scope: checked.scope,
        client_state: checked.state.clone(),
        code_challenge: checked.code_challenge,
        resource: checked.resource,
        user_id: None,
        csrf_digest: None,
        created_at: now,
        expires_at: now + REQUEST_TTL,
    };
    match providers.as_slice() {
        [] => Ok(client_error(
            server,
            &checked.redirect_uri,
            checked.state.as_deref(),
            "temporarily_unavailable",
            "no identity provider is configured for sign-in (--oidc-issuer or /api/v1/identity-providers)",
        )),
        [only] => {
            let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
            store::create_request(&mut conn, &row).await.map_err(OAuthError::server_error)?;
            drop(conn);
            to_idp(state, server, only, row).await
        }
        several => {
            // The choice comes back from this browser only: a cookie binds it to the request.
            let token = random_token(32);
            row.csrf_digest = Some(digest(&token));
            let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
            store::create_request(&mut conn, &row).await.map_err(OAuthError::server_error)?;
            let action = escape(&server.endpoint("/oauth/login"));
            let forms: String = several
                .iter()
                .map(|idp| {
                    format!(
                        "<form method=\"get\" action=\"{action}\"><input type=\"hidden\" name=\"request\" \
                         value=\"{id}\"><input type=\"hidden\" name=\"idp\" value=\"{name}\">\
                         <button type=\"submit\">{name}</button> <small>{issuer}</small></form>",
                        id = escape(&row.id),
                        name = escape(&idp.name),
                        issuer = escape(idp.issuer()),
                    )
                })
                .collect();
            let mut response = page(StatusCode::OK, "Sign in with", &forms, "'self' *");
            response.headers_mut().append(header::SET_COOKIE, cookie(server, LOGIN_COOKIE, &token)?);
            Ok(Page(response))
        }
    }
}

/// Sends the user of stored request `row` to `idp` with a fresh single-use state.
async fn to_idp(
    state: &AppState,
    server: &AuthServer,
    idp: &IdentityProvider,
    row: RequestRow,
) -> Result<Page, OAuthError> {
    let idp_state = random_token(32);
    let url = match idp
        .authorization_url(&server.callback_url(), &idp_state, &row.idp_nonce, &s256(&row.idp_verifier))
        .await
    {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(idp = idp.name, error = %e, "Cannot send a user to the identity provider.");
            let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
            store::delete_request(&mut conn, &row.id).await.map_err(OAuthError::server_error)?;
            return Ok(client_error(
                server,
                &row.redirect_uri,
                row.client_state.as_deref(),
                "temporarily_unavailable",
                &e.to_string(),
            ));
        }
    };
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    store::start_login(&mut conn, &row.id, &idp.name, &digest(&idp_state))
        .await
        .map_err(OAuthError::server_error)?;
    Ok(Page(redirect(StatusCode::FOUND, url.as_str())))
}

/// `GET /oauth/login?request=..&idp=..`: the IdP chosen on the sign-in page.
pub async fn login(state: web::Data<AppState>, req: HttpRequest) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let params = Params::parse(req.query_string().as_bytes())?;
    let (id, name) = (params.require("request")?, params.require("idp")?);
    let Some(token) = cookie_token(&req, server, LOGIN_COOKIE) else {
        return Ok(error_page(StatusCode::FORBIDDEN, "this sign-in was not started in this browser"));
    };
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let Some(row) =
        store::take_choice(&mut conn, id, &digest(&token)).await.map_err(OAuthError::server_error)?
    else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown, expired or already under way",
        ));
    };
    drop(conn);
    let providers = server.providers(&state.pool).await?;
    let Some(idp) = providers.iter().find(|p| p.name == name) else {
        return Ok(error_page(StatusCode::BAD_REQUEST, &format!("no identity provider is named {name:?}")));
    };
    to_idp(&state, server, idp, row).await
}

/// The consent form's cookie, and the one that binds an IdP choice to the browser that started it.
const CONSENT_COOKIE: &str = "mcpgw_consent";
const LOGIN_COOKIE: &str = "mcpgw_login";

/// `Set-Cookie` for a short-lived sign-in cookie (SameSite=Lax: the IdP's redirect back must carry it).
fn cookie(server: &AuthServer, base: &str, value: &str) -> Result<header::HeaderValue, OAuthError> {
    let secure = server.issuer.starts_with("https://");
    cookies::set(base, value, REQUEST_TTL.as_secs(), SameSite::Lax, secure)
        .ok_or_else(|| OAuthError::server_error("a cookie value a header cannot hold"))
}

/// `GET /oauth/callback`: the user is back from the IdP.
pub async fn callback(state: web::Data<AppState>, req: HttpRequest) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let params = match Params::parse(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return Ok(error_page(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let Some(idp_state) = params.get("state") else {
        return Ok(error_page(StatusCode::BAD_REQUEST, "the identity provider's answer has no state"));
    };
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let Some(request) =
        store::take_by_idp_state(&mut conn, &digest(idp_state)).await.map_err(OAuthError::server_error)?
    else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "this sign-in is unknown, expired or already used: start again from your application",
        ));
    };
    drop(conn);
    let fail = |error: &str, description: &str| {
        client_error(server, &request.redirect_uri, request.client_state.as_deref(), error, description)
    };
    if let Some(error) = params.get("error") {
        let description = params.get("error_description").unwrap_or(error);
        return Ok(fail("access_denied", &format!("the identity provider answered {error}: {description}")));
    }
    let Some(code) = params.get("code") else {
        return Ok(fail("access_denied", "the identity provider's answer has no code"));
    };
    let providers = server.providers(&state.pool).await?;
    let Some(idp) = providers.iter().find(|i| i.name == request.idp_name) else {
        return Ok(fail("server_error", "the identity provider of this sign-in is no longer configured"));
    };
    let mut login =
        match idp.finish(code, &server.callback_url(), &request.idp_verifier, &request.idp_nonce).await {
            Ok(login) => login,
            Err(e) => {
                tracing::warn!(idp = idp.name, error = %e, "A sign-in failed at the identity provider.");
                return Ok(fail("access_denied", &e.to_string()));
            }
        };
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    // The `--oidc-*` IdP puts everyone in `default`; a registered one follows its tenant rule, read now so
    // an IdP removed meanwhile signs nobody in (rather than into `default`).
    let rule = if server.flag_idp.as_ref().is_some_and(|flag| Arc::ptr_eq(flag, idp)) {
        TenantRule::default()
    } else {
        match store::identity_provider_named(&mut conn, &idp.name).await.map_err(OAuthError::server_error)? {
            Some(row) => TenantRule::from(&row),
            None => {
                return Ok(fail(
                    "server_error",
                    "the identity provider of this sign-in is no longer configured",
                ));
            }
        }
    };
    login.tenant_id = match rule.tenant(&login.claims) {
        Ok(tenant) => tenant,
        Err(why) => {
            tracing::warn!(idp = idp.name, why, "A sign-in was refused: no tenant for the user.");
            return Ok(error_page(
                StatusCode::FORBIDDEN,
                &format!("You cannot sign in through {}: {why}.", idp.name),
            ));
        }
    };
    let user = match store::record_login(&mut conn, &login).await.map_err(OAuthError::server_error)? {
        Ok(user) => user,
        Err(tenant) => {
            tracing::warn!(
                idp = idp.name,
                tenant,
                claimed = login.tenant_id,
                "A sign-in was refused: the user belongs to another tenant."
            );
            return Ok(error_page(
                StatusCode::FORBIDDEN,
                &format!(
                    "Your account belongs to tenant {tenant:?}, but {} now places you in tenant {:?}. A user's \
                     tenant is fixed at the first sign-in: ask an administrator.",
                    idp.name, login.tenant_id
                ),
            ));
        }
    };
    if login.groups_overage {
        tracing::warn!(user = %user.id, "The identity provider left out the user's groups (group overage): only the groups in the token are known.");
    }
    tracing::info!(user = %user.id, idp = idp.name, client_id = request.client_id, "A user signed in.");
    let requested: Vec<String> = request.scope.split(' ').map(str::to_owned).collect();
    let approved =
        store::consent(&mut conn, user.id, &request.client_id).await.map_err(OAuthError::server_error)?;
    let first_party = request.client_id == CONSOLE_CLIENT_ID;
    if first_party || approved.is_some_and(|scopes| requested.iter().all(|s| scopes.contains(s))) {
        store::delete_request(&mut conn, &request.id).await.map_err(OAuthError::server_error)?;
        return issue_code(&mut conn, server, &request, user.id).await;
    }
    let csrf = random_token(32);
    store::await_consent(&mut conn, &request.id, user.id, &digest(&csrf))
        .await
        .map_err(OAuthError::server_error)?;
    let location = format!("{}?request={}", server.endpoint("/oauth/consent"), request.id);
    let mut response = redirect(StatusCode::SEE_OTHER, &location);
    response.headers_mut().append(header::SET_COOKIE, cookie(server, CONSENT_COOKIE, &csrf)?);
    Ok(Page(response))
}

async fn issue_code(
    conn: &mut diesel_async::AsyncPgConnection,
    server: &AuthServer,
    request: &RequestRow,
    user_id: Uuid,
) -> Result<Page, OAuthError> {
    let code = random_token(32);
    let row = CodeRow {
        code_digest: digest(&code),
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        user_id,
        scope: request.scope.clone(),
        resource: request.resource.clone(),
        code_challenge: request.code_challenge.clone(),
        family_id: Uuid::new_v4(),
        expires_at: Utc::now() + CODE_TTL,
        used_at: None,
    };
    store::create_code(conn, &row).await.map_err(OAuthError::server_error)?;
    let location =
        back_to_client(server, &request.redirect_uri, &[("code", &code)], request.client_state.as_deref());
    Ok(Page(redirect(StatusCode::SEE_OTHER, &location)))
}

/// The value of cookie `base` (its `__Host-` form over https).
fn cookie_token(req: &HttpRequest, server: &AuthServer, base: &str) -> Option<String> {
    cookies::value(req.headers(), &cookies::name(base, server.issuer.starts_with("https://")))
}

/// `GET /oauth/consent?request=...`: what the user is asked to approve.
pub async fn consent_page(state: web::Data<AppState>, req: HttpRequest) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let params = Params::parse(req.query_string().as_bytes())?;
    let id = params.require("request")?;
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let pending = store::pending(&mut conn, id).await.map_err(OAuthError::server_error)?;
    let (Some(request), Some(csrf)) = (pending, cookie_token(&req, server, CONSENT_COOKIE)) else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "this consent request is unknown or expired: start again from your application",
        ));
    };
    if request.csrf_digest.as_deref() != Some(digest(&csrf).as_slice()) {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            "this consent request belongs to another browser session",
        ));
    }
    let client = store::client(&mut conn, &request.client_id).await.map_err(OAuthError::server_error)?;
    let name =
        client.as_ref().and_then(|c| c.client_name.clone()).unwrap_or_else(|| "An application".to_owned());
    let user = match request.user_id {
        Some(id) => store::user(&mut conn, id).await.map_err(OAuthError::server_error)?,
        None => None,
    };
    let who = user.and_then(|u| u.email.or(u.name)).unwrap_or_else(|| "you".to_owned());
    let body = format!(
        "<p><strong>{name}</strong> asks to use MCP servers through this gateway on behalf of <strong>{who}</strong>.</p>\
         <p>Client id: <code>{client_id}</code><br>It will receive the answer at: <code>{redirect}</code><br>\
         Access to: <code>{resource}</code><br>Scopes: <code>{scope}</code></p>\
         <p>Approve only if you started this from that application and trust its redirect address.</p>\
         <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"request\" value=\"{id}\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        name = escape(&name),
        who = escape(&who),
        client_id = escape(&request.client_id),
        redirect = escape(&request.redirect_uri),
        resource = escape(&request.resource),
        scope = escape(&request.scope),
        action = escape(&server.endpoint("/oauth/consent")),
        id = escape(&request.id),
        csrf = escape(&csrf),
    );
    // Browsers apply form-action to the redirect after the POST as well: the client's origin is allowed.
    let client_origin =
        Url::parse(&request.redirect_uri).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let action = if client_origin.starts_with("http") {
        format!("'self' {client_origin}")
    } else {
        "'self' *".to_owned()
    };
    Ok(Page(page(StatusCode::OK, "Allow access?", &body, &action)))
}

/// `POST /oauth/consent`: the user's decision.
pub async fn consent(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<Page, OAuthError> {
    let server = state.oauth()?;
    let params = Params::parse(&body)?;
    let id = params.require("request")?;
    let form_token = params.require("csrf_token")?;
    // Double submit: the token in the form must be the one in this browser's cookie, which a cross-site
    // form cannot send (SameSite=Lax) nor read.
    if cookie_token(&req, server, CONSENT_COOKIE).as_deref() != Some(form_token) {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            "the consent form was not submitted from this gateway's page",
        ));
    }
    let mut conn = state.pool.get().await.map_err(OAuthError::server_error)?;
    let Some(request) =
        store::take_consented(&mut conn, id, &digest(form_token)).await.map_err(OAuthError::server_error)?
    else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "this consent request is unknown, expired or already answered",
        ));
    };
    let Some(user_id) = request.user_id else {
        return Ok(error_page(StatusCode::BAD_REQUEST, "nobody signed in for this request"));
    };
    if params.get("decision") != Some("approve") {
        tracing::info!(user = %user_id, client_id = request.client_id, "A user denied a client.");
        let location = back_to_client(
            server,
            &request.redirect_uri,
            &[("error", "access_denied"), ("error_description", "the user denied access")],
            request.client_state.as_deref(),
        );
        return Ok(Page(redirect(StatusCode::SEE_OTHER, &location)));
    }
    let scopes: Vec<String> = request.scope.split(' ').map(str::to_owned).collect();
    store::grant_consent(&mut conn, user_id, &request.client_id, &scopes)
        .await
        .map_err(OAuthError::server_error)?;
    tracing::info!(user = %user_id, client_id = request.client_id, "A user approved a client.");
    issue_code(&mut conn, server, &request, user_id).await
}
