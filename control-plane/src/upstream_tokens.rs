//! Tokens for upstreams whose credential is `oauth_client_credentials`: the leader obtains one per
//! credential with the client credentials grant at the upstream's authorization server (through the
//! SSRF-guarded client), seals it in `upstream_tokens` and bumps the routing version, so every proxy (and
//! every replica's health checks and discovery) sends it as `Authorization: Bearer`. A token is renewed when
//! 80% of its lifetime has passed, or at once after the credential changed; a failure is recorded and
//! retried after `RETRY_AFTER`, while the last good token stays in use until it expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::db::DbPool;
use crate::db::store::upstream_auth as store;
use crate::hub::RoutingHub;
use crate::jwks::JwksFetcher;
use crate::model::{CredentialRow, UpstreamAuthView, UpstreamTokenRow, token_context};
use crate::secrets::SecretsKey;

/// How often the leader looks for tokens to obtain or renew.
const TICK: Duration = Duration::from_millis(500);
/// How long after a failure the next attempt waits.
const RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(10);
/// Lifetime assumed when the token response has no `expires_in`.
const DEFAULT_LIFETIME: i64 = 3600;

/// Whether `row`'s token must be (re)obtained now.
fn due(row: &CredentialRow, token: Option<&UpstreamTokenRow>, now: DateTime<Utc>) -> bool {
    let Some(token) = token else { return true };
    if token.last_error.is_some() && now - token.last_attempt_at < RETRY_AFTER {
        return false;
    }
    match (token.fetched_at, token.expires_at) {
        (Some(fetched), _) if fetched < row.updated_at => true,
        (Some(fetched), Some(expires)) => now >= fetched + (expires - fetched) * 4 / 5,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Obtains a token for `row`: the sealed token and its expiry, or why not (never containing a secret).
async fn obtain(
    row: &CredentialRow,
    secrets: &SecretsKey,
    fetcher: &JwksFetcher,
) -> Result<(Vec<u8>, Option<DateTime<Utc>>), String> {
    let UpstreamAuthView::OauthClientCredentials { token_url, client_id, scope, resource } = row.view()
    else {
        return Err("not a client credentials credential".into());
    };
    let secret = row.secret(Some(secrets)).map_err(|e| e.to_string())?;
    let client_secret =
        secret.get("client_secret").and_then(Value::as_str).ok_or("no client secret is stored")?;
    let url = Url::parse(&token_url).map_err(|e| format!("token_url: {e}"))?;
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = &scope {
        form.push(("scope", scope));
    }
    if let Some(resource) = &resource {
        form.push(("resource", resource));
    }
    let (status, doc) =
        fetcher.post_form(&url, &form, Some((&client_id, client_secret))).await.map_err(|e| e.to_string())?;
    if !(200..300).contains(&status) {
        let error = doc.get("error").and_then(Value::as_str).unwrap_or("error");
        let description = doc.get("error_description").and_then(Value::as_str).unwrap_or_default();
        return Err(format!("{token_url} answered HTTP {status}: {error} {description}").trim().to_owned());
    }
    let token =
        doc.get("access_token").and_then(Value::as_str).ok_or("the token response has no access_token")?;
    let lifetime = doc.get("expires_in").and_then(Value::as_i64).unwrap_or(DEFAULT_LIFETIME).max(1);
    let sealed =
        secrets.seal(&token_context(row.id), token.as_bytes()).map_err(|_| "cannot seal the token")?;
    Ok((sealed, Some(Utc::now() + chrono::Duration::seconds(lifetime))))
}

/// One pass: obtains every token that is due; whether any was stored.
async fn pass(pool: &DbPool, secrets: &SecretsKey, fetcher: &JwksFetcher) -> Result<bool, String> {
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    let rows = store::client_credentials(&mut conn).await.map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Ok(false);
    }
    let tokens = store::tokens(&mut conn).await.map_err(|e| e.to_string())?;
    drop(conn);
    let now = Utc::now();
    let mut stored = false;
    for row in rows.iter().filter(|r| due(r, tokens.get(&r.id), now)) {
        let outcome = obtain(row, secrets, fetcher).await;
        match &outcome {
            Ok(_) => tracing::info!(credential = %row.id, "Obtained an upstream token (client credentials)."),
            Err(error) => tracing::warn!(credential = %row.id, %error, "Cannot obtain an upstream token."),
        }
        stored |= outcome.is_ok();
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        store::save_token(&mut conn, row.id, outcome).await.map_err(|e| e.to_string())?;
    }
    Ok(stored)
}

/// Runs on every replica and works while it leads (`is_leader`), until `shutdown`.
pub async fn run(
    pool: DbPool,
    hub: Arc<RoutingHub>,
    secrets: SecretsKey,
    fetcher: JwksFetcher,
    is_leader: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !is_leader.load(Ordering::Relaxed) {
            continue;
        }
        match pass(&pool, &secrets, &fetcher).await {
            Ok(true) => {
                if let Err(error) = hub.refresh().await {
                    tracing::warn!(%error, "Cannot publish the new upstream tokens yet.");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "Cannot renew upstream tokens now."),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn renewal_is_due_after_a_change_at_four_fifths_and_not_right_after_a_failure() {
        let now = Utc::now();
        let mins = chrono::Duration::minutes;
        let row = CredentialRow {
            id: Uuid::nil(),
            server_id: Some(Uuid::nil()),
            instance_id: None,
            kind: crate::model::CLIENT_CREDENTIALS.into(),
            config: json!({}),
            sealed: Vec::new(),
            created_at: now - mins(60),
            updated_at: now - mins(60),
        };
        let token = |fetched: DateTime<Utc>,
                     expires: DateTime<Utc>,
                     error: Option<&str>,
                     attempt: DateTime<Utc>| UpstreamTokenRow {
            credential_id: row.id,
            sealed: Some(vec![1]),
            expires_at: Some(expires),
            fetched_at: Some(fetched),
            last_attempt_at: attempt,
            last_error: error.map(str::to_owned),
        };
        assert!(due(&row, None, now), "never obtained");
        assert!(!due(&row, Some(&token(now - mins(10), now + mins(40), None, now)), now), "fresh");
        assert!(due(&row, Some(&token(now - mins(45), now + mins(5), None, now)), now), "at 90% of its life");
        assert!(
            due(&row, Some(&token(now - mins(70), now + mins(40), None, now)), now),
            "fetched before a change"
        );
        let failed =
            token(now - mins(45), now + mins(5), Some("refused"), now - chrono::Duration::seconds(2));
        assert!(!due(&row, Some(&failed), now), "backs off after a failure");
    }
}
