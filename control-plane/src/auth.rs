//! Who may call: configured bearer secrets (`--admin-token`, `--proxy-token`), the caller of a REST request
//! (`authenticate` middleware, before any extractor) and the extractors `/api/v1` handlers take, one per
//! permission: `Admin`, `PlatformAdmin`, and for servers `ServerReader` and `ServerManager` (`servers`).

use std::fmt;
use std::future::{Ready, ready};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use chrono::Utc;
use mcpgw_proto::validate::{API_KEY_PREFIX, api_key_digest};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::{ApiError, AppState, Code};
use crate::db::store;
use crate::model::{ADMIN_ROLE, ApiKeyRow, DEFAULT_TENANT};

/// The role of API keys that administer every tenant.
pub const PLATFORM_ADMIN_ROLE: &str = "platform_admin";

/// A configured bearer secret, kept only as a SHA-256 digest so comparisons take the same time for any
/// input and the secret itself is never in memory dumps, `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken {
    digest: [u8; 32],
}

impl SecretToken {
    /// The SHA-256 of the token (console sessions opened with it keep it, to end when it changes).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Keeps the digest of `token`.
    pub fn new(token: &str) -> Self {
        Self { digest: sha256(token) }
    }

    /// Whether `candidate` is the token. Both sides are hashed to fixed-length digests and every byte is
    /// compared, so neither the length nor the first differing byte of the secret leaks through timing.
    pub fn matches(&self, candidate: &str) -> bool {
        let other = sha256(candidate);
        let diff = self.digest.iter().zip(other.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(***)")
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive); `None` for any other
/// scheme or an unreadable value.
pub fn bearer(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// Who sent a REST request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap `--admin-token`.
    AdminToken,
    /// An API key that exists and has not expired.
    ApiKey { id: Uuid, name: String, tenant_id: String, role: String },
    /// A user signed in through the authorization server (a token for `<issuer>/api`); an administrator
    /// when the IdP gave them one of `--oidc-admin-roles` as a role or group at their last sign-in: of
    /// every tenant when the user belongs to `default`, else of their own tenant only (an IdP mapped onto
    /// a tenant must not be able to hand out platform rights). `server_owner` when one of those IdP roles
    /// or groups is `server_owner`: then they register servers and manage the ones they registered.
    User { id: Uuid, email: Option<String>, tenant_id: String, admin: bool, server_owner: bool },
}

impl Principal {
    /// Whether this principal may use the admin API.
    pub fn is_admin(&self) -> bool {
        self.admin_tenant().is_some()
    }

    /// What an administrator manages: `Some(None)` every tenant (the bootstrap token, `platform_admin`
    /// keys, users of the `default` tenant in `--oidc-admin-roles`), `Some(Some(t))` tenant `t` only
    /// (`admin` keys, users of another tenant in `--oidc-admin-roles`); `None` for a principal that is no
    /// administrator.
    pub fn admin_tenant(&self) -> Option<Option<&str>> {
        match self {
            Self::AdminToken => Some(None),
            Self::ApiKey { role, .. } if role == PLATFORM_ADMIN_ROLE => Some(None),
            Self::ApiKey { role, tenant_id, .. } if role == ADMIN_ROLE => Some(Some(tenant_id)),
            Self::ApiKey { .. } => None,
            Self::User { admin: false, .. } => None,
            Self::User { tenant_id, .. } if tenant_id == DEFAULT_TENANT => Some(None),
            Self::User { tenant_id, .. } => Some(Some(tenant_id)),
        }
    }

    /// How logs name the principal (never a secret).
    pub fn label(&self) -> String {
        match self {
            Self::AdminToken => "admin-token".to_owned(),
            Self::ApiKey { id, .. } => format!("api-key:{id}"),
            Self::User { id, .. } => format!("user:{id}"),
        }
    }

    /// The owner recorded on the servers this principal registers: its label, stable for as long as the
    /// key or user exists; `None` for the admin token, which anyone holding it shares.
    pub fn owner_label(&self) -> Option<String> {
        match self {
            Self::AdminToken => None,
            Self::ApiKey { .. } | Self::User { .. } => Some(self.label()),
        }
    }

    /// The tenant of an API key or a user; `None` for the admin token.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::AdminToken => None,
            Self::ApiKey { tenant_id, .. } | Self::User { tenant_id, .. } => Some(tenant_id),
        }
    }

