//! Trusted issuers through REST against a fake issuer: registration fetches the metadata and the JWKS (and is
//! refused, writing nothing, when either is wrong); the hub publishes one TrustedIssuer per issuer; the
//! leader's refresh publishes a rotated JWKS within one interval, keeps the last good one when a fetch
//! fails (reporting why), and bumps the version once however many replicas refresh.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use mcpgw_control_plane::jwks::Refresher;
use mcpgw_proto::v1::resource::Kind;
use mcpgw_proto::v1::{ResourceKind, TrustedIssuer};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::fake_idp::{FakeIdp, jwks};
use crate::support::{FakeProxy, Reply, TestApp, TestGrpc, admin, eventually, get, hello};

const URI: &str = "/api/v1/trusted-issuers";

async fn create(app: &TestApp, body: Value) -> Reply {
    app.call(admin(TestRequest::post().uri(URI)).set_json(body)).await
}

async fn patch(app: &TestApp, id: &str, body: Value) -> Reply {
    app.call(admin(TestRequest::patch().uri(&format!("{URI}/{id}"))).set_json(body)).await
}

/// The `TrustedIssuer` the hub publishes for `id`, if any.
fn published(app: &TestApp, id: &str) -> Option<TrustedIssuer> {
    match app.hub.current().get(ResourceKind::TrustedIssuer, id)?.kind.clone()? {
        Kind::TrustedIssuer(issuer) => Some(issuer),
        _ => None,
    }
}

fn kids(issuer: &TrustedIssuer) -> Vec<String> {
    let doc: Value = serde_json::from_str(&issuer.jwks_json).unwrap_or_default();
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

fn at(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().unwrap_or_default())
        .expect("an RFC 3339 time")
        .to_utc()
}

fn refresher(app: &TestApp, interval: Duration) -> Refresher {
    Refresher { pool: app.pool.clone(), hub: app.hub.clone(), fetcher: app.state().jwks.clone(), interval }
}

