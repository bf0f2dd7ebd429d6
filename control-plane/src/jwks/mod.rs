//! Trusted issuers' signing keys, fetched by the control plane and never by proxies: the issuer's metadata
//! (OIDC discovery, then RFC 8414) names its `jwks_uri`, and the JWKS there is fetched through the
//! SSRF-guarded client (no redirects, refused ranges filtered at DNS), bounded in size and time, and
//! checked with the same JWK parser the proxies use, so a document that is stored is one every proxy
//! accepts. `refresh` fetches every issuer's JWKS again periodically (on the leader).

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use reqwest::header::ACCEPT;
use serde_json::Value;
use url::Url;

use crate::mcp::McpClient;

pub mod refresh;

pub use refresh::Refresher;

/// Largest metadata or JWKS document read.
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// How long one fetch (connect, headers and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metadata or the JWKS could not be had. Messages name the URL and never contain a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: refused by the SSRF guard: {why}")]
    Refused { url: String, why: String },
    #[error("{url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: the document is larger than {MAX_DOCUMENT} bytes")]
    TooLarge { url: String },
    #[error("{url}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url}: {why}")]
    Invalid { url: String, why: String },
    #[error("no authorization server metadata: {0}")]
    NoMetadata(String),
}

/// Whether `url` may be fetched from: https, or http to a loopback host (local development and tests).
pub fn secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// The metadata documents of `issuer`, in the order they are tried: OIDC discovery
/// (`<issuer>/.well-known/openid-configuration`), then RFC 8414
/// (`<origin>/.well-known/oauth-authorization-server<path>`).
pub fn metadata_urls(issuer: &Url) -> Vec<Url> {
    let base = issuer.as_str().trim_end_matches('/');
    let path = issuer.path().trim_end_matches('/');
    let origin = issuer.origin().ascii_serialization();
    [
        format!("{base}/.well-known/openid-configuration"),
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
    ]
    .into_iter()
    .filter_map(|u| Url::parse(&u).ok())
    .fold(Vec::new(), |mut urls, url| {
        if !urls.contains(&url) {
            urls.push(url);
        }
        urls
    })
}

/// Checks a JWKS document as the proxies will read it; returns how many keys they can verify with. A
/// document without any such key is refused: it would verify nothing (a misconfigured or broken issuer
/// endpoint, more likely than a deliberate empty set).
/// The verification key of `jwk`, refusing an Ed25519 key that is not 32 bytes: jsonwebtoken takes the
/// first 32 bytes of one without checking, and a shorter key panicked the first verification with it (the
/// proxy skips such keys the same way, `proxy/src/identity.rs`).
pub fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk) -> Result<jsonwebtoken::DecodingKey, String> {
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let ed25519 = matches!(jwk.algorithm, AlgorithmParameters::OctetKeyPair(_));
    if ed25519 && !key.try_get_as_bytes().is_ok_and(|x| x.len() >= 32) {
        return Err("an Ed25519 key that is not 32 bytes".into());
    }
    Ok(key)
}

pub fn check_jwks(doc: &Value) -> Result<usize, String> {
    let set: JwkSet = serde_json::from_value(doc.clone()).map_err(|e| format!("not a JWKS document: {e}"))?;
    // The same filter as the proxies' (`proxy/src/identity.rs`): signing keys whose `alg`, when they name
    // one, is supported (many issuers, Entra ID among them, name none).
    let usable = set
        .keys
        .iter()
        .filter(|jwk| {
            (jwk.common.key_algorithm.is_none() || jwk.is_supported())
                && !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
                && !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
                && decoding_key(jwk).is_ok()
        })
        .count();
    if usable == 0 {
        return Err(format!(
            "the JWKS has {} key(s) but none the proxies can verify with (an RSA, EC or OKP signing key)",
            set.keys.len()
        ));
    }
    Ok(usable)
}

/// Fetches issuer metadata and JWKS documents through the control plane's guarded HTTP client.
#[derive(Clone)]
pub struct JwksFetcher {
    client: McpClient,
}

