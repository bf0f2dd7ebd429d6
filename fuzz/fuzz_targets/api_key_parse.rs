//! API keys at the proxy: `AuthSettings::authenticate` reading the `Authorization` header (scheme, token,
//! the `mcpgw_` prefix, the digest lookup, expiry) and the query string (no `access_token`), against a
//! routing table's keys (`Credentials::add_api_key`).
//!
//! Input: the request target (path and query) up to the first newline, then the `Authorization` value
//! (absent when there is no newline). Invariants: an accepted request was refused nothing on the way: its
//! header uses the Bearer scheme with a registered, unexpired key as its token and its query carries no
//! token; the principal is that key's; the same request gives the same answer again, with `--anonymous`
//! too (credentials that fail are never taken for no credentials).
#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use mcpgw_proto::v1;
use mcpgw_proto::validate::api_key_digest;
use mcpgw_proxy::headers::Noted;
use mcpgw_proxy::identity::{AuthSettings, Credentials, PrincipalKind};
use pingora::http::RequestHeader;

/// (id, secret, expires_at_unix).
const KEYS: [(&str, &str, i64); 3] = [
    ("k-good", "mcpgw_Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5", 0),
    ("k-expired", "mcpgw_ZXhwaXJlZGV4cGlyZWRleHBpcmVkZXhwaXJlZGV4cGly", 1),
    ("k-far", "mcpgw_far", i64::MAX),
];

static CREDENTIALS: LazyLock<Credentials> = LazyLock::new(|| {
    let mut c = Credentials::default();
    for (id, secret, expires_at_unix) in KEYS {
        c.add_api_key(&v1::ApiKey {
            id: id.into(),
            digest: api_key_digest(secret).to_vec(),
            name: id.into(),
            tenant_id: "acme".into(),
            roles: vec!["user".into()],
            expires_at_unix,
            permissions: vec![v1::PermissionRule {
                server: "weather".into(),
                tools: vec!["get_*".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("a 32-byte digest");
    }
    c
});

fn settings(anonymous: bool) -> AuthSettings {
    AuthSettings { anonymous, public_url: url::Url::parse("https://gw.example/").expect("URL") }
}

fuzz_target!(|data: &[u8]| {
    let (target, auth) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let Ok(mut req) = RequestHeader::build("POST", target, None) else { return };
    if let Some(auth) = auth {
        if req.insert_header("authorization", auth).is_err() {
            return;
        }
    }
    let strict = settings(false);
    let verdict = strict.authenticate(&req, Noted::ANY, &CREDENTIALS, Some("weather"), SystemTime::now());
    let again = strict.authenticate(&req, Noted::ANY, &CREDENTIALS, Some("weather"), SystemTime::now());
    assert_eq!(verdict.as_ref().ok(), again.as_ref().ok(), "same request, same answer");
    let lenient = settings(true).authenticate(&req, Noted::ANY, &CREDENTIALS, Some("weather"), SystemTime::now());
    if auth.is_some() {
        assert_eq!(
            verdict.as_ref().ok(),
            lenient.as_ref().ok(),
            "--anonymous changed a credentialed verdict"
        );
    } else {
        assert!(verdict.is_err(), "no credentials, no principal");
    }
    if let Err(e) = &verdict {
        // Every refusal names the resource's metadata in its challenge.
        assert!(e.to_string().len() < 4096);
        return;
    }
    let principal = verdict.expect("checked");
    let PrincipalKind::ApiKey { id } = &principal.kind else {
        panic!("an API key gave a principal of another kind: {principal:?}");
    };
    let (_, secret, _) = KEYS.iter().find(|(k, _, _)| **k == **id).expect("a registered key");
    assert_ne!(&**id, "k-expired", "an expired key was accepted");
    // What was presented: `Bearer` (any case), whitespace, the secret, nothing else but whitespace.
    let value = std::str::from_utf8(auth.expect("credentials")).expect("an accepted header is text").trim();
    let (scheme, token) = value.split_once(' ').expect("scheme and token");
    assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme {scheme:?}");
    assert_eq!(token.trim(), *secret, "the token is the key's secret");
    let query = req.uri.query().unwrap_or_default().to_ascii_lowercase();
    assert!(!query.split('&').any(|p| p.split('=').next() == Some("access_token")), "token in the query");
    assert_eq!(&*principal.tenant, "acme");
});
