//! Secrets at rest: upstream credentials are sealed with AES-256-GCM under `--secrets-key` before they are
//! written, and opened only to stream them to proxies and to present them to upstreams (discovery, health
//! checks). Without the key nothing can be sealed, so credentials are refused rather than stored in clear.
//!
//! A sealed value is `1 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`: the leading version byte leaves
//! room for key rotation, the nonce is random per value (at most a few thousand values are ever sealed
//! under one key, far below the 2^32 bound for random 96-bit nonces), and the credential's kind is the
//! authenticated data, so a sealed payload cannot be replayed as another kind.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes in a key.
pub const KEY_BYTES: usize = 32;
/// First byte of every sealed value written by this format.
const VERSION: u8 = 1;

/// Why `--secrets-key` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--secrets-key must be {KEY_BYTES} bytes written as base64 (openssl rand -base64 32) or as 64 hex characters"
)]
pub struct KeyError;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed value is truncated or of an unknown format")]
    Format,
    #[error("the sealed value does not open with this --secrets-key (another key, or tampered with)")]
    Key,
}

/// The key of `--secrets-key`. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretsKey {
    key: Arc<LessSafeKey>,
}

impl SecretsKey {
    /// Parses 32 bytes given as 64 hex characters or as base64 (standard or URL-safe, padded or not).
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        let raw = raw.trim();
        let bytes = if raw.len() == 2 * KEY_BYTES && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..KEY_BYTES)
                .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| KeyError)?
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(raw).ok())
                .ok_or(KeyError)?
        };
        Self::from_bytes(&bytes)
    }

    /// A key of exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != KEY_BYTES {
            return Err(KeyError);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError)?;
        Ok(Self { key: Arc::new(LessSafeKey::new(unbound)) })
    }

    /// Seals `plaintext`, authenticating `context` with it (the same context must open it).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut body,
        )?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens a value sealed under `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError::Format)?;
        if version != VERSION || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Format)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| OpenError::Key)?;
        Ok(plain.to_vec())
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_and_every_base64_form() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let sealed = SecretsKey::parse(HEX).expect("hex").seal("ctx", b"x").expect("seal");
        for form in [
            STANDARD.encode(&bytes),
            STANDARD_NO_PAD.encode(&bytes),
            URL_SAFE.encode(&bytes),
            URL_SAFE_NO_PAD.encode(&bytes),
            format!(" {} ", HEX.to_uppercase()),
        ] {
            let key = SecretsKey::parse(&form).unwrap_or_else(|_| panic!("{form} parses"));
            assert_eq!(key.open("ctx", &sealed).expect("the same key"), b"x", "{form}");
        }
        for bad in ["", "short", &STANDARD.encode([0u8; 16]), &STANDARD.encode([0u8; 33]), &HEX[..62]] {
            assert_eq!(SecretsKey::parse(bad).err(), Some(KeyError), "{bad:?}");
        }
    }

    #[test]
    fn seals_and_opens_bound_to_key_and_context() {
        let key = SecretsKey::parse(HEX).expect("key");
        let sealed = key.seal("static_header", b"{\"value\":\"s3cret\"}").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "no plaintext in the sealed bytes");
        assert_eq!(key.open("static_header", &sealed).expect("opens"), b"{\"value\":\"s3cret\"}");
        assert_ne!(
            sealed,
            key.seal("static_header", b"{\"value\":\"s3cret\"}").expect("seal"),
            "fresh nonce"
        );
        assert_eq!(key.open("oauth", &sealed), Err(OpenError::Key), "another context");
        let other = SecretsKey::from_bytes(&[7u8; 32]).expect("key");
        assert_eq!(other.open("static_header", &sealed), Err(OpenError::Key), "another key");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("static_header", &tampered), Err(OpenError::Key));
        assert_eq!(key.open("static_header", &sealed[..10]), Err(OpenError::Format));
        assert_eq!(key.open("static_header", &[]), Err(OpenError::Format));
        assert_eq!(format!("{key:?}"), "SecretsKey(***)");
    }
}