impl JwksFetcher {
    pub fn new(client: McpClient) -> Self {
        Self { client }
    }

    /// The `jwks_uri` named by `issuer`'s metadata, whose `issuer` must be the registered one exactly.
    pub async fn discover(&self, issuer: &str) -> Result<String, FetchError> {
        let parsed = Url::parse(issuer)
            .map_err(|e| FetchError::Invalid { url: issuer.to_owned(), why: e.to_string() })?;
        let mut failures = Vec::new();
        for url in metadata_urls(&parsed) {
            match self.metadata(&url, issuer).await {
                Ok(jwks_uri) => return Ok(jwks_uri),
                // Both documents live on the issuer's origin: a refused origin is refused for both.
                Err(e @ FetchError::Refused { .. }) => return Err(e),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(FetchError::NoMetadata(failures.join("; ")))
    }

    async fn metadata(&self, url: &Url, issuer: &str) -> Result<String, FetchError> {
        let doc = self.get_json(url).await?;
        let invalid = |why: String| FetchError::Invalid { url: url.to_string(), why };
        match doc.get("issuer").and_then(Value::as_str) {
            Some(named) if named == issuer => {}
            Some(named) => {
                return Err(invalid(format!(
                    "the metadata names the issuer {named:?}, not {issuer:?} (they must be equal exactly)"
                )));
            }
            None => return Err(invalid("the metadata has no issuer".into())),
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("the metadata has no jwks_uri".into()))?;
        match Url::parse(jwks_uri) {
            Ok(u) if secure_or_loopback(&u) => Ok(jwks_uri.to_owned()),
            _ => Err(invalid(format!("jwks_uri {jwks_uri:?} is not an https URL (or http on loopback)"))),
        }
    }

    /// The JWKS at `uri`, checked (`check_jwks`).
    pub async fn jwks(&self, uri: &str) -> Result<Value, FetchError> {
        let url =
            Url::parse(uri).map_err(|e| FetchError::Invalid { url: uri.to_owned(), why: e.to_string() })?;
        let doc = self.get_json(&url).await?;
        check_jwks(&doc).map_err(|why| FetchError::Invalid { url: uri.to_owned(), why })?;
        Ok(doc)
    }

    /// GETs a JSON document: the host checked by the SSRF policy (names again at DNS), at most
    /// `MAX_DOCUMENT` bytes, within `FETCH_TIMEOUT`.
    pub async fn get_json(&self, url: &Url) -> Result<Value, FetchError> {
        let request =
            self.client.http().get(url.clone()).header(ACCEPT, "application/json, application/jwk-set+json");
        let (status, doc) = self.exchange(url, request).await?;
        if !(200..300).contains(&status) {
            return Err(FetchError::Status { url: url.to_string(), status });
        }
        Ok(doc)
    }

    /// POSTs a form (an OAuth token request) with HTTP Basic client authentication when `basic` is given,
    /// under the same guard and bounds as `get_json`; the status and the JSON answer, whatever the status
    /// (OAuth errors come as 400 with a JSON body).
    pub async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, Value), FetchError> {
        let mut request = self.client.http().post(url.clone()).header(ACCEPT, "application/json").form(form);
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(enc(id), Some(enc(secret)));
        }
        self.exchange(url, request).await
    }