    /// Whether this principal holds the `server_owner` role (an API key's role, a user's IdP role or group).
    pub fn is_server_owner(&self) -> bool {
        match self {
            Self::AdminToken => false,
            Self::ApiKey { role, .. } => role == SERVER_OWNER_ROLE,
            Self::User { server_owner, .. } => *server_owner,
        }
    }
}

impl From<ApiKeyRow> for Principal {
    fn from(row: ApiKeyRow) -> Self {
        Self::ApiKey { id: row.id, name: row.name, tenant_id: row.tenant_id, role: row.role }
    }
}

/// What `authenticate` established, kept in the request's extensions for the extractors.
#[derive(Debug, Clone)]
struct Authenticated(Result<Principal, ApiError>);

/// The part of authentication that needs no database.
#[derive(Debug, PartialEq)]
enum Step {
    Done(Result<Principal, ApiError>),
    /// An API key: look its digest up.
    LookUp([u8; 32]),
    /// A JWT: an access token of this control plane's authorization server, for the admin API.
    User(String),
}

const NEEDS_CREDENTIAL: &str =
    "this request needs an `Authorization: Bearer <admin token or admin API key>` header";

fn first_step(token: Option<&SecretToken>, headers: &HeaderMap) -> Step {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Step::Done(Err(ApiError::new(Code::MissingAuthorization, NEEDS_CREDENTIAL)));
    };
    let Some(candidate) = value.to_str().ok().and_then(bearer) else {
        return Step::Done(Err(ApiError::new(
            Code::InvalidAdminToken,
            "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
        )));
    };
    classify(token, candidate)
}

/// What a presented credential is: the admin token, an API key to look up, or an access token.
fn classify(token: Option<&SecretToken>, candidate: &str) -> Step {
    if token.is_some_and(|t| t.matches(candidate)) {
        return Step::Done(Ok(Principal::AdminToken));
    }
    if candidate.starts_with(API_KEY_PREFIX) {
        return Step::LookUp(api_key_digest(candidate));
    }
    if candidate.split('.').count() == 3 {
        return Step::User(candidate.to_owned());
    }
    Step::Done(Err(match token {
        Some(_) => ApiError::new(Code::InvalidAdminToken, "the admin token is not valid"),
        None => ApiError::new(
            Code::AdminTokenNotConfigured,
            "this control plane was started without --admin-token: use an admin API key",
        ),
    }))
}

async fn look_up(state: &AppState, digest: &[u8; 32]) -> Result<Principal, ApiError> {
    let mut conn = state.conn().await?;
    let row = store::api_keys::by_digest(&mut conn, digest).await.map_err(ApiError::internal)?;
    match row {
        Some(row) if !row.is_expired(Utc::now()) => Ok(row.into()),
        _ => Err(ApiError::new(Code::InvalidApiKey, "the API key is not valid: unknown, revoked or expired")),
    }
}

async fn signed_in(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let refused =
        |why: String| ApiError::new(Code::InvalidAdminToken, format!("the access token is refused: {why}"));
    let server = state.oauth.as_deref().ok_or_else(|| refused("the authorization server is off".into()))?;
    let user_id = crate::oauth::verify_admin_token(server, token).map_err(refused)?;
    user(state, user_id).await?.ok_or_else(|| refused("the user no longer exists".into()))
}

/// The principal of user `user_id` as of now (its tenant, and its roles and groups of the last sign-in
/// against `--oidc-admin-roles`); `None` when the user is gone or the authorization server is off.
pub async fn user(state: &AppState, user_id: Uuid) -> Result<Option<Principal>, ApiError> {
    let Some(server) = state.oauth.as_deref() else {
        return Ok(None);
    };
    let mut conn = state.conn().await?;
    let Some(user) = store::oauth::user(&mut conn, user_id).await.map_err(ApiError::internal)? else {
        return Ok(None);
    };
    let admin_roles = &server.config.admin_roles;
    let idp = || user.roles.iter().chain(&user.groups);
    let admin = idp().any(|r| admin_roles.contains(r));
    let server_owner = idp().any(|r| r == SERVER_OWNER_ROLE);
    Ok(Some(Principal::User {
        id: user.id,
        email: user.email,
        tenant_id: user.tenant_id,
        admin,
        server_owner,
    }))
}

