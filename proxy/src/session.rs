//! Stateless session affinity: the `Mcp-Session-Id` a client sees is an AEAD-sealed token naming the
//! instance that holds its session and the upstream's own session id, so any replica with the key routes
//! it to the same instance and restores the upstream id — no shared store. See `proxy/SESSIONS.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Bytes in a session key (AES-256).
pub const KEY_LEN: usize = 32;
/// A random key has ~27 distinct byte values; fewer than this is a pattern, not a key.
const MIN_DISTINCT_BYTES: usize = 12;
/// Token layout version, the first byte of every token.
const FORMAT: u8 = 1;

/// Why a configured key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is neither 64 hex digits nor base64 of {KEY_LEN} bytes")]
    Encoding,
    #[error("decodes to {0} bytes; a session key is {KEY_LEN} random bytes")]
    Length(usize),
    #[error(
        "is too regular to be random (only {0} distinct byte values); generate one with `openssl rand -base64 32`"
    )]
    Weak(usize),
}

/// Parses a key given as 64 hex digits or base64 (standard or URL-safe, padded or not) of 32 bytes.
pub fn parse_key(raw: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let raw = raw.trim();
    let bytes = if raw.len() == 2 * KEY_LEN && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN)
            .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| KeyError::Encoding)?
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|e| e.decode(raw).ok())
            .ok_or(KeyError::Encoding)?
    };
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
    let mut seen = [false; 256];
    key.iter().for_each(|b| seen[usize::from(*b)] = true);
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Err(KeyError::Weak(distinct));
    }
    Ok(key)
}

/// A fresh random key (for development when none is configured).
pub fn generate_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    // The system RNG failing is unrecoverable for any cryptographic use.
    SystemRandom::new().fill(&mut key).expect("system random generator");
    key
}

/// A random 128-bit identifier, hex-encoded.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // See generate_key.
    SystemRandom::new().fill(&mut bytes).expect("system random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a token was refused; every case answers the client 404 so it re-initializes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed session token")]
    Malformed,
    #[error("session token sealed with an unknown key")]
    UnknownKey,
    #[error("session token failed authentication")]
    Forged,
    #[error("session token expired")]
    Expired,
}

/// What a session token carries. Short field names keep tokens short; new fields must be optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Instance holding the upstream session.
    #[serde(rename = "i")]
    pub instance: String,
    /// The upstream's own session id (Streamable HTTP) or message URL (HTTP+SSE).
    #[serde(rename = "u")]
    pub upstream: String,
    /// Issue time, seconds since the epoch.
    #[serde(rename = "t")]
    pub issued: u64,
    /// A `/mcp` session: what the client said in `initialize` (upstream sessions are opened with it).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<ClientHello>,
}

/// What a legacy client declared in `initialize`, kept in its `/mcp` session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// The protocol version agreed.
    #[serde(rename = "v")]
    pub protocol_version: String,
    /// `capabilities` and `clientInfo`, as JSON text.
    #[serde(rename = "c")]
    pub capabilities: String,
    #[serde(rename = "n")]
    pub client_info: String,
}

struct SealingKey {
    id: u8,
    key: LessSafeKey,
}

impl SealingKey {
    fn new(bytes: &[u8; KEY_LEN]) -> Self {
        // The id tells which key sealed a token without trying them all; a clash only costs one extra try.
        let id = ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()[0];
        // A 32-byte key is always valid for AES-256-GCM.
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES key"));
        Self { id, key }
    }
}

/// The current key (seals) and previous keys (still open tokens during a rotation).
pub struct SessionKeys {
    keys: Vec<SealingKey>,
    ttl: Duration,
    rng: SystemRandom,
}

