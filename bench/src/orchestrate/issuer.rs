//! A trusted issuer of the benchmark's own: an Ed25519 key made for the run, its JWKS served on loopback,
//! and the EdDSA token the JWT variants of scenarios a and e present to the proxy.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The DER (PKCS#8 v1) prefix of an Ed25519 private key; the 32-byte seed follows it.
const PKCS8_ED25519: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
/// The key id in the JWKS and in every token's header.
const KID: &str = "mcpgw-bench";

pub struct Issuer {
    /// The `iss` of the tokens: `http://<the JWKS server>`.
    pub url: String,
    pub jwks_uri: String,
    key: EncodingKey,
    server: JoinHandle<()>,
}

impl Issuer {
    /// Makes a key from `seed` and serves its JWKS on a free loopback port (every request gets it).
    pub async fn start(seed: [u8; 32]) -> Result<Self> {
        let mut der = PKCS8_ED25519.to_vec();
        der.extend_from_slice(&seed);
        let key = EncodingKey::from_ed_der(&der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).context("the JWK of the bench key")?;
        jwk.common.key_id = Some(KID.to_owned());
        let body = serde_json::to_string(&JwkSet { keys: vec![jwk] })?;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    // Read the request head (the answer does not depend on it), then answer and close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self { url: format!("http://{addr}"), jwks_uri: format!("http://{addr}/jwks"), key, server })
    }

    /// A token for `audience`, valid for an hour.
    pub fn token(&self, audience: &str) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims =
            json!({"iss": self.url, "sub": "mcpgw-bench", "aud": audience, "iat": now, "exp": now + 3600});
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KID.to_owned());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn token_verifies_against_the_served_key() {
        let issuer = Issuer::start([7; 32]).await.unwrap();
        let token = issuer.token("http://127.0.0.1:1/mcp/bench").unwrap();
        let addr: SocketAddr = issuer.url.trim_start_matches("http://").parse().unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let set: JwkSet = serde_json::from_str(body).unwrap();
        let jwk = set.find(KID).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&["http://127.0.0.1:1/mcp/bench"]);
        validation.set_issuer(&[&issuer.url]);
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    }
}