/// The API key `id`, unless it was deleted or has expired.
pub async fn api_key(state: &AppState, id: Uuid) -> Result<Option<Principal>, ApiError> {
    let mut conn = state.conn().await?;
    let row = store::api_keys::get(&mut conn, id).await.map_err(ApiError::internal)?;
    Ok(row.filter(|row| !row.is_expired(Utc::now())).map(Principal::from))
}

/// Who `candidate` (the admin token, an API key or an access token of the authorization server) is, as
/// the REST API would take it in a bearer header — the console's sign-in form uses it. A refused
/// credential counts against `client`'s address like a refused header does.
pub async fn credential(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    candidate: &str,
) -> Result<Principal, ApiError> {
    let step = classify(state.admin_token.as_ref(), candidate);
    counted(state, client, |state| finish(state, step)).await
}

/// The database part of authentication, when the credential needs it.
async fn finish(state: &AppState, step: Step) -> Result<Principal, ApiError> {
    match step {
        Step::Done(outcome) => outcome,
        Step::LookUp(digest) => look_up(state, &digest).await,
        Step::User(token) => signed_in(state, &token).await,
    }
}

/// Runs `check` unless `client` has had too many credentials refused lately, and counts its refusal.
async fn counted<'a, F, Fut>(
    state: &'a AppState,
    client: Option<std::net::IpAddr>,
    check: F,
) -> Result<Principal, ApiError>
where
    F: FnOnce(&'a AppState) -> Fut,
    Fut: std::future::Future<Output = Result<Principal, ApiError>>,
{
    if client.is_some_and(|ip| FAILURES.blocked(ip, Instant::now())) {
        return Err(ApiError::new(
            Code::TooManyAuthenticationFailures,
            format!(
                "more than {MAX_FAILURES} refused credentials from this address within {}s; retry later",
                FAILURE_WINDOW.as_secs()
            ),
        ));
    }
    let outcome = check(state).await;
    if let (Some(ip), Err(e)) = (client, &outcome)
        && matches!(e.code(), Code::InvalidAdminToken | Code::InvalidApiKey)
    {
        FAILURES.failed(ip, Instant::now());
    }
    outcome
}

/// Middleware of `/api/v1`: establishes who is calling before any extractor runs. An API key is looked up
/// in the database on every request, so a deleted key stops working at once. Doing it here rather than in
/// the extractor keeps the order of checks: actix polls a handler's extractors together, so an
/// asynchronous `Admin` would let the JSON body be read, and its errors answered, before the credential.
/// A request without an `Authorization` header may carry a console session instead (`console::session`:
/// its cookie and its `X-CSRF-Token` header), checked as freshly as the credential it was opened with.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        let client = req.peer_addr().map(|a| a.ip().to_canonical());
        let outcome = if req.headers().contains_key(header::AUTHORIZATION) {
            let step = first_step(state.admin_token.as_ref(), req.headers());
            counted(state, client, |state| finish(state, step)).await
        } else {
            match crate::console::session::principal(state, req.headers()).await {
                Some(outcome) => outcome,
                None => Err(ApiError::new(Code::MissingAuthorization, NEEDS_CREDENTIAL)),
            }
        };
        if let Ok(principal) = &outcome {
            crate::api::audited::set_principal(principal);
        }
        req.extensions_mut().insert(Authenticated(outcome));
    }
    next.call(req).await
}

/// Refused credentials an address may present within [`FAILURE_WINDOW`] before it is refused unchecked
/// (429 `too_many_authentication_failures`) until the window ends: guessing the admin token or a key
/// costs a client a window per [`MAX_FAILURES`] guesses.
pub const MAX_FAILURES: u32 = 20;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest windows are forgotten first).
const MAX_TRACKED: usize = 10_000;

static FAILURES: Failures = Failures(std::sync::Mutex::new(None));

/// Refused credentials per client address, in fixed windows.
struct Failures(std::sync::Mutex<Option<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>>);

impl Failures {
    fn blocked(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.as_ref()
            .and_then(|m| m.get(&ip))
            .is_some_and(|(since, n)| *n >= MAX_FAILURES && now.duration_since(*since) < FAILURE_WINDOW)
    }

