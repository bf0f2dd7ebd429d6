//! The web console's server side: its files come with a strict CSP and cannot be framed; a session opened
//! with a credential authenticates `/api/v1` only together with its CSRF header; a session ends with
//! sign-out and with the key it was opened with; nothing of the console works without a session.

use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use serde_json::json;

use crate::api_keys::create_key;
use crate::support::{Reply, TOKEN, TestApp, admin};

/// The `name=value` of the session cookie a sign-in set, and its attributes.
fn session_cookie(reply: &Reply) -> (String, String) {
    let set = reply
        .headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("mcpgw_console="))
        .unwrap_or_else(|| panic!("no session cookie: {:?}", reply.headers));
    let (pair, attributes) = set.split_once(';').expect("attributes");
    (pair.to_owned(), attributes.to_owned())
}

async fn sign_in(app: &TestApp, token: &str) -> Reply {
    app.call(TestRequest::post().uri("/ui/session").set_json(json!({"token": token}))).await
}

/// A request carrying the session cookie and, when given, the CSRF header.
fn with_session(req: TestRequest, cookie: &str, csrf: Option<&str>) -> TestRequest {
    let req = req.insert_header(("cookie", cookie.to_owned()));
    match csrf {
        Some(token) => req.insert_header(("x-csrf-token", token.to_owned())),
        None => req,
    }
}