#[actix_web::test]
async fn register_read_change_and_remove() {
    let app = TestApp::start().await;
    let idp = FakeIdp::start().await;
    let before = app.hub.current().version();
    let created = create(
        &app,
        json!({"issuer": idp.issuer, "audiences": ["api://mcp"], "claims": {"subject": "oid", "tenant": "tid"},
            "default_tenant": "acme"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("{URI}/{id}").as_str())
    );
    let body = &created.body;
    assert_eq!((&body["issuer"], &body["jwks_uri"]), (&json!(idp.issuer), &json!(idp.jwks_uri())));
    assert_eq!(body["jwks_uri_source"], "discovered");
    assert_eq!(body["algorithms"], json!(["RS256", "ES256"]), "the default");
    assert_eq!(
        body["claims"],
        json!({"subject": "oid", "tenant": "tid", "roles": "roles", "groups": "groups"})
    );
    assert_eq!(body["keys"], json!([{"kid": "k1", "kty": "RSA", "alg": "RS256", "use": "sig"}]));
    assert!(body["jwks_fetched_at"].is_string() && body["last_error"].is_null(), "{body}");

    let issuer = published(&app, &id).expect("published with its JWKS");
    assert!(app.hub.current().version() > before);
    assert_eq!(issuer.issuer, idp.issuer);
    assert_eq!(serde_json::from_str::<Value>(&issuer.jwks_json).expect("JSON"), jwks(&["k1"]));
    assert_eq!((issuer.subject_claim.as_str(), issuer.tenant_claim.as_str()), ("oid", "tid"));
    assert_eq!(
        (issuer.default_tenant.as_str(), issuer.audiences.clone()),
        ("acme", vec!["api://mcp".to_owned()])
    );
    assert_eq!(issuer.algorithms, ["RS256", "ES256"]);

    let listed = app.call(get(URI)).await;
    assert_eq!(listed.body, json!([created.body.clone()]));
    assert_eq!(app.call(get(&format!("{URI}/{id}"))).await.body, created.body);
    let again = create(&app, json!({"issuer": idp.issuer, "jwks_uri": idp.jwks_uri()})).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "trusted_issuer_taken"),
        "{}",
        again.body
    );

    // PATCH merges: changed claims and audiences reach the proxies; the JWKS is not fetched again.
    let fetches = idp.state.jwks_requests.load(std::sync::atomic::Ordering::SeqCst);
    let version = app.hub.current().version();
    let patched = patch(
        &app,
        &id,
        json!({"audiences": ["api://other"], "claims": {"tenant": null, "roles": "app_roles"}, "algorithms": ["RS256"]}),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        patched.body["claims"],
        json!({"subject": "oid", "tenant": null, "roles": "app_roles", "groups": "groups"})
    );
    let issuer = published(&app, &id).expect("still published");
    assert!(app.hub.current().version() > version);
    assert_eq!(
        (issuer.audiences, issuer.algorithms),
        (vec!["api://other".to_owned()], vec!["RS256".to_owned()])
    );
    assert_eq!((issuer.tenant_claim.as_str(), issuer.roles_claim.as_str()), ("", "app_roles"));
    assert_eq!(idp.state.jwks_requests.load(std::sync::atomic::Ordering::SeqCst), fetches);
    // A configured jwks_uri is fetched before it is stored.
    let configured = patch(&app, &id, json!({"jwks_uri": idp.jwks_uri()})).await;
    assert_eq!(configured.body["jwks_uri_source"], "configured", "{}", configured.body);
    let version = app.hub.current().version();
    for (body, code) in [
        (json!({"algorithms": ["HS256"]}), "invalid_algorithms"),
        (json!({"jwks_uri": "http://127.0.0.1:1/jwks"}), "jwks_fetch_failed"),
        (json!({"colour": "blue"}), "unknown_field"),
    ] {
        let refused = patch(&app, &id, body.clone()).await;
        assert_eq!(refused.code(), code, "{body}: {}", refused.body);
    }
    assert_eq!(app.hub.current().version(), version, "refused changes write nothing");

    let deleted = app.call(admin(TestRequest::delete().uri(&format!("{URI}/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(published(&app, &id).is_none(), "removed from the table before the answer");
    for gone in [
        app.call(get(&format!("{URI}/{id}"))).await,
        app.call(admin(TestRequest::delete().uri(&format!("{URI}/{id}")))).await,
        patch(&app, &id, json!({"audiences": []})).await,
        app.call(get(&format!("{URI}/not-a-uuid"))).await,
    ] {
        assert_eq!((gone.status, gone.code()), (StatusCode::NOT_FOUND, "trusted_issuer_not_found"));
    }
}

#[actix_web::test]
async fn refused_registrations_write_nothing() {
    let app = TestApp::start().await;
    let idp = FakeIdp::start().await;
    let version = app.table().await.0;
    for (body, code) in [
        (json!({"issuer": idp.issuer, "secret": "x"}), "unknown_field"),
        (json!({"jwks_uri": idp.jwks_uri()}), "missing_field"),
        (json!({"issuer": "http://idp.example.com"}), "invalid_issuer"),
        (json!({"issuer": format!("{}?tenant=a", idp.issuer)}), "invalid_issuer"),
        (json!({"issuer": idp.issuer, "jwks_uri": "ftp://127.0.0.1/jwks"}), "invalid_jwks_uri"),
        (json!({"issuer": idp.issuer, "algorithms": ["none"]}), "invalid_algorithms"),
        (json!({"issuer": idp.issuer, "algorithms": ["HS256", "RS256"]}), "invalid_algorithms"),
        (json!({"issuer": idp.issuer, "audiences": ["a", "a"]}), "invalid_audiences"),
        (json!({"issuer": idp.issuer, "claims": {"roles": ""}}), "invalid_claims"),
        (json!({"issuer": idp.issuer, "default_tenant": "a/b"}), "invalid_tenant"),
        // The SSRF guard: cloud metadata is never fetched, whatever the scheme.
        (json!({"issuer": "https://169.254.169.254"}), "issuer_url_not_allowed"),
        (json!({"issuer": idp.issuer, "jwks_uri": "https://169.254.169.254/jwks"}), "issuer_url_not_allowed"),
        // Nothing listens there.
        (json!({"issuer": "http://127.0.0.1:1"}), "jwks_fetch_failed"),
        // The metadata must name the registered issuer exactly (a trailing slash is another issuer).
        (json!({"issuer": format!("{}/", idp.issuer)}), "jwks_fetch_failed"),
    ] {
        let reply = create(&app, body.clone()).await;
        assert_eq!(reply.code(), code, "{body}: {}", reply.body);
        assert_eq!(reply.status.as_u16(), if code == "jwks_fetch_failed" { 502 } else { 400 }, "{body}");
    }
    idp.name_issuer("https://impostor.example");
    let lying = create(&app, json!({"issuer": idp.issuer})).await;
    assert_eq!(lying.code(), "jwks_fetch_failed");
    let message = lying.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("impostor") && message.contains("exactly"), "{message}");
    idp.set_jwks(json!({"keys": [{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}]}));
    let unusable = create(&app, json!({"issuer": idp.issuer, "jwks_uri": idp.jwks_uri()})).await;
    assert_eq!(unusable.code(), "jwks_fetch_failed");
    assert!(
        unusable.body["message"].as_str().is_some_and(|m| m.contains("none the proxies can verify")),
        "{}",
        unusable.body
    );
    idp.set_jwks(json!({"keys": "not a list"}));
    let broken = create(&app, json!({"issuer": idp.issuer, "jwks_uri": idp.jwks_uri()})).await;
    assert_eq!(broken.code(), "jwks_fetch_failed");
    assert_eq!(app.table().await.0, version, "nothing was written");
    assert_eq!(app.call(get(URI)).await.body, json!([]));
}

#[actix_web::test]
async fn a_rotated_key_reaches_a_connected_proxy_within_one_refresh_interval() {
    let app = TestApp::start().await;
    let idp = FakeIdp::start().await;
    let created = create(&app, json!({"issuer": idp.issuer})).await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let grpc = TestGrpc::start(app.hub.clone()).await;
    let mut proxy = FakeProxy::open(&grpc, hello("proxy-jwks")).await.expect("stream accepted");
    let snapshot = proxy.next_within(Duration::from_secs(2)).await;
    assert!(snapshot.upserts.iter().any(|r| matches!(&r.kind, Some(Kind::TrustedIssuer(t)) if t.id == id)));

    let interval = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let refreshing = actix_web::rt::spawn(refresher(&app, interval).run(stop.clone()));
    // The first round (at once) finds the same keys: nothing is published.
    eventually("the first refresh", async || {
        idp.state.jwks_requests.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;
    let version = app.hub.current().version();

    idp.set_jwks(jwks(&["k2"]));
    let rotated = Instant::now();
    let delta = proxy.next_within(interval + Duration::from_secs(2)).await;
    let took = rotated.elapsed();
    let issuer = delta
        .upserts
        .iter()
        .find_map(|r| match &r.kind {
            Some(Kind::TrustedIssuer(t)) if t.id == id => Some(t.clone()),
            _ => None,
        })
        .expect("the delta carries the issuer");
    assert_eq!(kids(&issuer), ["k2"], "k1 is gone: tokens it signed stop verifying");
    assert_eq!(delta.upserts.len(), 1, "one small delta: {delta:?}");
    assert!(delta.version > version);
    assert!(took <= interval + Duration::from_millis(500), "rotation published after {took:?}");
    eprintln!(
        "rotated JWKS on a connected proxy stream {took:?} after the issuer changed (refresh every {interval:?})"
    );
    let view = app.call(get(&format!("{URI}/{id}"))).await.body;
    assert_eq!(view["keys"][0]["kid"], "k2");
    assert!(at(&view["jwks_changed_at"]) > at(&created.body["jwks_changed_at"]), "{view}");
    stop.cancel();
    let _ = refreshing.await;
}

#[actix_web::test]
async fn a_failed_refresh_keeps_the_last_good_jwks_and_says_why() {
    let app = TestApp::start().await;
    let idp = FakeIdp::start().await;
    let created = create(&app, json!({"issuer": idp.issuer})).await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let refresher = refresher(&app, Duration::from_secs(3600));
    let version = app.hub.current().version();

    idp.set_down(true);
    let round = refresher.refresh_all().await.expect("the database answers");
    assert_eq!((round.changed, round.failed), (0, 1));
    let view = app.call(get(&format!("{URI}/{id}"))).await.body;
    let error = view["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("500") && error.contains("/jwks"), "{view}");
    assert_eq!(view["keys"][0]["kid"], "k1", "the last good keys stay");
    assert_eq!(view["jwks_fetched_at"], created.body["jwks_fetched_at"], "no successful fetch since");
    assert!(at(&view["last_attempt_at"]) > at(&created.body["last_attempt_at"]), "{view}");
    assert_eq!(kids(&published(&app, &id).expect("still published")), ["k1"]);
    assert_eq!(app.hub.current().version(), version, "a failure publishes nothing");
    // Garbage is a failure too, not a rotation to no keys.
    idp.set_down(false);
    idp.set_jwks(json!({"keys": []}));
    assert_eq!(refresher.refresh_all().await.expect("round").failed, 1);
    assert_eq!(kids(&published(&app, &id).expect("still published")), ["k1"]);

    // Back, rotated: two replicas refreshing at once publish one change.
    idp.set_jwks(jwks(&["k1", "k2"]));
    let other = refresher.clone();
    let (a, b) = futures_util::future::join(refresher.refresh_all(), other.refresh_all()).await;
    let (a, b) = (a.expect("round"), b.expect("round"));
    assert_eq!(a.changed + b.changed, 1, "{a:?} {b:?}");
    assert_eq!(app.table().await.0 as u64, version + 1, "one version bump");
    assert_eq!(kids(&published(&app, &id).expect("published")), ["k1", "k2"]);
    let view = app.call(get(&format!("{URI}/{id}"))).await.body;
    assert!(view["last_error"].is_null(), "{view}");
    let unchanged = refresher.refresh_all().await.expect("round");
    assert_eq!((unchanged.changed, unchanged.failed), (0, 0));
    assert_eq!(app.table().await.0 as u64, version + 1, "the same JWKS bumps nothing");
}