    fn failed(&self, ip: std::net::IpAddr, now: Instant) {
        let mut guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = guard.get_or_insert_with(Default::default);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Proof that the request carries an admin credential: the bootstrap admin token or an API key with the
/// `admin` role. Every `/api/v1` handler takes it first; the handler cannot run without it. Missing or
/// invalid credential: 401; a valid key without the role: 403.
#[derive(Debug, Clone)]
pub struct Admin(Principal);

impl Admin {
    /// Who the admin is (for logs).
    pub fn principal(&self) -> &Principal {
        &self.0
    }

    /// The one tenant this administrator manages; `None` for a platform administrator (every tenant).
    pub fn tenant(&self) -> Option<&str> {
        self.0.admin_tenant().flatten()
    }

    /// Whether this administrator manages `tenant` (a stored `None` is the default tenant).
    pub fn manages(&self, tenant: Option<&str>) -> bool {
        self.tenant().is_none_or(|own| own == tenant.unwrap_or(DEFAULT_TENANT))
    }

    /// The tenant a new object goes to: the one given, else the administrator's own (`default` for a
    /// platform administrator); a tenant administrator naming another tenant is refused (403).
    pub fn tenant_for(&self, given: Option<&str>) -> Result<String, ApiError> {
        tenant_for(self.tenant(), given, "an administrator")
    }

    /// The tenant a read is narrowed to: a tenant administrator's own, whatever was asked (like every
    /// list of the API); for a platform administrator the one asked (`?tenant_id=`), else `None`: every
    /// tenant. Filter with `store::in_tenant`, which counts a server without a tenant as `default`'s.
    pub fn scope(&self, asked: Option<&str>) -> Option<String> {
        self.tenant().or(asked).map(str::to_owned)
    }

    /// Refuses (403) a tenant administrator: the route concerns every tenant.
    pub fn require_platform(&self) -> Result<(), ApiError> {
        match self.tenant() {
            None => Ok(()),
            Some(own) => Err(ApiError::new(
                Code::InsufficientPermissions,
                format!("this route concerns every tenant; an administrator of tenant {own:?} cannot use it"),
            )),
        }
    }

    fn check(outcome: Result<Principal, ApiError>) -> Result<Self, ApiError> {
        let principal = outcome?;
        if principal.is_admin() {
            return Ok(Self(principal));
        }
        let message = match &principal {
            Principal::ApiKey { role, .. } => {
                format!("this API key has the role {role:?}; the admin API needs the \"admin\" role")
            }
            Principal::User { .. } => {
                "this user is not an administrator (none of --oidc-admin-roles among their IdP roles or groups)".to_owned()
            }
            Principal::AdminToken => String::new(),
        };
        Err(ApiError::new(Code::InsufficientPermissions, message))
    }
}

/// Proof that the request carries the credential of an administrator of every tenant: the routes that
/// concern the whole platform (trusted issuers, identity providers, proxies) take it. A tenant
/// administrator gets 403.
#[derive(Debug, Clone)]
pub struct PlatformAdmin(pub Admin);

impl PlatformAdmin {
    /// Who the admin is (for logs).
    pub fn principal(&self) -> &Principal {
        self.0.principal()
    }
}

impl FromRequest for PlatformAdmin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let admin = Admin::from_request(req, payload).into_inner();
        ready(admin.and_then(|a| a.require_platform().map(|()| Self(a))))
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::check(authenticated(req)))
    }
}

/// What `authenticate` established for this request.
fn authenticated(req: &HttpRequest) -> Result<Principal, ApiError> {
    match req.extensions().get::<Authenticated>() {
        Some(Authenticated(outcome)) => outcome.clone(),
        // Fail closed: a route registered outside the authenticated scope.
        None => Err(ApiError::internal(format!("{} has no authentication middleware", req.path()))),
    }
}

/// The tenant a new object of a caller confined to `own` goes to (`None`: every tenant): the one given,
/// else its own (`default` for a platform-wide caller); naming another tenant is refused (403). `who`
/// names the caller in that refusal.
fn tenant_for(own: Option<&str>, given: Option<&str>, who: &str) -> Result<String, ApiError> {
    match (own, given) {
        (Some(own), Some(other)) if own != other => Err(ApiError::new(
            Code::InsufficientPermissions,
            format!("{who} of tenant {own:?} cannot manage tenant {other:?}"),
        )),
        (_, Some(given)) => Ok(given.to_owned()),
        (Some(own), None) => Ok(own.to_owned()),
        (None, None) => Ok(DEFAULT_TENANT.to_owned()),
    }
}

pub mod cookies;
mod servers;
pub use servers::{SERVER_OWNER_ROLE, ServerManager, ServerReader};

#[cfg(test)]
mod tests;
