//! Console sessions: who signed in to `/ui`, kept in PostgreSQL (`console_sessions`) so every control-plane
//! replica serves them, and named by a random id in an HttpOnly, SameSite=Strict cookie whose SHA-256 alone
//! is stored. A session is no credential of its own: each request re-checks the admin token, API key or user
//! it was opened with (a deleted key or user, a changed `--admin-token`, ends it at once), and the principal
//! goes through the same extractors, permissions and tenant rules as a bearer credential.
//!
//! CSRF: a request authenticated by the cookie must also carry the session's `X-CSRF-Token` header, which
//! only a page of this origin can read (from `GET /ui/session`) — a cross-site form, image or script
//! cannot set it (403 `csrf_token_required`). Sign-in itself takes JSON only, which a cross-site form cannot
//! send without a CORS preflight the control plane never grants.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::audited::{self, Audit, Target};
use crate::api::{ApiError, AppState, Code};
use crate::auth::cookies::{self, SameSite};
use crate::auth::{self, Principal};
use crate::db::store::{self, console::ConsoleSessionRow};
use crate::oauth::keys::random_token;

/// How a sign-in with a credential is recorded in the audit log.
const SIGN_IN: &str = "POST /ui/session";

/// The session cookie's name (`__Host-` prefixed when served over https).
pub const COOKIE: &str = "mcpgw_console";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in; signing in again starts a new one.
pub const TTL: chrono::Duration = chrono::Duration::hours(8);

/// Who a session names.
pub enum Holder {
    AdminToken([u8; 32]),
    ApiKey(Uuid),
    User(Uuid),
}

impl Holder {
    /// Who may hold a console session: any principal the REST API knows.
    pub fn of(principal: &Principal, state: &AppState) -> Option<Self> {
        match principal {
            Principal::AdminToken => state.admin_token.as_ref().map(|t| Self::AdminToken(t.digest())),
            Principal::ApiKey { id, .. } => Some(Self::ApiKey(*id)),
            Principal::User { id, .. } => Some(Self::User(*id)),
        }
    }
}