#[actix_web::test]
async fn console_files_are_served_with_a_strict_policy() {
    let app = TestApp::start().await;
    for (path, kind) in
        [("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")]
    {
        let reply = app.call(TestRequest::get().uri(path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let header =
            |name: &str| reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        let csp = header("content-security-policy");
        for directive in
            ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"]
        {
            assert!(csp.contains(directive), "{path}: CSP {csp:?} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        // Revalidated by its ETag.
        let etag = header("etag");
        let again =
            app.call(TestRequest::get().uri(path).insert_header(("if-none-match", etag.clone()))).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path} with If-None-Match {etag}");
    }
    let page = app.call(TestRequest::get().uri("/ui/")).await;
    let html = page.body.as_str().expect("html");
    assert!(
        !html.contains(" style=\"") && !html.contains("<style") && !html.contains(" onclick="),
        "inline code in index.html"
    );
    assert_eq!(app.call(TestRequest::get().uri("/ui/nothing.js")).await.status, StatusCode::NOT_FOUND);
    let bare = app.call(TestRequest::get().uri("/ui")).await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers.get("location").unwrap(), "/ui/");
}

#[actix_web::test]
async fn a_session_needs_its_csrf_header_and_ends_with_sign_out() {
    let app = TestApp::start().await;
    // Nobody signed in.
    let anonymous = app.call(TestRequest::get().uri("/ui/session")).await;
    assert_eq!(
        (anonymous.status, anonymous.body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("not_signed_in"))
    );
    assert_eq!(anonymous.body["idp_sign_in"], false, "no authorization server here");

    let wrong = sign_in(&app, "not-the-token").await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::UNAUTHORIZED, "invalid_admin_token"),
        "{}",
        wrong.body
    );
    // A cross-site form cannot sign in: JSON only.
    let form = app
        .call(
            TestRequest::post()
                .uri("/ui/session")
                .insert_header(("content-type", "application/x-www-form-urlencoded"))
                .set_payload(format!("token={TOKEN}")),
        )
        .await;
    assert_eq!(
        (form.status, form.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_content_type"),
        "{}",
        form.body
    );

    let signed = sign_in(&app, TOKEN).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    assert_eq!(signed.body["principal"]["kind"], "admin_token");
    assert_eq!(signed.body["principal"]["platform_admin"], true);
    assert_eq!(signed.headers.get("cache-control").unwrap(), "no-store");
    let (cookie, attributes) = session_cookie(&signed);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(flag), "cookie attributes {attributes:?} lack {flag}");
    }
    let csrf = signed.body["csrf_token"].as_str().expect("csrf token").to_owned();
    assert!(csrf.len() >= 40, "{csrf}");

    let servers = || TestRequest::get().uri("/api/v1/servers");
    let ok = app.call(with_session(servers(), &cookie, Some(&csrf))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // The cookie alone (a cross-site request: the browser adds it, the page cannot add the header).
    let bare = app.call(with_session(servers(), &cookie, None)).await;
    assert_eq!((bare.status, bare.code()), (StatusCode::FORBIDDEN, "csrf_token_required"), "{}", bare.body);
    let forged = app.call(with_session(servers(), &cookie, Some("guessed"))).await;
    assert_eq!((forged.status, forged.code()), (StatusCode::FORBIDDEN, "csrf_token_required"));
    let post = with_session(TestRequest::post().uri("/api/v1/api-keys"), &cookie, None)
        .set_json(json!({"name": "cross-site", "role": "admin"}));
    assert_eq!(app.call(post).await.status, StatusCode::FORBIDDEN);
    let keys = app.call(admin(TestRequest::get().uri("/api/v1/api-keys"))).await;
    assert_eq!(keys.body.as_array().map(Vec::len), Some(0), "no key was created: {}", keys.body);

    // Changes through the session are the admin token's, audited as such.
    let created = app
        .call(
            with_session(TestRequest::post().uri("/api/v1/api-keys"), &cookie, Some(&csrf))
                .set_json(json!({"name": "made in the console", "role": "user"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let again = app.call(with_session(TestRequest::get().uri("/ui/session"), &cookie, None)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["csrf_token"], csrf.as_str());

    // Sign-out needs the header too, then the cookie is worthless.
    let refused = app.call(with_session(TestRequest::delete().uri("/ui/session"), &cookie, None)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = app.call(with_session(TestRequest::delete().uri("/ui/session"), &cookie, Some(&csrf))).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let after = app.call(with_session(servers(), &cookie, Some(&csrf))).await;
    assert_eq!((after.status, after.code()), (StatusCode::UNAUTHORIZED, "invalid_session"), "{}", after.body);
    let session = app.call(with_session(TestRequest::get().uri("/ui/session"), &cookie, None)).await;
    assert_eq!(session.status, StatusCode::UNAUTHORIZED);

    // Sign-ins, the refused one included, and the sign-out are in the audit log; no secret is.
    let audit = app.call(admin(TestRequest::get().uri("/api/v1/audit?kind=admin&limit=100"))).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let records: Vec<(String, String, String)> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["method"].as_str().is_some_and(|m| m.ends_with("/ui/session")))
        .map(|r| {
            let field = |f: &str| r[f].as_str().unwrap_or_default().to_owned();
            (field("method"), field("principal"), field("outcome"))
        })
        .collect();
    for expected in [
        ("POST /ui/session", "", "invalid_admin_token"),
        ("POST /ui/session", "admin-token", "ok"),
        ("DELETE /ui/session", "admin-token", "ok"),
    ] {
        let found = records.iter().any(|(m, p, o)| (m.as_str(), p.as_str(), o.as_str()) == expected);
        assert!(found, "{expected:?} not in {records:?}");
    }
    let text = audit.body.to_string();
    assert!(!text.contains(TOKEN) && !text.contains(&csrf), "a secret in the audit log");
}

#[actix_web::test]
async fn a_key_session_is_the_key_and_ends_with_it() {
    let app = TestApp::start().await;
    let created =
        create_key(&app, json!({"name": "tenant admin", "role": "admin", "tenant_id": "acme"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let (key, id) =
        (created.body["key"].as_str().unwrap().to_owned(), created.body["id"].as_str().unwrap().to_owned());
    let signed = sign_in(&app, &key).await;
    assert_eq!(signed.status, StatusCode::CREATED, "{}", signed.body);
    let principal = &signed.body["principal"];
    assert_eq!((principal["kind"].as_str(), principal["tenant"].as_str()), (Some("api_key"), Some("acme")));
    assert_eq!(
        (principal["admin"].as_bool(), principal["platform_admin"].as_bool()),
        (Some(true), Some(false))
    );
    let (cookie, _) = session_cookie(&signed);
    let csrf = signed.body["csrf_token"].as_str().unwrap().to_owned();
    // The key's own limits hold: a tenant administrator is refused the platform routes.
    let proxies =
        app.call(with_session(TestRequest::get().uri("/api/v1/proxies"), &cookie, Some(&csrf))).await;
    assert_eq!((proxies.status, proxies.code()), (StatusCode::FORBIDDEN, "insufficient_permissions"));

    let deleted = app.call(admin(TestRequest::delete().uri(&format!("/api/v1/api-keys/{id}")))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    let after = app.call(with_session(TestRequest::get().uri("/api/v1/servers"), &cookie, Some(&csrf))).await;
    assert_eq!((after.status, after.code()), (StatusCode::UNAUTHORIZED, "invalid_session"), "{}", after.body);
}

#[actix_web::test]
async fn idp_sign_in_needs_the_authorization_server() {
    let app = TestApp::start().await;
    let login = app.call(TestRequest::get().uri("/ui/login")).await;
    assert_eq!(login.status, StatusCode::NOT_FOUND);
    // A callback this browser did not start.
    let callback = app.call(TestRequest::get().uri("/ui/callback?code=x&state=y")).await;
    assert_eq!(callback.status, StatusCode::BAD_REQUEST);
}
