//! Upstream credential queries, and stdio instances' secret environments (the same table and sealing).
//! Writes run inside the transaction of the server or instance change they belong to (which bumps the
//! routing version); a new secret is sealed here, just before it is written.

use diesel::PgExpressionMethods;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::StoreError;
use crate::db::schema::upstream_credentials as creds;
use crate::db::schema::upstream_tokens;
use crate::model::{
    CLIENT_CREDENTIALS, CredentialIndex, CredentialRow, Owner, STDIO_ENV, SecretInput, UpstreamAuthSpec,
    UpstreamTokenRow,
};
use crate::secrets::SecretsKey;

fn owner_ids(owner: Owner) -> (Option<Uuid>, Option<Uuid>) {
    match owner {
        Owner::Server(id) => (Some(id), None),
        Owner::Instance(id) => (None, Some(id)),
    }
}

/// Makes `owner`'s stored credential what `spec` says: none (deleted), the stored secret kept with new
/// settings, or a new secret sealed with `key`. `what` names the owner in errors ("the server").
pub(crate) async fn write(
    conn: &mut AsyncPgConnection,
    owner: Owner,
    spec: &UpstreamAuthSpec,
    key: Option<&SecretsKey>,
    what: &str,
) -> Result<(), StoreError> {
    let (server_id, instance_id) = owner_ids(owner);
    let mine = || {
        creds::server_id
            .is_not_distinct_from(server_id)
            .and(creds::instance_id.is_not_distinct_from(instance_id))
    };
    let Some(kind) = spec.kind() else {
        diesel::delete(creds::table.filter(mine())).execute(conn).await?;
        return Ok(());
    };
    // No new secret: the request kept the stored one (`SecretInput::Keep`).
    let Some(secret) = spec.new_secret() else {
        let kept = diesel::update(creds::table.filter(mine()).filter(creds::kind.eq(kind)))
            .set((creds::config.eq(spec.config()), creds::updated_at.eq(diesel::dsl::now)))
            .execute(conn)
            .await?;
        if kept == 0 {
            return Err(StoreError::CredentialMissing(what.to_owned()));
        }
        return Ok(());
    };
    let key = key.ok_or(StoreError::NoSecretsKey)?;
    let sealed = key.seal(kind, secret.to_string().as_bytes()).map_err(|_| StoreError::Seal)?;
    diesel::delete(creds::table.filter(mine())).execute(conn).await?;
    diesel::insert_into(creds::table)
        .values((
            creds::id.eq(Uuid::new_v4()),
            creds::server_id.eq(server_id),
            creds::instance_id.eq(instance_id),
            creds::kind.eq(kind),
            creds::config.eq(spec.config()),
            creds::sealed.eq(sealed),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes a stdio instance's stored secret environment what `wanted` says: none (deleted), the stored
/// values kept (`SecretInput::Keep`; nothing is written when the names are the stored ones), or sealed
/// anew with `key` with the new values and the kept ones. A kept name without a stored value (that this
/// control plane can open) is `SecretEnvMissing`.
pub(crate) async fn write_secret_env(
    conn: &mut AsyncPgConnection,
    instance_id: Uuid,
    wanted: &std::collections::BTreeMap<String, SecretInput>,
    key: Option<&SecretsKey>,
) -> Result<(), StoreError> {
    let mine = || creds::instance_id.eq(instance_id);
    if wanted.is_empty() {
        diesel::delete(creds::table.filter(mine())).execute(conn).await?;
        return Ok(());
    }
    let stored: Option<CredentialRow> = creds::table
        .filter(mine())
        .filter(creds::kind.eq(STDIO_ENV))
        .select(CredentialRow::as_select())
        .first(conn)
        .await
        .optional()?;
    let names: Vec<String> = wanted.keys().cloned().collect();
    let keeps = wanted.values().any(|v| matches!(v, SecretInput::Keep));
    if !wanted.values().any(|v| matches!(v, SecretInput::New(_)))
        && stored.as_ref().is_some_and(|row| row.secret_env_names() == names)
    {
        return Ok(());
    }
    let kept = match (&stored, keeps) {
        (Some(row), true) => row.secret_env(Some(key.ok_or(StoreError::NoSecretsKey)?)).unwrap_or_default(),
        _ => Default::default(),
    };
    let mut env = std::collections::BTreeMap::new();
    for (name, input) in wanted {
        let value = match input {
            SecretInput::New(value) => value.clone(),
            SecretInput::Keep => {
                kept.get(name).cloned().ok_or_else(|| StoreError::SecretEnvMissing(name.clone()))?
            }
        };
        env.insert(name.clone(), value);
    }
    let key = key.ok_or(StoreError::NoSecretsKey)?;
    let secret = serde_json::json!({ "env": env });
    let sealed = key.seal(STDIO_ENV, secret.to_string().as_bytes()).map_err(|_| StoreError::Seal)?;
    diesel::delete(creds::table.filter(mine())).execute(conn).await?;
    diesel::insert_into(creds::table)
        .values((
            creds::id.eq(Uuid::new_v4()),
            creds::server_id.eq(None::<Uuid>),
            creds::instance_id.eq(Some(instance_id)),
            creds::kind.eq(STDIO_ENV),
            creds::config.eq(serde_json::json!({ "names": names })),
            creds::sealed.eq(sealed),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every stored credential.
pub async fn all(conn: &mut AsyncPgConnection) -> QueryResult<CredentialIndex> {
    let rows: Vec<CredentialRow> = creds::table.select(CredentialRow::as_select()).load(conn).await?;
    Ok(CredentialIndex::from_rows(rows))
}

/// The credentials of `servers` and of `instances`.
pub async fn of(
    conn: &mut AsyncPgConnection,
    servers: &[Uuid],
    instances: &[Uuid],
) -> QueryResult<CredentialIndex> {
    if servers.is_empty() && instances.is_empty() {
        return Ok(CredentialIndex::default());
    }
    let rows: Vec<CredentialRow> = creds::table
        .filter(creds::server_id.eq_any(servers.to_vec()).or(creds::instance_id.eq_any(instances.to_vec())))
        .select(CredentialRow::as_select())
        .load(conn)
        .await?;
    Ok(CredentialIndex::from_rows(rows))
}

/// The tokens obtained for client credentials credentials, by credential id.
pub async fn tokens(
    conn: &mut AsyncPgConnection,
) -> QueryResult<std::collections::HashMap<Uuid, UpstreamTokenRow>> {
    let rows: Vec<UpstreamTokenRow> =
        upstream_tokens::table.select(UpstreamTokenRow::as_select()).load(conn).await?;
    Ok(rows.into_iter().map(|t| (t.credential_id, t)).collect())
}

/// Every client credentials credential.
pub async fn client_credentials(conn: &mut AsyncPgConnection) -> QueryResult<Vec<CredentialRow>> {
    creds::table
        .filter(creds::kind.eq(CLIENT_CREDENTIALS))
        .select(CredentialRow::as_select())
        .load(conn)
        .await
}

/// Records a token obtained for `credential_id` (sealed, with its expiry) and bumps the routing version so
/// every proxy gets it; or records why it could not be obtained (the last good token stays).
pub async fn save_token(
    conn: &mut AsyncPgConnection,
    credential_id: Uuid,
    outcome: Result<(Vec<u8>, Option<chrono::DateTime<chrono::Utc>>), String>,
) -> QueryResult<()> {
    use diesel_async::AsyncConnection;
    let now = chrono::Utc::now();
    conn.transaction(async |conn| {
        match outcome {
            Ok((sealed, expires_at)) => {
                diesel::insert_into(upstream_tokens::table)
                    .values((
                        upstream_tokens::credential_id.eq(credential_id),
                        upstream_tokens::sealed.eq(&sealed),
                        upstream_tokens::expires_at.eq(expires_at),
                        upstream_tokens::fetched_at.eq(now),
                        upstream_tokens::last_attempt_at.eq(now),
                        upstream_tokens::last_error.eq(None::<String>),
                    ))
                    .on_conflict(upstream_tokens::credential_id)
                    .do_update()
                    .set((
                        upstream_tokens::sealed.eq(&sealed),
                        upstream_tokens::expires_at.eq(expires_at),
                        upstream_tokens::fetched_at.eq(now),
                        upstream_tokens::last_attempt_at.eq(now),
                        upstream_tokens::last_error.eq(None::<String>),
                    ))
                    .execute(conn)
                    .await?;
                super::bump_version(conn).await?;
            }
            Err(error) => {
                diesel::insert_into(upstream_tokens::table)
                    .values((
                        upstream_tokens::credential_id.eq(credential_id),
                        upstream_tokens::last_attempt_at.eq(now),
                        upstream_tokens::last_error.eq(&error),
                    ))
                    .on_conflict(upstream_tokens::credential_id)
                    .do_update()
                    .set((upstream_tokens::last_attempt_at.eq(now), upstream_tokens::last_error.eq(&error)))
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    })
    .await
}
