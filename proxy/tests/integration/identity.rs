//! Who may call: a proxy as deployed refuses callers without valid credentials with an RFC 9728 challenge,
//! serves the protected resource metadata the challenge points at, accepts the API keys of its routing
//! table until they are removed or expire, and binds sessions to the principal that opened them.

use mcpgw_proto::v1::proxy_message::Kind;
use mcpgw_proto::v1::{ResourceKind, ResourceRef, RoutingUpdate};
use serde_json::{Value, json};

use crate::support::*;

const OTHER_KEY: &str = "mcpgw_another-callers-key";

/// A closed proxy routing `alpha` to `upstream`, with [`TEST_KEY`] and [`OTHER_KEY`] valid and an expired
/// key.
async fn closed(upstream: &FakeUpstream) -> (FakeControlPlane, ProxyProcess) {
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    table.upserts.push(api_key("other-key", OTHER_KEY, "default", 0));
    table.upserts.push(api_key("old-key", "mcpgw_expired", "default", 1_000_000_000));
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    (cp, proxy)
}

async fn call(url: &str, auth: Option<&str>, session: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if let Some(session) = session {
        req = req.header("mcp-session-id", session);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn callers_without_valid_credentials_get_a_challenge() {
    let mut upstream = FakeUpstream::start().await;
    let (_cp, proxy) = closed(&upstream).await;
    let url = proxy.mcp_url("alpha");
    let base = format!("http://{}", proxy.listen);
    let metadata = format!("{base}/.well-known/oauth-protected-resource/mcp/alpha");

    let resp = call(&url, None, None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), format!("Bearer resource_metadata=\"{metadata}\""));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["id"].as_u64(), body["error"]["data"]["reason"].as_str()),
        (Some(1), Some("unauthenticated"))
    );

    let cases = [
        ("Bearer mcpgw_unknown", "invalid_token"),
        ("Bearer mcpgw_expired", "invalid_token"),
        ("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0.", "invalid_token"),
        ("Basic dXNlcjpwYXNz", "invalid_request"),
    ];
    for (auth, error) in cases {
        let resp = call(&url, Some(auth), None).await;
        assert_eq!(resp.status(), 401, "{auth}");
        let c = challenge(&resp);
        assert!(c.starts_with(&format!("Bearer resource_metadata=\"{metadata}\"")), "{auth}: {c}");
        assert!(c.contains(&format!("error=\"{error}\"")), "{auth}: {c}");
    }
    let in_query = call(&format!("{url}?access_token={TEST_KEY}"), None, None).await;
    assert_eq!(in_query.status(), 401, "a token in the query string is refused even when valid");
    assert!(challenge(&in_query).contains("invalid_request"));
    assert!(upstream.drain().is_empty(), "nothing unauthenticated reaches the upstream");

    let resp = call(&url, Some(&format!("Bearer {TEST_KEY}")), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.drain().len(), 1);

    // The metadata the challenge points at, in both well-known forms, names the exact resource URL.
    for path in [metadata.clone(), format!("{base}/mcp/alpha/.well-known/oauth-protected-resource")] {
        let resp = reqwest::get(&path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let prm: Value = resp.json().await.unwrap();
        assert_eq!(prm["resource"], format!("{base}/mcp/alpha"), "{path}");
        assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
        assert!(prm["authorization_servers"].is_array());
    }
    let aggregate: Value = reqwest::get(format!("{base}/.well-known/oauth-protected-resource/mcp"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(aggregate["resource"], format!("{base}/mcp"));
    // The same for a name that is not registered: metadata does not tell which servers exist.
    let unknown =
        reqwest::get(format!("{base}/.well-known/oauth-protected-resource/mcp/nope")).await.unwrap();
    assert_eq!(unknown.status(), 200);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["resource"], format!("{base}/mcp/nope"));
    assert_eq!(unknown["authorization_servers"], aggregate["authorization_servers"]);
}

#[tokio::test]
async fn a_removed_key_is_refused_once_the_proxy_applies_the_update() {
    let upstream = FakeUpstream::start().await;
    let (mut cp, proxy) = closed(&upstream).await;
    let url = proxy.mcp_url("alpha");
    assert_eq!(call(&url, Some(&format!("Bearer {OTHER_KEY}")), None).await.status(), 200);
    let started = std::time::Instant::now();
    cp.push(RoutingUpdate {
        version: 2,
        snapshot: false,
        base_version: 1,
        upserts: vec![],
        removals: vec![ResourceRef { kind: ResourceKind::ApiKey as i32, id: "other-key".into() }],
    })
    .await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let resp = call(&url, Some(&format!("Bearer {OTHER_KEY}")), None).await;
    assert_eq!(resp.status(), 401, "refused {:?} after the removal was pushed", started.elapsed());
    assert_eq!(
        call(&url, Some(&format!("Bearer {TEST_KEY}")), None).await.status(),
        200,
        "other keys still work"
    );
}

#[tokio::test]
async fn a_session_answers_only_the_principal_that_opened_it() {
    let upstream = FakeUpstream::start().await;
    let (_cp, proxy) = closed(&upstream).await;
    let url = proxy.mcp_url("alpha");
    let owner = format!("Bearer {TEST_KEY}");
    let resp = call(&url, Some(&owner), None).await;
    assert_eq!(resp.status(), 200);
    let token = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert_eq!(call(&url, Some(&owner), Some(&token)).await.status(), 200, "the owner continues");

    let stolen = call(&url, Some(&format!("Bearer {OTHER_KEY}")), Some(&token)).await;
    assert_eq!(stolen.status(), 404);
    let stolen: Value = stolen.json().await.unwrap();
    let forged =
        call(&url, Some(&owner), Some("bm90LWEtcmVhbC10b2tlbi1idXQtbG9uZy1lbm91Z2gtdG8tYmUtb25l")).await;
    assert_eq!(forged.status(), 404);
    let forged: Value = forged.json().await.unwrap();
    assert_eq!(stolen["error"], forged["error"], "a refusal says the same whatever the reason");
}

#[tokio::test]
async fn anonymous_mode_lets_callers_without_credentials_through() {
    let upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &["--anonymous"]).await;
    cp.push(snapshot(1, &[("alpha", &upstream.url())])).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    assert_eq!(call(&proxy.mcp_url("alpha"), None, None).await.status(), 200);
    assert_eq!(call(&proxy.mcp_url("alpha"), Some("Bearer mcpgw_unknown"), None).await.status(), 401);
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcpgw_proxy_anonymous_mode 1"), "anonymous mode is visible in metrics");
}

