//! Queries of the authorization server: signing keys, clients, users, requests in flight, consents, codes
//! and refresh tokens. Secrets (codes, refresh tokens, client secrets, state and CSRF tokens) are stored as
//! SHA-256 digests only; single use is enforced by one conditional UPDATE, so two concurrent uses cannot
//! both succeed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::bump_version;
use crate::db::schema::{
    identity_providers, oauth_clients, oauth_codes, oauth_consents, oauth_refresh_tokens, oauth_requests,
    oauth_signing_keys, users,
};

/// Serializes signing-key rotation across replicas (transaction-scoped advisory lock).
const ROTATION_LOCK: i64 = 0x6d63_7067_775f_6b31; // "mcpgw_k1"

/// A stored signing key (private part sealed).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = oauth_signing_keys)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    pub private_key: Vec<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
    pub retire_at: Option<DateTime<Utc>>,
}

/// A key to add when rotating.
pub struct NewSigningKey {
    pub kid: String,
    pub alg: String,
    pub private_key: Vec<u8>,
    pub public_jwk: Value,
}

/// The keys still published (not retired), newest first.
pub async fn published_keys(conn: &mut AsyncPgConnection) -> QueryResult<Vec<SigningKeyRow>> {
    oauth_signing_keys::table
        .filter(oauth_signing_keys::retire_at.is_null().or(oauth_signing_keys::retire_at.gt(Utc::now())))
        .select(SigningKeyRow::as_select())
        .order((oauth_signing_keys::created_at.desc(), oauth_signing_keys::kid.desc()))
        .load(conn)
        .await
}

/// Rotates when the newest key is older than `rotate_after` (or there is none): `make` builds the new key,
/// the previous signing keys are retired at `now + overlap`, and keys retired in the past are deleted.
/// Returns whether the published set changed (the routing version is bumped then, so proxies get the new
/// JWKS). Serialized across replicas by an advisory lock.
pub async fn rotate_keys(
    conn: &mut AsyncPgConnection,
    rotate_after: chrono::Duration,
    overlap: chrono::Duration,
    make: impl FnOnce() -> Option<NewSigningKey> + Send,
) -> QueryResult<bool> {
    conn.transaction(async |conn| {
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({ROTATION_LOCK})")).execute(conn).await?;
        let now = Utc::now();
        let purged = diesel::delete(oauth_signing_keys::table.filter(oauth_signing_keys::retire_at.le(now)))
            .execute(conn)
            .await?;
        let newest: Option<DateTime<Utc>> = oauth_signing_keys::table
            .filter(oauth_signing_keys::retire_at.is_null())
            .select(diesel::dsl::max(oauth_signing_keys::created_at))
            .first(conn)
            .await?;
        let due = newest.is_none_or(|created| now - created >= rotate_after);
        let mut changed = purged > 0;
        if due && let Some(key) = make() {
            diesel::update(oauth_signing_keys::table.filter(oauth_signing_keys::retire_at.is_null()))
                .set(oauth_signing_keys::retire_at.eq(now + overlap))
                .execute(conn)
                .await?;
            diesel::insert_into(oauth_signing_keys::table)
                .values((
                    oauth_signing_keys::kid.eq(&key.kid),
                    oauth_signing_keys::alg.eq(&key.alg),
                    oauth_signing_keys::private_key.eq(&key.private_key),
                    oauth_signing_keys::public_jwk.eq(&key.public_jwk),
                    oauth_signing_keys::created_at.eq(now),
                ))
                .execute(conn)
                .await?;
            changed = true;
        }
        if changed {
            bump_version(conn).await?;
        }
        Ok(changed)
    })
    .await
}

/// A client the authorization server knows.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = oauth_clients)]
pub struct ClientRow {
    pub client_id: String,
    pub kind: String,
    pub secret_digest: Option<Vec<u8>>,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub fetched_at: DateTime<Utc>,
}

/// One client by id.
pub async fn client(conn: &mut AsyncPgConnection, client_id: &str) -> QueryResult<Option<ClientRow>> {
    oauth_clients::table.find(client_id).select(ClientRow::as_select()).first(conn).await.optional()
}

