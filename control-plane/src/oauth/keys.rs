//! The authorization server's signing keys: ES256 (P-256) key pairs made with ring, the private key sealed
//! with `--secrets-key` in PostgreSQL, the public key published as a JWK. The newest key signs; a rotated
//! key stays published for `access-token-ttl` plus a margin, so every token it signed keeps verifying on
//! every proxy until it expires. Every replica rotates through one advisory-locked transaction and reloads
//! the keys on a timer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::db::DbPool;
use crate::db::store::oauth::{self as store, NewSigningKey};
use crate::hub::RoutingHub;
use crate::secrets::SecretsKey;

/// The one algorithm the authorization server signs with.
pub const ALG: &str = "ES256";
/// Added to a retired key's publication beyond the access-token lifetime (clock skew, slow proxies).
const OVERLAP_MARGIN: Duration = Duration::from_secs(300);

fn seal_context(kid: &str) -> String {
    format!("oauth-signing-key:{kid}")
}

/// A random string of `bytes` random bytes, base64url.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).expect("the OS random number generator works");
    URL_SAFE_NO_PAD.encode(buf)
}

/// Makes a new key pair: its sealed PKCS#8 and public JWK.
pub fn generate(secrets: &SecretsKey) -> Result<NewSigningKey, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "cannot generate a P-256 key".to_owned())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "cannot read the generated key".to_owned())?;
    // SEC1 uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    let (x, y) = point[1..].split_at(32);
    let kid = random_token(12);
    let public_jwk = json!({
        "kty": "EC", "crv": "P-256", "alg": ALG, "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    });
    let private_key =
        secrets.seal(&seal_context(&kid), pkcs8.as_ref()).map_err(|_| "cannot seal the key".to_owned())?;
    Ok(NewSigningKey { kid, alg: ALG.to_owned(), private_key, public_jwk })
}

/// The key that signs now.
pub struct Signer {
    kid: String,
    key: EncodingKey,
}

impl Signer {
    /// Signs `claims` as a JWT (`typ` `at+jwt` for access tokens, RFC 9068).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// The signing keys as this replica knows them.
pub struct Keys {
    pool: DbPool,
    secrets: SecretsKey,
    rotation: Duration,
    overlap: Duration,
    signer: RwLock<Option<Arc<Signer>>>,
    jwks: RwLock<Value>,
}

impl Keys {
    pub fn new(
        pool: DbPool,
        secrets: SecretsKey,
        rotation: Duration,
        access_token_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            secrets,
            rotation,
            overlap: access_token_ttl + OVERLAP_MARGIN,
            signer: RwLock::new(None),
            jwks: RwLock::new(json!({"keys": []})),
        })
    }

    /// The key that signs now; `None` until the first `sync` succeeded.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.signer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Value {
        self.jwks.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rotates when due, then loads the published keys; returns whether the published set changed. A newest
    /// key this replica cannot open (sealed with another `--secrets-key`) is replaced by a new one at once:
    /// the old keys stay published, so the tokens they signed keep verifying until they expire.
    pub async fn sync(&self) -> Result<bool, String> {
        let mut changed = self.rotate(self.rotation).await?;
        let mut rows = self.published().await?;
        let signer = match self.open_newest(&rows) {
            Ok(signer) => signer,
            Err(error) => {
                tracing::error!(%error, "The newest signing key cannot be opened with this --secrets-key; rotating to a new one.");
                changed |= self.rotate(Duration::ZERO).await?;
                rows = self.published().await?;
                self.open_newest(&rows)?
            }
        };
        *self.signer.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(signer));
        *self.jwks.write().unwrap_or_else(|e| e.into_inner()) =
            json!({"keys": rows.iter().map(|r| r.public_jwk.clone()).collect::<Vec<_>>()});
        Ok(changed)
    }

    async fn published(&self) -> Result<Vec<store::SigningKeyRow>, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        store::published_keys(&mut conn).await.map_err(|e| e.to_string())
    }

    fn open_newest(&self, rows: &[store::SigningKeyRow]) -> Result<Signer, String> {
        let newest = rows.first().ok_or("no signing key is published")?;
        let pkcs8 = self
            .secrets
            .open(&seal_context(&newest.kid), &newest.private_key)
            .map_err(|e| format!("signing key {}: {e}", newest.kid))?;
        Ok(Signer { kid: newest.kid.clone(), key: EncodingKey::from_ec_der(&pkcs8) })
    }

    /// Makes a new key when the newest is `rotate_after` old (or there is none); whether the set changed.
    pub async fn rotate(&self, rotate_after: Duration) -> Result<bool, String> {
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let to_chrono = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut failure = None;
        let changed = store::rotate_keys(&mut conn, to_chrono(rotate_after), to_chrono(self.overlap), || {
            generate(&self.secrets).map_err(|e| failure = Some(e)).ok()
        })
        .await
        .map_err(|e| e.to_string())?;
        match failure {
            Some(why) => Err(why),
            None => Ok(changed),
        }
    }

    /// The kid of the key that signs now.
    pub fn signing_kid(&self) -> Option<String> {
        self.signer().map(|s| s.kid.clone())
    }

    /// Syncs every `interval` (at most a minute, so a rotation by another replica is seen soon) and
    /// refreshes the routing table when the published set changed here.
    pub async fn run(self: Arc<Self>, hub: Arc<RoutingHub>, shutdown: CancellationToken) {
        let interval = (self.rotation / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match self.sync().await {
                Ok(true) => {
                    tracing::info!("Rotated the authorization server's signing key.");
                    if let Err(error) = hub.refresh().await {
                        tracing::warn!(%error, "Cannot publish the rotated signing keys yet.");
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "Cannot sync the authorization server's signing keys."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_tokens_their_jwk_verifies() {
        let secrets = SecretsKey::from_bytes(&[7u8; 32]).expect("key");
        let key = generate(&secrets).expect("generate");
        let pkcs8 = secrets.open(&seal_context(&key.kid), &key.private_key).expect("open");
        assert!(secrets.open("oauth-signing-key:other", &key.private_key).is_err(), "bound to its kid");
        let signer = Signer { kid: key.kid.clone(), key: EncodingKey::from_ec_der(&pkcs8) };
        let token =
            signer.sign("at+jwt", &json!({"sub": "u", "aud": "x", "exp": 4_000_000_000u64})).expect("sign");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk.clone()).expect("jwk");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["x"]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key"),
            &validation,
        )
        .expect("verifies");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(crate::jwks::check_jwks(&json!({"keys": [key.public_jwk]})), Ok(1));
    }
}
