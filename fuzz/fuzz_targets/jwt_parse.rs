//! Bearer JWTs at the proxy: `AuthSettings::authenticate` with a trusted issuer (`Credentials::add_issuer`)
//! whose JWKS holds one fixed Ed25519 key. The first input byte picks the mode:
//! - 0: the rest is the token as presented (header and claims decoded before the signature is checked);
//! - 1: the rest is a claims object, signed with the issuer's key, so the claims mapping after a valid
//!   signature (subject, tenant, roles, groups, audiences, expiry) is reached too;
//! - 2: the rest is a JWKS document of the issuer, then a fixed valid token is presented.
//!
//! Invariants: an accepted token names the trusted issuer and a non-empty subject that its claims carry, is
//! for the resource it was presented to, and a second presentation (from the verified-token cache) gives the
//! same principal.
#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use mcpgw_proto::v1;
use mcpgw_proxy::headers::Noted;
use mcpgw_proxy::identity::{AuthSettings, Credentials, Principal, PrincipalKind};
use pingora::http::RequestHeader;
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example";
const KID: &str = "k1";
const RESOURCE_A: &str = "https://gw.example/base/mcp/a";
/// The fixed private key (an Ed25519 seed): findings reproduce, and seed tokens signed with it verify.
const SEED: [u8; 32] = *b"mcpgw-fuzz-ed25519-seed-00000001";

struct Key {
    /// PKCS#8 document of the private key (what `EncodingKey::from_ed_der` takes).
    pkcs8: Vec<u8>,
    /// The public key, base64url.
    x: String,
}

static KEY: LazyLock<Key> = LazyLock::new(|| {
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let pair = Ed25519KeyPair::from_seed_unchecked(&SEED).expect("32-byte seed");
    let public = pair.public_key().as_ref();
    // PKCS#8 v1 (RFC 8410): the seed alone; the public key is derived from it.
    let mut pkcs8 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    pkcs8.extend_from_slice(&SEED);
    Key { pkcs8, x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public) }
});

fn jwks() -> String {
    json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": KEY.x, "kid": KID, "use": "sig"}]}).to_string()
}

fn credentials(jwks_json: String) -> Option<Credentials> {
    let mut c = Credentials::default();
    c.add_issuer(&v1::TrustedIssuer {
        id: "idp".into(),
        issuer: ISSUER.into(),
        jwks_json,
        algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        audiences: vec!["api://extra".into()],
        tenant_claim: "tid".into(),
        ..Default::default()
    })
    .ok()?;
    Some(c)
}

static TRUSTED: LazyLock<Credentials> = LazyLock::new(|| credentials(jwks()).expect("the fixed issuer"));

static SETTINGS: LazyLock<AuthSettings> = LazyLock::new(|| AuthSettings {
    anonymous: false,
    public_url: url::Url::parse("https://gw.example/base").expect("URL"),
});

fn sign(claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&KEY.pkcs8))
        .expect("signing with a valid key")
}

fn present(c: &Credentials, token: &str, server: &str) -> Option<Result<Principal, String>> {
    let mut req = RequestHeader::build("POST", format!("/mcp/{server}").as_bytes(), None).ok()?;
    req.insert_header("authorization", format!("Bearer {token}")).ok()?;
    Some(SETTINGS.authenticate(&req, Noted::ANY, c, Some(server), SystemTime::now()).map_err(|e| e.to_string()))
}

/// Checks an accepted token against its claims (when they can be read).
fn check(principal: &Principal, claims: Option<&Value>, resource: &str) {
    let PrincipalKind::Token { issuer, subject } = &principal.kind else {
        panic!("a JWT gave a principal of another kind: {principal:?}");
    };
    assert_eq!(&**issuer, ISSUER);
    assert!(!subject.is_empty());
    if let Some(claims) = claims {
        assert_eq!(claims.get("sub").and_then(Value::as_str), Some(&**subject), "subject");
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER), "issuer");
        let aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        assert!(aud.iter().any(|a| *a == resource || *a == "api://extra"), "audience {aud:?}");
        let tenant = claims.get("tid").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or("default");
        assert_eq!(&*principal.tenant, tenant, "tenant");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match mode % 3 {
        0 => {
            let Some(first) = present(&TRUSTED, text, "a") else { return };
            if let Ok(principal) = &first {
                check(principal, None, RESOURCE_A);
                assert_eq!(present(&TRUSTED, text, "a"), Some(first.clone()), "the cached verdict differs");
            }
        }
        1 => {
            let Ok(claims) = serde_json::from_str::<Value>(text) else { return };
            let token = sign(&claims);
            let Some(first) = present(&TRUSTED, &token, "a") else { return };
            if let Ok(principal) = &first {
                check(principal, Some(&claims), RESOURCE_A);
                assert_eq!(present(&TRUSTED, &token, "a"), Some(first.clone()), "the cached verdict differs");
            }
            // The same token presented to server `b` passes only when it is for `b` (or the extra audience).
            if let Some(Ok(principal)) = present(&TRUSTED, &token, "b") {
                check(&principal, Some(&claims), "https://gw.example/base/mcp/b");
            }
        }
        _ => {
            let Some(c) = credentials(text.to_owned()) else { return };
            let _ = c.issuer_names();
            let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let claims = json!({"iss": ISSUER, "sub": "alice", "aud": RESOURCE_A, "exp": now + 300});
            if let Some(Ok(principal)) = present(&c, &sign(&claims), "a") {
                check(&principal, Some(&claims), RESOURCE_A);
            }
        }
    }
});