/// Stores a client (a metadata document fetched again replaces the cached one).
pub async fn put_client(conn: &mut AsyncPgConnection, row: &ClientRow) -> QueryResult<()> {
    diesel::insert_into(oauth_clients::table)
        .values((
            oauth_clients::client_id.eq(&row.client_id),
            oauth_clients::kind.eq(&row.kind),
            oauth_clients::secret_digest.eq(&row.secret_digest),
            oauth_clients::client_name.eq(&row.client_name),
            oauth_clients::redirect_uris.eq(&row.redirect_uris),
            oauth_clients::metadata.eq(&row.metadata),
            oauth_clients::fetched_at.eq(row.fetched_at),
        ))
        .on_conflict(oauth_clients::client_id)
        .do_update()
        .set((
            oauth_clients::client_name.eq(&row.client_name),
            oauth_clients::redirect_uris.eq(&row.redirect_uris),
            oauth_clients::metadata.eq(&row.metadata),
            oauth_clients::fetched_at.eq(row.fetched_at),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// A person known from a sign-in.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: Uuid,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub tenant_id: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub groups_overage: bool,
    pub claims: Value,
    pub created_at: DateTime<Utc>,
    pub last_login_at: DateTime<Utc>,
}

/// What a sign-in says about a user.
pub struct UserLogin {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub tenant_id: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub groups_overage: bool,
    pub claims: Value,
}

/// Records a sign-in: the user is created on the first one and updated on each. A user's tenant is fixed
/// at the first sign-in: a later one naming another tenant writes nothing and answers `Err` with the
/// user's tenant, so a change at the IdP never moves a user silently.
pub async fn record_login(
    conn: &mut AsyncPgConnection,
    login: &UserLogin,
) -> QueryResult<Result<UserRow, String>> {
    let now = Utc::now();
    let upsert = diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::new_v4()),
            users::issuer.eq(&login.issuer),
            users::subject.eq(&login.subject),
            users::email.eq(&login.email),
            users::name.eq(&login.name),
            users::tenant_id.eq(&login.tenant_id),
            users::roles.eq(&login.roles),
            users::groups.eq(&login.groups),
            users::groups_overage.eq(login.groups_overage),
            users::claims.eq(&login.claims),
            users::last_login_at.eq(now),
        ))
        .on_conflict((users::issuer, users::subject))
        .do_update()
        .set((
            users::email.eq(&login.email),
            users::name.eq(&login.name),
            users::roles.eq(&login.roles),
            users::groups.eq(&login.groups),
            users::groups_overage.eq(login.groups_overage),
            users::claims.eq(&login.claims),
            users::last_login_at.eq(now),
        ));
    // `ON CONFLICT … DO UPDATE … WHERE users.tenant_id = $tenant`: the user of another tenant is left as is.
    let recorded =
        diesel::query_dsl::methods::FilterDsl::filter(upsert, users::tenant_id.eq(&login.tenant_id))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
    if let Some(user) = recorded {
        return Ok(Ok(user));
    }
    // The conflicting row exists, in another tenant (no row is deleted by a sign-in).
    let tenant = users::table
        .filter(users::issuer.eq(&login.issuer))
        .filter(users::subject.eq(&login.subject))
        .select(users::tenant_id)
        .first::<String>(conn)
        .await?;
    Ok(Err(tenant))
}