/// An Ed25519 issuer for the JWT tests: its JWKS and tokens signed with its key (or another one).
struct TestIssuer {
    pkcs8: Vec<u8>,
    x: String,
}

const ISSUER: &str = "https://idp.example";

impl TestIssuer {
    fn new() -> Self {
        use base64::Engine;
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Self { pkcs8, x }
    }

    fn resource(&self) -> mcpgw_proto::v1::Resource {
        let jwks =
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": "k1", "alg": "EdDSA"}]});
        mcpgw_proto::v1::Resource {
            kind: Some(mcpgw_proto::v1::resource::Kind::TrustedIssuer(mcpgw_proto::v1::TrustedIssuer {
                id: "idp".into(),
                issuer: ISSUER.into(),
                jwks_json: jwks.to_string(),
                algorithms: vec!["EdDSA".into()],
                ..Default::default()
            })),
        }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

/// Every token attack of the threat model, through the real proxy: each is a 401 whose challenge points at
/// the resource's metadata with `error="invalid_token"`, and none reaches the upstream.
#[tokio::test]
async fn token_attacks_get_401_with_an_invalid_token_challenge() {
    use base64::Engine;
    let mut upstream = FakeUpstream::start().await;
    let idp = TestIssuer::new();
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url()), ("beta", &upstream.url())]);
    table.upserts.push(idp.resource());
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));

    let url = proxy.mcp_url("alpha");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        |aud: &str| json!({"iss": ISSUER, "sub": "mallory", "aud": aud, "exp": now + 300, "iat": now});
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(&url);
        edit(&mut c);
        idp.sign("k1", &c)
    };
    let public_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&idp.x).unwrap();
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let attacks = [
        ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "kid": "k1"})), b64(&claims(&url)))),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(
                &hs_header,
                &claims(&url),
                &jsonwebtoken::EncodingKey::from_secret(&public_key),
            )
            .unwrap(),
        ),
        ("unknown kid", idp.sign("k-unknown", &claims(&url))),
        ("another key under the issuer's kid", TestIssuer::new().sign("k1", &claims(&url))),
        ("wrong issuer", with(&|c| c["iss"] = json!("https://evil.example"))),
        ("audience of another server", idp.sign("k1", &claims(&proxy.mcp_url("beta")))),
        ("expired", with(&|c| c["exp"] = json!(now - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 600))),
    ];
    let metadata = format!("http://{}/.well-known/oauth-protected-resource/mcp/alpha", proxy.listen);
    for (attack, token) in attacks {
        let resp = call(&url, Some(&format!("Bearer {token}")), None).await;
        assert_eq!(resp.status(), 401, "{attack}");
        let c = challenge(&resp);
        assert!(
            c.starts_with(&format!("Bearer resource_metadata=\"{metadata}\""))
                && c.contains("error=\"invalid_token\""),
            "{attack}: {c}"
        );
    }
    assert!(upstream.drain().is_empty(), "no attack reaches the upstream");
    let good = idp.sign("k1", &claims(&url));
    assert_eq!(
        call(&url, Some(&format!("Bearer {good}")), None).await.status(),
        200,
        "the genuine token works"
    );
    let prm: Value = reqwest::get(&metadata).await.unwrap().json().await.unwrap();
    assert_eq!(prm["authorization_servers"], json!([ISSUER]));
}