    async fn exchange(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), FetchError> {
        let at = || url.to_string();
        if let Some(host) = url.host() {
            self.client
                .ssrf()
                .check_host(&host)
                .map_err(|e| FetchError::Refused { url: at(), why: e.to_string() })?;
        }
        let fetch = async {
            let mut response = request.send().await.map_err(|e| unreachable_error(url, &e))?;
            let status = response.status().as_u16();
            if response.content_length().is_some_and(|len| len > MAX_DOCUMENT as u64) {
                return Err(FetchError::TooLarge { url: at() });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| unreachable_error(url, &e))? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_DOCUMENT {
                    return Err(FetchError::TooLarge { url: at() });
                }
            }
            let doc: Value = match serde_json::from_slice(&body) {
                Ok(doc) => doc,
                Err(_) if !(200..300).contains(&status) => {
                    return Err(FetchError::Status { url: at(), status });
                }
                Err(e) => return Err(FetchError::Invalid { url: at(), why: format!("not JSON: {e}") }),
            };
            if !doc.is_object() {
                return Err(FetchError::Invalid { url: at(), why: "not a JSON object".into() });
            }
            Ok((status, doc))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .unwrap_or_else(|_| Err(FetchError::Timeout { url: at() }))
    }
}

/// A transport failure, with the SSRF guard's refusal (from the DNS resolver) named as such.
fn unreachable_error(url: &Url, error: &reqwest::Error) -> FetchError {
    let mut why = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<crate::ssrf::Refusal>() {
            return FetchError::Refused { url: url.to_string(), why: refusal.to_string() };
        }
        why = format!("{why}: {cause}");
        source = cause.source();
    }
    FetchError::Unreachable { url: url.to_string(), why }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_urls_follow_oidc_then_rfc8414() {
        let urls = |issuer: &str| -> Vec<String> {
            metadata_urls(&Url::parse(issuer).expect("url")).iter().map(Url::to_string).collect()
        };
        assert_eq!(
            urls("https://idp.example"),
            [
                "https://idp.example/.well-known/openid-configuration",
                "https://idp.example/.well-known/oauth-authorization-server"
            ]
        );
        assert_eq!(
            urls("https://login.example/tenant/v2.0/"),
            [
                "https://login.example/tenant/v2.0/.well-known/openid-configuration",
                "https://login.example/.well-known/oauth-authorization-server/tenant/v2.0",
            ]
        );
    }

    #[test]
    fn secure_or_loopback_only() {
        for ok in
            ["https://idp.example/", "http://127.0.0.1:8080", "http://[::1]/", "http://localhost:3000/x"]
        {
            assert!(secure_or_loopback(&Url::parse(ok).expect("url")), "{ok}");
        }
        for bad in ["http://idp.example/", "http://10.0.0.1/", "ftp://localhost/"] {
            assert!(!secure_or_loopback(&Url::parse(bad).expect("url")), "{bad}");
        }
    }

    #[test]
    fn jwks_documents_the_proxies_accept() {
        let rsa = json!({"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"});
        assert_eq!(check_jwks(&json!({"keys": [rsa.clone()]})), Ok(1));
        let enc = json!({"kty": "RSA", "kid": "k2", "alg": "RS256", "use": "enc", "n": "sXch", "e": "AQAB"});
        let oct = json!({"kty": "oct", "kid": "k3", "alg": "HS256", "k": "c2VjcmV0"});
        let no_alg = json!({"kty": "RSA", "kid": "k4", "n": "sXch", "e": "AQAB"});
        let unknown_alg = json!({"kty": "RSA", "kid": "k5", "alg": "RSA-OAEP", "n": "sXch", "e": "AQAB"});
        let other = json!({"kty": "PQ", "kid": "k6", "alg": "ML-DSA-65"});
        let all =
            json!({"keys": [rsa, enc.clone(), oct.clone(), no_alg, unknown_alg.clone(), other.clone()]});
        assert_eq!(check_jwks(&all), Ok(2), "RS256 and the alg-less key (as Entra ID publishes them)");
        // A truncated Ed25519 key (18 bytes) would panic the first verification with it: not usable.
        let short = json!({"kty": "OKP", "crv": "Ed25519", "kid": "k7", "x": "Z9ngHMzV76e8Tus9uPHvRVEU"});
        let none_usable = json!({"keys": [enc, oct, unknown_alg, other, short]});
        for bad in [json!({"keys": []}), none_usable, json!({"keys": "x"}), json!({"k": []})] {
            assert!(check_jwks(&bad).is_err(), "{bad}");
        }
    }
}