fn digest(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Whether the request reached the control plane over https (its cookies then need `Secure`).
fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// `Set-Cookie` for the session id (`max_age` 0 clears it).
fn set_cookie(secure: bool, value: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    cookies::set(COOKIE, value, max_age, SameSite::Strict, secure)
        .ok_or_else(|| ApiError::internal("a cookie value a header cannot hold"))
}

/// The session id the request's cookie carries.
fn session_id(headers: &HeaderMap) -> Option<String> {
    cookies::either(headers, COOKIE)
}

/// Who the session still is, if its holder still exists.
async fn holder(state: &AppState, row: &ConsoleSessionRow) -> Result<Option<Principal>, ApiError> {
    match (row.kind.as_str(), &row.admin_token_digest, row.api_key_id, row.user_id) {
        ("admin_token", Some(digest), _, _) => Ok(state
            .admin_token
            .as_ref()
            .filter(|t| t.digest().as_slice() == digest.as_slice())
            .map(|_| Principal::AdminToken)),
        ("api_key", _, Some(id), _) => auth::api_key(state, id).await,
        ("user", _, _, Some(id)) => auth::user(state, id).await,
        _ => Ok(None),
    }
}

fn invalid() -> ApiError {
    ApiError::new(
        Code::InvalidSession,
        "the console session is unknown or has ended (signed out, expired, or its key or user is gone): sign in again",
    )
}

/// The live session of a request's cookie and who it is; `Ok(None)` without a cookie.
async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(ConsoleSessionRow, Principal)>, ApiError> {
    let Some(id) = session_id(headers) else {
        return Ok(None);
    };
    let mut conn = state.conn().await?;
    let row = store::console::get(&mut conn, &digest(&id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(invalid)?;
    drop(conn);
    let principal = holder(state, &row).await?.ok_or_else(invalid)?;
    Ok(Some((row, principal)))
}

/// For `auth::authenticate`: the principal of a request that has no `Authorization` header but the console's
/// cookie, which must come with the session's CSRF header; `None` without the cookie.
pub async fn principal(state: &AppState, headers: &HeaderMap) -> Option<Result<Principal, ApiError>> {
    session_id(headers)?;
    Some(
        async {
            let (row, principal) = current(state, headers).await?.ok_or_else(invalid)?;
            let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !auth::SecretToken::new(&row.csrf_token).matches(presented) {
                return Err(ApiError::new(
                    Code::CsrfTokenRequired,
                    "this request carries the console's session cookie but not its X-CSRF-Token header",
                ));
            }
            Ok(principal)
        }
        .await,
    )
}

/// What the console shows of a principal.
fn describe(principal: &Principal) -> Value {
    let (kind, name, email) = match principal {
        Principal::AdminToken => ("admin_token", None, None),
        Principal::ApiKey { name, .. } => ("api_key", Some(name.clone()), None),
        Principal::User { email, .. } => ("user", None, email.clone()),
    };
    json!({
        "kind": kind,
        "label": principal.label(),
        "name": name,
        "email": email,
        "tenant": principal.tenant(),
        "admin": principal.is_admin(),
        "platform_admin": principal.admin_tenant() == Some(None),
        "server_owner": principal.is_server_owner(),
    })
}

/// Whether the company-IdP sign-in is offered: the authorization server is on and knows an IdP.
async fn idp_sign_in(state: &AppState) -> bool {
    match state.oauth.as_deref() {
        Some(server) => server.providers(&state.pool).await.is_ok_and(|p| !p.is_empty()),
        None => false,
    }
}

fn body(state: &AppState, principal: &Principal, csrf: &str, expires: DateTime<Utc>, idp: bool) -> Value {
    json!({
        "principal": describe(principal),
        "csrf_token": csrf,
        "expires_at": expires,
        "idp_sign_in": idp,
        "public_url": state.public_url,
    })
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn not_signed_in(message: &str, idp: bool) -> HttpResponse {
    no_store(HttpResponse::Unauthorized().json(json!({
        "error": "not_signed_in",
        "message": message,
        "idp_sign_in": idp,
    })))
}

/// `GET /ui/session`: who is signed in, and the CSRF token the console sends back.
pub async fn get(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let idp = idp_sign_in(&state).await;
    match current(&state, req.headers()).await {
        Ok(Some((row, principal))) => Ok(no_store(HttpResponse::Ok().json(body(
            &state,
            &principal,
            &row.csrf_token,
            row.expires_at,
            idp,
        )))),
        Ok(None) => Ok(not_signed_in("nobody is signed in", idp)),
        Err(e) if e.code() == Code::InvalidSession => Ok(not_signed_in(e.message(), idp)),
        Err(e) => Err(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The bootstrap admin token, an API key, or an access token of the authorization server.
    token: String,
}

/// The audit target of a session: its digest's first 8 bytes (a sign-in and its sign-out share it; the
/// id itself is never recorded).
fn target(digest: &[u8], principal: &Principal) -> Target {
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Target::new("console-session", short, principal.tenant())
}

fn client(req: &HttpRequest) -> Option<String> {
    req.peer_addr().map(|a| a.ip().to_canonical().to_string())
}

/// Opens a session for `holder` (audited as `method`): the answer's body and the cookie to set.
pub async fn open(
    state: &AppState,
    req: &HttpRequest,
    method: &str,
    holder: Holder,
    principal: &Principal,
) -> Result<(HttpResponse, HeaderValue), ApiError> {
    let id = random_token(32);
    let now = Utc::now();
    let mut row = ConsoleSessionRow {
        id_digest: digest(&id),
        kind: String::new(),
        admin_token_digest: None,
        api_key_id: None,
        user_id: None,
        csrf_token: random_token(32),
        created_at: now,
        expires_at: now + TTL,
    };
    match holder {
        Holder::AdminToken(d) => {
            (row.kind, row.admin_token_digest) = ("admin_token".into(), Some(d.to_vec()))
        }
        Holder::ApiKey(key) => (row.kind, row.api_key_id) = ("api_key".into(), Some(key)),
        Holder::User(user) => (row.kind, row.user_id) = ("user".into(), Some(user)),
    }
    let view = json!({"principal": principal.label(), "kind": row.kind, "expires_at": row.expires_at});
    let client = client(req);
    audited::console(principal, method, client.as_deref(), &state.pool, async |conn| {
        store::console::create(conn, &row).await.map_err(ApiError::internal)?;
        Ok(((), Audit::created(target(&row.id_digest, principal), &view)))
    })
    .await?;
    tracing::info!(principal = principal.label(), "Signed in to the console.");
    let idp = idp_sign_in(state).await;
    let response =
        no_store(HttpResponse::Created().json(body(state, principal, &row.csrf_token, row.expires_at, idp)));
    Ok((response, set_cookie(secure(req), &id, TTL.num_seconds().unsigned_abs())?))
}

/// `POST /ui/session` `{"token": …}`: signs in with a credential the REST API accepts.
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    sign_in: web::Json<SignIn>,
) -> Result<HttpResponse, ApiError> {
    let address = req.peer_addr().map(|a| a.ip().to_canonical());
    let principal = match auth::credential(&state, address, sign_in.token.trim()).await {
        Ok(principal) => principal,
        Err(refused) => {
            audited::console_refused(SIGN_IN, client(&req).as_deref(), &state.pool, &refused).await;
            return Err(refused);
        }
    };
    let holder =
        Holder::of(&principal, &state).ok_or_else(|| ApiError::internal("no holder for the admin token"))?;
    let (mut response, cookie) = open(&state, &req, SIGN_IN, holder, &principal).await?;
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `DELETE /ui/session`: signs out (the CSRF header is required, so another site cannot sign one out).
pub async fn delete(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let headers = req.headers();
    let signed_in = match principal(&state, headers).await {
        Some(Ok(principal)) => Some(principal),
        Some(Err(e)) if e.code() == Code::InvalidSession => None,
        Some(Err(e)) => return Err(e),
        None => None,
    };
    if let (Some(id), Some(principal)) = (session_id(headers), signed_in) {
        let digest = digest(&id);
        audited::console(
            &principal,
            "DELETE /ui/session",
            client(&req).as_deref(),
            &state.pool,
            async |conn| {
                store::console::delete(conn, &digest).await.map_err(ApiError::internal)?;
                Ok((
                    (),
                    Audit::deleted(target(&digest, &principal), &json!({"principal": principal.label()})),
                ))
            },
        )
        .await?;
        tracing::info!(principal = principal.label(), "Signed out of the console.");
    }
    let mut response = HttpResponse::build(StatusCode::NO_CONTENT).finish();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(secure(&req), "", 0)?);
    Ok(response)
}