/// What a token is bound to, so a token cannot be replayed on another server, in another role or by
/// another principal: (server id, principal binding). The binding is authenticated data of the seal, so a
/// token presented by anyone but its owner fails to open like a forged one.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `Mcp-Session-Id` of a Streamable HTTP session on this server id, owned by this principal.
    Session(&'a str, &'a str),
    /// `sessionId` of a legacy HTTP+SSE message endpoint on this server id, owned by this principal.
    SseMessage(&'a str, &'a str),
    /// `Mcp-Session-Id` of a `/mcp` session, owned by this principal.
    Aggregate(&'a str),
    /// A `/mcp` list cursor, given to this principal.
    Cursor(&'a str),
}

impl Scope<'_> {
    fn aad(&self) -> Vec<u8> {
        let (role, server, principal) = match self {
            Self::Session(server, principal) => (b"mcp-session:".as_slice(), server, principal),
            Self::SseMessage(server, principal) => (b"sse-message:".as_slice(), server, principal),
            Self::Aggregate(principal) => (b"mcp-aggregate:".as_slice(), &"", principal),
            Self::Cursor(principal) => (b"mcp-cursor:".as_slice(), &"", principal),
        };
        // Server ids hold no newline, so the boundary between the two parts is unambiguous.
        [role, server.as_bytes(), b"\n", principal.as_bytes()].concat()
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SessionKeys {
    /// How long a token stays valid after it was sealed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn new(current: &[u8; KEY_LEN], previous: &[[u8; KEY_LEN]], ttl: Duration) -> Self {
        let keys = std::iter::once(current).chain(previous).map(SealingKey::new).collect();
        Self { keys, ttl, rng: SystemRandom::new() }
    }

    /// Seals `claims` into a token of visible ASCII (base64url).
    pub fn seal(&self, scope: Scope<'_>, instance: &str, upstream: &str) -> String {
        let claims = Claims {
            instance: instance.to_owned(),
            upstream: upstream.to_owned(),
            issued: now(),
            aggregate: None,
        };
        self.seal_claims(scope, &claims)
    }

    /// Seals `claims` (their issue time as given).
    pub fn seal_claims(&self, scope: Scope<'_>, claims: &Claims) -> String {
        let mut payload = serde_json::to_vec(claims).unwrap_or_default();
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // See generate_key: without a working RNG no token can be safe.
        self.rng.fill(&mut nonce).expect("system random generator");
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(scope.aad()),
                &mut payload,
            )
            .expect("payload within AES-GCM limits");
        let mut token = Vec::with_capacity(2 + NONCE_LEN + payload.len());
        token.extend_from_slice(&[FORMAT, key.id]);
        token.extend_from_slice(&nonce);
        token.extend_from_slice(&payload);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Opens a token sealed by any configured key for `scope`, refusing expired ones.
    pub fn open(&self, scope: Scope<'_>, token: &str) -> Result<Claims, TokenError> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| TokenError::Malformed)?;
        if raw.len() < 2 + NONCE_LEN + AES_256_GCM.tag_len() || raw[0] != FORMAT {
            return Err(TokenError::Malformed);
        }
        let (id, nonce, sealed) = (raw[1], &raw[2..2 + NONCE_LEN], &raw[2 + NONCE_LEN..]);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| TokenError::Malformed)?;
        let aad = scope.aad();
        let mut candidates = self.keys.iter().filter(|k| k.id == id).peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let plain = candidates
            .find_map(|k| {
                let mut buf = sealed.to_vec();
                let n = Nonce::assume_unique_for_key(nonce);
                k.key.open_in_place(n, Aad::from(&aad), &mut buf).ok().map(|p| p.to_vec())
            })
            .ok_or(TokenError::Forged)?;
        let claims: Claims = serde_json::from_slice(&plain).map_err(|_| TokenError::Malformed)?;
        if now().saturating_sub(claims.issued) > self.ttl.as_secs() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: [u8; 32], previous: &[[u8; 32]]) -> SessionKeys {
        SessionKeys::new(&current, previous, Duration::from_secs(3600))
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = generate_key();
        // Key ids are one byte: two random keys share one once in 256 draws (then a token of the new key
        // reads as forged rather than of an unknown key), so the test draws a new key whose id differs.
        let new = std::iter::repeat_with(generate_key)
            .find(|k| SealingKey::new(k).id != SealingKey::new(&old).id)
            .expect("an endless supply of keys");
        let before = keys(old, &[]);
        let token = before.seal(Scope::Session("srv", "key:a"), "inst-1", "upstream-abc");
        assert!(token.bytes().all(|b| (0x21..=0x7e).contains(&b)), "visible ASCII only");
        let claims = before.open(Scope::Session("srv", "key:a"), &token).unwrap();
        assert_eq!((claims.instance.as_str(), claims.upstream.as_str()), ("inst-1", "upstream-abc"));
        let rotated = keys(new, &[old]);
        assert_eq!(
            rotated.open(Scope::Session("srv", "key:a"), &token).unwrap(),
            claims,
            "previous keys still open tokens"
        );
        let fresh = rotated.seal(Scope::Session("srv", "key:a"), "i", "u");
        assert_eq!(before.open(Scope::Session("srv", "key:a"), &fresh), Err(TokenError::UnknownKey));
    }

    #[test]
    fn refuses_tampering_truncation_and_other_scopes() {
        let k = keys(generate_key(), &[]);
        let token = k.seal(Scope::Session("srv", "key:a"), "inst-1", "u");
        assert_eq!(
            k.open(Scope::Session("other", "key:a"), &token),
            Err(TokenError::Forged),
            "bound to its server"
        );
        assert_eq!(
            k.open(Scope::SseMessage("srv", "key:a"), &token),
            Err(TokenError::Forged),
            "bound to its role"
        );
        assert_eq!(
            k.open(Scope::Session("srv", "key:b"), &token),
            Err(TokenError::Forged),
            "bound to its principal"
        );
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            k.open(Scope::Session("srv", "key:a"), &URL_SAFE_NO_PAD.encode(&raw)),
            Err(TokenError::Forged)
        );
        assert!(k.open(Scope::Session("srv", "key:a"), &token[..token.len() / 2]).is_err(), "truncated");
        assert_eq!(k.open(Scope::Session("srv", "key:a"), &token[..10]), Err(TokenError::Malformed));
        assert_eq!(k.open(Scope::Session("srv", "key:a"), "not/base64!"), Err(TokenError::Malformed));
        assert_eq!(
            k.open(Scope::Session("srv", "key:a"), "a1b2c3d4-upstream-uuid"),
            Err(TokenError::Malformed)
        );
        let stranger = keys(generate_key(), &[]).seal(Scope::Session("srv", "key:a"), "inst-1", "u");
        assert!(k.open(Scope::Session("srv", "key:a"), &stranger).is_err(), "another deployment's key");
    }

    #[test]
    fn refuses_expired_tokens() {
        let k = SessionKeys::new(&generate_key(), &[], Duration::ZERO);
        let claims =
            Claims { instance: "i".into(), upstream: "u".into(), issued: now() - 10, aggregate: None };
        let mut payload = serde_json::to_vec(&claims).unwrap();
        let nonce = [7u8; NONCE_LEN];
        k.keys[0]
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Scope::Session("s", "key:a").aad()),
                &mut payload,
            )
            .unwrap();
        let token = URL_SAFE_NO_PAD.encode([&[FORMAT, k.keys[0].id][..], &nonce, &payload].concat());
        assert_eq!(k.open(Scope::Session("s", "key:a"), &token), Err(TokenError::Expired));
    }

    #[test]
    fn key_parsing() {
        let key = generate_key();
        assert_eq!(parse_key(&STANDARD.encode(key)), Ok(key));
        assert_eq!(parse_key(&URL_SAFE_NO_PAD.encode(key)), Ok(key));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_key(&hex), Ok(key));
        assert_eq!(parse_key(&STANDARD.encode([0u8; 16])), Err(KeyError::Length(16)));
        assert_eq!(parse_key(&STANDARD.encode([7u8; 32])), Err(KeyError::Weak(1)));
        assert_eq!(parse_key(&"ab".repeat(32)), Err(KeyError::Weak(1)));
        assert_eq!(parse_key("correct horse battery staple"), Err(KeyError::Encoding));
    }
}