#[tokio::test]
async fn token_exchange_credentials_are_obtained_per_caller_and_cached() {
    let mut upstream = FakeUpstream::start().await;
    let mut cp = FakeControlPlane::start().await;
    let proxy = ProxyProcess::start_closed(&cp.url(), &[]).await;
    let mut table = snapshot(1, &[("alpha", &upstream.url())]);
    table.upserts.push(api_key("other-key", OTHER_KEY, "default", 0));
    table.upserts.push(api_key("unexchangeable", UNEXCHANGEABLE, "default", 0));
    let exchange = mcpgw_proto::v1::UpstreamCredential {
        kind: Some(mcpgw_proto::v1::upstream_credential::Kind::TokenExchange(
            mcpgw_proto::v1::TokenExchange { audience: String::new(), scopes: vec!["tools".into()] },
        )),
    };
    for resource in &mut table.upserts {
        if let Some(mcpgw_proto::v1::resource::Kind::Server(s)) = resource.kind.as_mut() {
            s.upstream_credential = Some(exchange.clone());
        }
    }
    cp.push(table).await;
    assert!(matches!(cp.next_reply().await, Kind::Ack(_)));
    let url = proxy.mcp_url("alpha");
    let mut seen = Vec::new();
    for key in [TEST_KEY, TEST_KEY, OTHER_KEY] {
        let resp = call(&url, Some(&format!("Bearer {key}")), None).await;
        assert_eq!(resp.status(), 200);
        seen.push(upstream.next_request().await.header("authorization").unwrap_or_default().to_owned());
    }
    let audience = upstream.url();
    assert_eq!(seen[0], format!("Bearer exchanged-1-for-{audience}"), "for the instance's own URL");
    assert_eq!(seen[1], seen[0], "the caller's exchanged token is reused");
    assert_eq!(seen[2], format!("Bearer exchanged-2-for-{audience}"), "another caller, another token");
    let exchanges = cp.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert_eq!(exchanges[0], (TEST_KEY.to_owned(), audience.clone(), vec!["tools".to_owned()]));
    // A caller the control plane will not exchange for: 502, and nothing reaches the upstream.
    let resp = call(&url, Some(&format!("Bearer {UNEXCHANGEABLE}")), None).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["data"]["reason"], "upstream_credential_unavailable", "{body}");
    assert!(upstream.drain().is_empty(), "{:?}", upstream.drain());
}