/// One user by id.
pub async fn user(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<UserRow>> {
    users::table.find(id).select(UserRow::as_select()).first(conn).await.optional()
}

/// The users of `tenant` (every tenant's when `None`), oldest first.
pub async fn users(conn: &mut AsyncPgConnection, tenant: Option<&str>) -> QueryResult<Vec<UserRow>> {
    let mut query = users::table
        .select(UserRow::as_select())
        .order((users::created_at.asc(), users::id.asc()))
        .into_boxed();
    if let Some(tenant) = tenant {
        query = query.filter(users::tenant_id.eq(tenant.to_owned()));
    }
    query.load(conn).await
}

/// An authorization request in flight.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_requests)]
pub struct RequestRow {
    pub id: String,
    pub idp_state_digest: Option<Vec<u8>>,
    pub idp_name: String,
    pub idp_nonce: String,
    pub idp_verifier: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub client_state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub user_id: Option<Uuid>,
    pub csrf_digest: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Stores a new request (and deletes expired ones).
pub async fn create_request(conn: &mut AsyncPgConnection, row: &RequestRow) -> QueryResult<()> {
    diesel::delete(oauth_requests::table.filter(oauth_requests::expires_at.lt(Utc::now())))
        .execute(conn)
        .await?;
    diesel::insert_into(oauth_requests::table).values(row).execute(conn).await.map(drop)
}

/// The request whose IdP state digest is `digest`, consuming that state (a second callback with the same
/// state finds nothing). Expired requests are not returned.
pub async fn take_by_idp_state(
    conn: &mut AsyncPgConnection,
    digest: &[u8],
) -> QueryResult<Option<RequestRow>> {
    diesel::update(
        oauth_requests::table
            .filter(oauth_requests::idp_state_digest.eq(digest))
            .filter(oauth_requests::expires_at.gt(Utc::now())),
    )
    .set(oauth_requests::idp_state_digest.eq(None::<Vec<u8>>))
    .returning(RequestRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Records who signed in for a request and the digest of its consent form's CSRF token.
pub async fn await_consent(
    conn: &mut AsyncPgConnection,
    id: &str,
    user_id: Uuid,
    csrf_digest: &[u8],
) -> QueryResult<usize> {
    diesel::update(oauth_requests::table.find(id))
        .set((oauth_requests::user_id.eq(user_id), oauth_requests::csrf_digest.eq(csrf_digest)))
        .execute(conn)
        .await
}

/// A request waiting for consent (not expired).
pub async fn pending(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<Option<RequestRow>> {
    oauth_requests::table
        .find(id)
        .filter(oauth_requests::expires_at.gt(Utc::now()))
        .filter(oauth_requests::user_id.is_not_null())
        .select(RequestRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Consumes a request waiting for consent if `csrf_digest` is its token's: at most one caller gets it.
pub async fn take_consented(
    conn: &mut AsyncPgConnection,
    id: &str,
    csrf_digest: &[u8],
) -> QueryResult<Option<RequestRow>> {
    diesel::delete(
        oauth_requests::table
            .find(id)
            .filter(oauth_requests::csrf_digest.eq(csrf_digest))
            .filter(oauth_requests::expires_at.gt(Utc::now())),
    )
    .returning(RequestRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Deletes a request (used without consent, or refused).
pub async fn delete_request(conn: &mut AsyncPgConnection, id: &str) -> QueryResult<()> {
    diesel::delete(oauth_requests::table.find(id)).execute(conn).await.map(drop)
}

/// The scopes `user_id` approved for `client_id`, if any.
pub async fn consent(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    client_id: &str,
) -> QueryResult<Option<Vec<String>>> {
    oauth_consents::table
        .find((user_id, client_id))
        .select(oauth_consents::scopes)
        .first(conn)
        .await
        .optional()
}

/// Records that `user_id` approved `client_id` for `scopes`.
pub async fn grant_consent(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    client_id: &str,
    scopes: &[String],
) -> QueryResult<()> {
    diesel::insert_into(oauth_consents::table)
        .values((
            oauth_consents::user_id.eq(user_id),
            oauth_consents::client_id.eq(client_id),
            oauth_consents::scopes.eq(scopes),
        ))
        .on_conflict((oauth_consents::user_id, oauth_consents::client_id))
        .do_update()
        .set((oauth_consents::scopes.eq(scopes), oauth_consents::granted_at.eq(Utc::now())))
        .execute(conn)
        .await
        .map(drop)
}

/// An authorization code (its digest) and what it grants.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_codes)]
pub struct CodeRow {
    pub code_digest: Vec<u8>,
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: Uuid,
    pub scope: String,
    pub resource: String,
    pub code_challenge: String,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// Stores a new code.
pub async fn create_code(conn: &mut AsyncPgConnection, row: &CodeRow) -> QueryResult<()> {
    diesel::insert_into(oauth_codes::table).values(row).execute(conn).await.map(drop)
}

/// What presenting a code or a refresh token found.
#[derive(Debug)]
pub enum Redeemed<T> {
    /// First use: the row, now marked used.
    Fresh(T),
    /// Used before (or revoked): its family has been revoked now.
    Replayed,
    Unknown,
}

/// Marks the code used and returns it; a code used before revokes every refresh token issued from it.
pub async fn redeem_code(conn: &mut AsyncPgConnection, digest: &[u8]) -> QueryResult<Redeemed<CodeRow>> {
    conn.transaction(async |conn| {
        let now = Utc::now();
        let fresh = diesel::update(oauth_codes::table.find(digest).filter(oauth_codes::used_at.is_null()))
            .set(oauth_codes::used_at.eq(now))
            .returning(CodeRow::as_returning())
            .get_result(conn)
            .await
            .optional()?;
        if let Some(row) = fresh {
            return Ok(Redeemed::Fresh(row));
        }
        let family: Option<Uuid> =
            oauth_codes::table.find(digest).select(oauth_codes::family_id).first(conn).await.optional()?;
        match family {
            Some(family) => {
                revoke_family(conn, family).await?;
                Ok(Redeemed::Replayed)
            }
            None => Ok(Redeemed::Unknown),
        }
    })
    .await
}

/// A refresh token (its digest) and what it grants.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = oauth_refresh_tokens)]
pub struct RefreshRow {
    pub token_digest: Vec<u8>,
    pub family_id: Uuid,
    pub client_id: String,
    pub user_id: Uuid,
    pub scope: String,
    pub resource: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a new refresh token.
pub async fn create_refresh(conn: &mut AsyncPgConnection, row: &RefreshRow) -> QueryResult<()> {
    diesel::insert_into(oauth_refresh_tokens::table).values(row).execute(conn).await.map(drop)
}

/// Marks the refresh token used (it is rotated) and returns it; a token used before, or revoked, revokes
/// its whole family (RFC 9700 §4.14.2: the legitimate client and the attacker both lose it).
pub async fn redeem_refresh(
    conn: &mut AsyncPgConnection,
    digest: &[u8],
) -> QueryResult<Redeemed<RefreshRow>> {
    conn.transaction(async |conn| {
        let now = Utc::now();
        let fresh = diesel::update(
            oauth_refresh_tokens::table
                .find(digest)
                .filter(oauth_refresh_tokens::used_at.is_null())
                .filter(oauth_refresh_tokens::revoked_at.is_null()),
        )
        .set(oauth_refresh_tokens::used_at.eq(now))
        .returning(RefreshRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        if let Some(row) = fresh {
            return Ok(Redeemed::Fresh(row));
        }
        let family: Option<Uuid> = oauth_refresh_tokens::table
            .find(digest)
            .select(oauth_refresh_tokens::family_id)
            .first(conn)
            .await
            .optional()?;
        match family {
            Some(family) => {
                revoke_family(conn, family).await?;
                Ok(Redeemed::Replayed)
            }
            None => Ok(Redeemed::Unknown),
        }
    })
    .await
}

async fn revoke_family(conn: &mut AsyncPgConnection, family: Uuid) -> QueryResult<usize> {
    diesel::update(
        oauth_refresh_tokens::table
            .filter(oauth_refresh_tokens::family_id.eq(family))
            .filter(oauth_refresh_tokens::revoked_at.is_null()),
    )
    .set(oauth_refresh_tokens::revoked_at.eq(Utc::now()))
    .execute(conn)
    .await
}

/// A company IdP registered through REST (client secret sealed).
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = identity_providers)]
pub struct IdentityProviderRow {
    pub id: Uuid,
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Vec<u8>,
    pub scopes: String,
    pub created_at: DateTime<Utc>,
    /// The tenant of its users (with `tenant_claim`: of those whose ID token lacks the claim).
    pub tenant_id: Option<String>,
    /// The ID token claim naming each user's tenant.
    pub tenant_claim: Option<String>,
}

/// The registered IdP named `name`.
pub async fn identity_provider_named(
    conn: &mut AsyncPgConnection,
    name: &str,
) -> QueryResult<Option<IdentityProviderRow>> {
    identity_providers::table
        .filter(identity_providers::name.eq(name))
        .select(IdentityProviderRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Every registered IdP, by name.
pub async fn identity_providers(conn: &mut AsyncPgConnection) -> QueryResult<Vec<IdentityProviderRow>> {
    identity_providers::table
        .select(IdentityProviderRow::as_select())
        .order(identity_providers::name.asc())
        .load(conn)
        .await
}

/// Stores a new IdP; `false` when the name is taken.
pub async fn create_identity_provider(
    conn: &mut AsyncPgConnection,
    row: &IdentityProviderRow,
) -> QueryResult<bool> {
    let inserted = diesel::insert_into(identity_providers::table)
        .values(row)
        .on_conflict(identity_providers::name)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(inserted == 1)
}

/// Deletes an IdP; whether it existed.
pub async fn delete_identity_provider(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    Ok(diesel::delete(identity_providers::table.find(id)).execute(conn).await? == 1)
}

/// Records the IdP a request's user is sent to and the digest of the state sent along.
pub async fn start_login(
    conn: &mut AsyncPgConnection,
    id: &str,
    idp_name: &str,
    state_digest: &[u8],
) -> QueryResult<usize> {
    diesel::update(oauth_requests::table.find(id))
        .set((oauth_requests::idp_name.eq(idp_name), oauth_requests::idp_state_digest.eq(state_digest)))
        .execute(conn)
        .await
}

/// A request waiting for its IdP to be chosen, if `csrf_digest` is its browser's cookie; consumes the
/// binding (a choice is made once).
pub async fn take_choice(
    conn: &mut AsyncPgConnection,
    id: &str,
    csrf_digest: &[u8],
) -> QueryResult<Option<RequestRow>> {
    diesel::update(
        oauth_requests::table
            .find(id)
            .filter(oauth_requests::csrf_digest.eq(csrf_digest))
            .filter(oauth_requests::idp_state_digest.is_null())
            .filter(oauth_requests::user_id.is_null())
            .filter(oauth_requests::expires_at.gt(Utc::now())),
    )
    .set(oauth_requests::csrf_digest.eq(None::<Vec<u8>>))
    .returning(RequestRow::as_returning())
    .get_result(conn)
    .await
    .optional()
}
