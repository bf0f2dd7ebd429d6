//! The authorization server's signing keys in PostgreSQL: made on first start, rotated with overlap (the
//! previous key stays published), retired keys purged, a newest key sealed with another `--secrets-key`
//! replaced at once, and the published keys streamed to proxies as the trusted issuer PRM names.

use std::time::Duration;

use mcpgw_control_plane::db::store::oauth as store;
use mcpgw_control_plane::oauth::Keys;
use mcpgw_control_plane::secrets::SecretsKey;
use mcpgw_proto::v1::resource::Kind;
use serde_json::Value;

use crate::support::TestApp;

const HOUR: Duration = Duration::from_secs(3600);

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn keys_are_made_rotated_with_overlap_and_published_to_proxies() {
    let app = TestApp::start().await;
    let keys = Keys::new(app.pool.clone(), TestApp::secrets_key(), 24 * HOUR, HOUR);
    assert!(keys.sync().await.unwrap(), "the first start makes a key");
    assert!(!keys.sync().await.unwrap(), "not due: nothing changes");
    let first = keys.signing_kid().unwrap();
    assert_eq!(kids(&keys.jwks()), std::slice::from_ref(&first));

    assert!(keys.rotate(Duration::ZERO).await.unwrap(), "a forced rotation");
    keys.sync().await.unwrap();
    let second = keys.signing_kid().unwrap();
    assert_ne!(second, first, "the new key signs");
    assert_eq!(kids(&keys.jwks()), [second.clone(), first.clone()], "the old one stays published");
    let mut conn = app.pool.get().await.unwrap();
    let rows = store::published_keys(&mut conn).await.unwrap();
    let retire = rows[1].retire_at.expect("the old key has a retirement time");
    let overlap = retire - rows[1].created_at;
    assert!(
        overlap >= chrono::Duration::minutes(60),
        "published at least for the access-token lifetime: {overlap}"
    );
    assert!(rows[0].retire_at.is_none());
    assert!(!String::from_utf8_lossy(&rows[0].private_key).contains("PRIVATE"), "sealed, not PEM");

    // The hub streams both keys as the authorization server's trusted issuer.
    app.hub.set_own_issuer("https://gw.example".into());
    app.hub.refresh().await.unwrap();
    let table = app.hub.current();
    let issuer = table
        .iter()
        .find_map(|r| match &r.kind {
            Some(Kind::TrustedIssuer(t)) if t.authorization_server => Some(t.clone()),
            _ => None,
        })
        .expect("the authorization server's issuer is in the table");
    assert_eq!(issuer.issuer, "https://gw.example");
    let jwks: Value = serde_json::from_str(&issuer.jwks_json).unwrap();
    assert_eq!(kids(&jwks), [second.clone(), first.clone()]);

    // A key whose overlap ended is purged; one still within its overlap stays.
    let make = || Some(mcpgw_control_plane::oauth::keys::generate(&TestApp::secrets_key()).unwrap());
    store::rotate_keys(&mut conn, chrono::Duration::zero(), chrono::Duration::zero(), make).await.unwrap();
    store::rotate_keys(&mut conn, chrono::Duration::hours(24), chrono::Duration::zero(), || None)
        .await
        .unwrap();
    let left: Vec<String> =
        store::published_keys(&mut conn).await.unwrap().into_iter().map(|r| r.kid).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&second), "retired with no overlap: purged");
    assert_eq!(left[1], first, "still within its overlap: published");
}

#[tokio::test]
async fn a_newest_key_sealed_with_another_secrets_key_is_replaced() {
    let app = TestApp::start().await;
    let before = Keys::new(app.pool.clone(), TestApp::secrets_key(), 24 * HOUR, HOUR);
    before.sync().await.unwrap();
    let old = before.signing_kid().unwrap();
    let other = SecretsKey::from_bytes(&[9u8; 32]).unwrap();
    let after = Keys::new(app.pool.clone(), other, 24 * HOUR, HOUR);
    assert!(after.sync().await.unwrap(), "a new key is made at once");
    let new = after.signing_kid().unwrap();
    assert_ne!(new, old);
    assert_eq!(kids(&after.jwks()), [new, old], "the unreadable key still verifies what it signed");
}
