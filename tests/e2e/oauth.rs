//! The control plane as the OAuth 2.1 authorization server, with real OAuth clients and a real OpenID
//! provider as the company IdP: the Python and TS SDKs' OAuth clients sign a user in with no human (PRM →
//! AS metadata → registration → authorize with PKCE → IdP login → consent → token) and call tools through
//! the proxy; refresh after expiry; a refresh token used twice revokes its family; the attacks of the
//! authorization code flow are refused; an Entra-like IdP works; a signed-in administrator uses the REST API.

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::{PyServer, PyServerOpts, SignInGateway, browser_login, py_oauth_client, ts_oauth_client};
use serde_json::{Value, json};

/// The users of the test IdP: alice administers the gateway (by an IdP role), bob does not.
fn users() -> Value {
    json!({
        "alice": {"email": "alice@example.com", "name": "Alice", "roles": ["mcp.admin"], "groups": ["g-ops"]},
        "bob": {"email": "bob@example.com", "name": "Bob", "roles": [], "groups": ["g1", "g2", "g3", "g4", "g5", "g6"]},
    })
}

/// A client's redirect URI (never listened on: the redirect is captured).
const REDIRECT: &str = "http://127.0.0.1:1/callback";

async fn gateway_with_server(
    entra: Option<&str>,
    cp_args: &[&str],
) -> Result<(SignInGateway, PyServer, String)> {
    let sg = SignInGateway::start(users(), entra, cp_args).await?;
    let upstream = PyServer::start("py-oauth", PyServerOpts::default()).await?;
    let url = sg.gw.add_server("py-oauth", &upstream.url(), "streamable_http").await?;
    Ok((sg, upstream, url))
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// Registers a public client by RFC 7591; its client id.
async fn register(issuer: &str) -> Result<String> {
    let resp = reqwest::Client::new()
        .post(format!("{issuer}/oauth/register"))
        .json(&json!({"redirect_uris": [REDIRECT], "application_type": "native", "token_endpoint_auth_method": "none",
                      "grant_types": ["authorization_code", "refresh_token"], "client_name": "e2e by hand"}))
        .send()
        .await?;
    ensure!(resp.status() == 201, "registration: {}", resp.status());
    let doc: Value = resp.json().await?;
    Ok(doc["client_id"].as_str().context("client_id")?.to_owned())
}

/// An authorization URL for `client_id` with PKCE for `verifier`.
fn authorize_url(issuer: &str, client_id: &str, resource: &str, verifier: &str, state: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    format!(
        "{issuer}/oauth/authorize?{}",
        form(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", resource),
            ("scope", "mcp"),
            ("state", state),
        ])
    )
}

async fn token(issuer: &str, pairs: &[(&str, &str)]) -> Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{issuer}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.json().await?))
}

const VERIFIER: &str = "e2e-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Redeems `code` (issued with [`VERIFIER`] to a client registered by hand) at the token endpoint.
async fn redeem(issuer: &str, client_id: &str, code: &str) -> Result<(u16, Value)> {
    let grant = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code", code),
        ("code_verifier", VERIFIER),
    ];
    token(issuer, &grant).await
}

/// Signs `user` in for `resource` with a client registered by hand; the code.
async fn code_for(issuer: &str, client_id: &str, resource: &str, user: &str) -> Result<String> {
    let url = authorize_url(issuer, client_id, resource, VERIFIER, "st-1");
    let back = browser_login(&url, REDIRECT, user, &[]).await?;
    ensure!(
        back["state"] == "st-1" && back["iss"] == json!(issuer),
        "state and iss (RFC 9207) come back: {back}"
    );
    Ok(back["code"].as_str().with_context(|| format!("a code: {back}"))?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_signs_in_calls_tools_and_refreshes() -> Result<()> {
    let (sg, _upstream, url) = gateway_with_server(None, &["--access-token-ttl", "3s"]).await?;
    let out = py_oauth_client(
        &url,
        "alice",
        &["--wait-expiry", "tools/list", "call", "echo", r#"{"message":"signed in"}"#],
    )
    .await?;
    let text = out.to_string();
    ensure!(text.contains("signed in") && text.contains("echo"), "tools listed and called: {out}");
    ensure!(out["tokens"]["refreshed"] == json!(true), "refreshed after expiry: {out}");
    ensure!(out["tokens"]["authorizations"] == json!(1), "one sign-in only: {out}");
    let results = out["results"].as_array().context("results")?;
    ensure!(results.iter().filter(|r| r["round"] == json!(2)).count() == 2, "the second round ran: {out}");
    let _ = sg;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_sdk_signs_in_and_calls_tools() -> Result<()> {
    // (The TS SDK refreshes only after a 401, which proxies answer 30 s after expiry, their clock-skew
    // leeway; refresh after expiry is proven with the Python SDK, which refreshes by its own clock.)
    let (_sg, _upstream, url) = gateway_with_server(None, &[]).await?;
    let actions = ["tools/list", "call", "echo", r#"{"message":"ts signed in"}"#];
    let out = ts_oauth_client(&url, "bob", &actions).await?;
    let text = out.to_string();
    ensure!(text.contains("ts signed in") && text.contains("echo"), "tools listed and called: {out}");
    ensure!(out["tokens"]["authorizations"] == json!(1), "one sign-in: {out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_known_by_its_metadata_document_signs_in() -> Result<()> {
    // The document is served on loopback, which the strict SSRF policy of metadata documents refuses
    // unless allowed; production documents are https on public addresses.
    let (_sg, _upstream, url) = gateway_with_server(None, &["--ssrf-allow", "127.0.0.1/32"]).await?;
    let dir = std::env::temp_dir().join(format!("mcpgw-cimd-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = mcpgw_e2e::free_port()?;
    let client_id = format!("http://127.0.0.1:{port}/client.json");
    let doc = json!({"client_id": client_id, "client_name": "e2e by metadata document",
                     "redirect_uris": ["http://127.0.0.1:1/callback"], "grant_types": ["authorization_code", "refresh_token"],
                     "response_types": ["code"], "token_endpoint_auth_method": "none"});
    std::fs::write(dir.join("client.json"), doc.to_string())?;
    let python = mcpgw_e2e::peers::peers_dir().join(".venv/bin/python");
    let mut server = tokio::process::Command::new(python)
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    mcpgw_e2e::wait_for_tcp(mcpgw_e2e::localhost(port), std::time::Duration::from_secs(10)).await?;
    let actions = ["--client-metadata-url", &client_id, "call", "echo", r#"{"message":"by document"}"#];
    let out = py_oauth_client(&url, "alice", &actions).await;
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    ensure!(out.to_string().contains("by document"), "{out}");
    ensure!(
        out["client_id"] == json!(client_id),
        "the document URL is the client id, no registration: {out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_like_idp_without_registration_or_resource_support() -> Result<()> {
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let (sg, _upstream, url) = gateway_with_server(Some(tenant), &[]).await?;
    ensure!(sg.idp.issuer().ends_with(&format!("/{tenant}/v2.0")), "v2 issuer form: {}", sg.idp.issuer());
    // The IdP refuses `resource` and has no registration endpoint: the gateway never sends the former to it
    // and needs no registration there (it is one pre-registered client).
    let out = py_oauth_client(&url, "bob", &["call", "echo", r#"{"message":"via entra"}"#]).await?;
    ensure!(out.to_string().contains("via entra"), "{out}");
    let (status, users) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/users", None).await?;
    ensure!(status == 200, "{status} {users}");
    let bob = users["items"]
        .as_array()
        .and_then(|items| items.iter().find(|u| u["email"] == "bob@example.com"))
        .with_context(|| format!("bob is recorded: {users}"))?;
    ensure!(bob["issuer"] == json!(sg.idp.issuer()), "the v2 issuer with the tenant id: {bob}");
    ensure!(bob["groups_overage"] == json!(true), "6 groups are an overage in Entra mode: {bob}");
    ensure!(
        bob["claims"]["tid"] == json!(tenant) && bob["subject"] == bob["claims"]["oid"],
        "oid names the user: {bob}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_on_the_code_flow_are_refused() -> Result<()> {
    let (sg, upstream, url_a) = gateway_with_server(None, &[]).await?;
    let url_b = sg.gw.add_server("py-other", &upstream.url(), "streamable_http").await?;
    let issuer = sg.issuer();
    let client_id = register(&issuer).await?;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;

    // A redirect URI one character off: shown to the user, never redirected to.
    let off_by_one =
        authorize_url(&issuer, &client_id, &url_a, VERIFIER, "s").replace("callback", "callbacK");
    let resp = no_redirects.get(&off_by_one).send().await?;
    ensure!(
        resp.status() == 400 && resp.headers().get("location").is_none(),
        "exact redirect URI: {}",
        resp.status()
    );
    // A resource the gateway does not serve, and no PKCE: back to the client with an error.
    let foreign = authorize_url(&issuer, &client_id, "https://elsewhere.example/mcp", VERIFIER, "s");
    let location = no_redirects.get(&foreign).send().await?.headers()["location"].to_str()?.to_owned();
    ensure!(location.starts_with(REDIRECT) && location.contains("error=invalid_target"), "{location}");
    let plain = authorize_url(&issuer, &client_id, &url_a, VERIFIER, "s").replace("S256", "plain");
    let location = no_redirects.get(&plain).send().await?.headers()["location"].to_str()?.to_owned();
    ensure!(location.contains("error=invalid_request"), "PKCE S256 only: {location}");

    // The IdP's answer with a missing or a reused state.
    let resp = no_redirects.get(format!("{issuer}/oauth/callback?code=x")).send().await?;
    ensure!(resp.status() == 400, "callback without state: {}", resp.status());
    let idp_redirect =
        no_redirects.get(authorize_url(&issuer, &client_id, &url_a, VERIFIER, "s")).send().await?;
    let to_idp = url::Url::parse(idp_redirect.headers()["location"].to_str()?)?;
    ensure!(
        !to_idp.query().unwrap_or_default().contains("resource="),
        "resource is never sent to the IdP: {to_idp}"
    );
    let state = to_idp.query_pairs().find(|(k, _)| k == "state").context("state to the IdP")?.1.into_owned();
    for _ in 0..2 {
        let resp =
            no_redirects.get(format!("{issuer}/oauth/callback?code=forged&state={state}")).send().await?;
        let location = resp.headers().get("location").map(|l| l.to_str().unwrap_or_default().to_owned());
        if location.is_some() {
            // First use: consumed, the forged code fails at the IdP and the client hears access_denied.
            ensure!(location.as_deref().is_some_and(|l| l.contains("error=access_denied")), "{location:?}");
        } else {
            ensure!(resp.status() == 400, "a reused state is unknown: {}", resp.status());
        }
    }

    // Consent forged cross-site: no cookie, or a cookie for another form.
    let consent_prefix = format!("{issuer}/oauth/consent");
    let stopped = browser_login(
        &authorize_url(&issuer, &client_id, &url_a, VERIFIER, "s"),
        REDIRECT,
        "bob",
        &["--stop-at", &consent_prefix],
    )
    .await?;
    let fields = &stopped["fields"];
    let (request, csrf) =
        (fields["request"].as_str().context("request")?, fields["csrf_token"].as_str().context("csrf")?);
    let consent = |cookie: Option<String>, csrf: &str| {
        let mut req = no_redirects
            .post(&consent_prefix)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("request", request), ("csrf_token", csrf), ("decision", "approve")]));
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    ensure!(consent(None, csrf).await?.status() == 403, "a cross-site post carries no cookie");
    ensure!(consent(Some("mcpgw_consent=guess".into()), "guess").await?.status() == 400, "a made-up token");
    let page = reqwest::get(stopped["stopped_at"].as_str().context("url")?).await?;
    ensure!(page.status() == 400, "the page needs this browser's cookie: {}", page.status());
    let cookie = format!("mcpgw_consent={}", stopped["cookies"]["mcpgw_consent"].as_str().context("cookie")?);
    let page = reqwest::Client::new()
        .get(stopped["stopped_at"].as_str().context("url")?)
        .header("cookie", &cookie)
        .send()
        .await?;
    let header =
        |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    ensure!(
        page.status() == 200 && header("x-frame-options") == "DENY",
        "not frameable: {:?}",
        page.headers()
    );
    ensure!(header("content-security-policy").contains("frame-ancestors 'none'"), "{:?}", page.headers());
    let text = page.text().await?;
    ensure!(
        text.contains("e2e by hand") && text.contains(REDIRECT),
        "the page names the client and its redirect URI"
    );
    let approved = consent(Some(cookie.clone()), csrf).await?;
    ensure!(approved.status() == 303, "the real form: {}", approved.status());
    ensure!(consent(Some(cookie), csrf).await?.status() == 400, "a consent form answers once");

    // Codes: a wrong verifier burns the code; a code used twice revokes what it issued.
    let code = code_for(&issuer, &client_id, &url_a, "bob").await?;
    fn with<'a>(client_id: &'a str, extra: &[(&'static str, &'a str)]) -> Vec<(&'static str, &'a str)> {
        let base =
            [("grant_type", "authorization_code"), ("client_id", client_id), ("redirect_uri", REDIRECT)];
        base.into_iter().chain(extra.iter().copied()).collect()
    }
    let (status, body) = token(
        &issuer,
        &with(&client_id, &[("code", &code), ("code_verifier", "not-the-verifier-0123456789-0123456789")]),
    )
    .await?;
    ensure!(status == 400 && body["error"] == "invalid_grant", "PKCE mismatch: {status} {body}");
    let (status, _) =
        token(&issuer, &with(&client_id, &[("code", &code), ("code_verifier", VERIFIER)])).await?;
    ensure!(status == 400, "a code is single use even after a failed attempt");
    let code = code_for(&issuer, &client_id, &url_a, "bob").await?;
    let (status, issued) =
        token(&issuer, &with(&client_id, &[("code", &code), ("code_verifier", VERIFIER)])).await?;
    ensure!(status == 200 && issued["token_type"] == "Bearer", "{status} {issued}");
    let (status, body) =
        token(&issuer, &with(&client_id, &[("code", &code), ("code_verifier", VERIFIER)])).await?;
    ensure!(status == 400 && body["error"] == "invalid_grant", "a code used twice: {status} {body}");
    let refresh = issued["refresh_token"].as_str().context("refresh token")?;
    let (status, _) = token(
        &issuer,
        &[("grant_type", "refresh_token"), ("client_id", &client_id), ("refresh_token", refresh)],
    )
    .await?;
    ensure!(status == 400, "the replayed code revoked the refresh token it issued");

    // A token for server A is refused by server B; it works for A.
    let access = issued["access_token"].as_str().context("access token")?;
    let call = |url: &str| {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(access)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
    };
    ensure!(call(&url_b).await?.status() == 401, "a token for A presented to B");
    let at_a = call(&url_a).await?.status();
    ensure!(at_a != 401 && at_a != 403, "the token works for its own resource: {at_a}");

    // A client ID metadata document at a private address is never fetched.
    let cimd = authorize_url(&issuer, "https://10.0.0.7/client.json", &url_a, VERIFIER, "s");
    let resp = no_redirects.get(&cimd).send().await?;
    let body = resp.text().await?;
    ensure!(body.contains("refused"), "CIMD SSRF: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_its_family() -> Result<()> {
    let (sg, _upstream, url) = gateway_with_server(None, &[]).await?;
    let issuer = sg.issuer();
    let client_id = register(&issuer).await?;
    let code = code_for(&issuer, &client_id, &url, "alice").await?;
    let (status, first) = redeem(&issuer, &client_id, &code).await?;
    ensure!(status == 200, "{first}");
    let refresh = |token_value: String| {
        let (issuer, client_id) = (issuer.clone(), client_id.clone());
        async move {
            token(
                &issuer,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &token_value),
                ],
            )
            .await
        }
    };
    let r1 = first["refresh_token"].as_str().context("r1")?.to_owned();
    let (status, second) = refresh(r1.clone()).await?;
    let r2 = second["refresh_token"].as_str().context("rotated")?.to_owned();
    ensure!(status == 200 && r2 != r1, "rotated: {second}");
    let (status, body) = refresh(r1).await?;
    ensure!(status == 400 && body["error"] == "invalid_grant", "r1 reused: {body}");
    let (status, body) = refresh(r2).await?;
    ensure!(status == 400, "the whole family is revoked, r2 included: {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_sign_in_to_the_rest_api() -> Result<()> {
    let sg = SignInGateway::start(users(), None, &["--oidc-admin-roles", "mcp.admin"]).await?;
    let issuer = sg.issuer();
    let client_id = register(&issuer).await?;
    let api = format!("{issuer}/api");
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        let code = code_for(&issuer, &client_id, &api, user).await?;
        let (status, body) = redeem(&issuer, &client_id, &code).await?;
        ensure!(status == 200, "{user}: {body}");
        tokens.push(body["access_token"].as_str().context("token")?.to_owned());
    }
    let get = |token: &str| {
        reqwest::Client::new().get(format!("{issuer}/api/v1/servers")).bearer_auth(token).send()
    };
    ensure!(get(&tokens[0]).await?.status() == 200, "alice has the admin role at the IdP");
    ensure!(get(&tokens[1]).await?.status() == 403, "bob does not");
    // A token for an MCP resource is not one for the admin API.
    let code = code_for(&issuer, &client_id, &format!("{}/mcp", sg.gw.proxy.base_url()), "alice").await?;
    let (_, body) = redeem(&issuer, &client_id, &code).await?;
    ensure!(
        get(body["access_token"].as_str().context("token")?).await?.status() == 401,
        "audience is checked"
    );
    Ok(())
}

/// The claims `whoami_token` reported (structured content, or its text as JSON).
fn claims_of(result: &Value) -> Result<Value> {
    if let Some(claims) = result.get("structuredContent").filter(|c| c.get("aud").is_some()) {
        return Ok(claims.clone());
    }
    let text = mcpgw_e2e_first_text(result).with_context(|| format!("no claims in {result}"))?;
    Ok(serde_json::from_str(text)?)
}

fn mcpgw_e2e_first_text(result: &Value) -> Option<&str> {
    crate::first_text(result)
}

async fn register_with(sg: &SignInGateway, name: &str, url: &str, upstream_auth: Value) -> Result<String> {
    let body = json!({"name": name, "endpoint_url": url, "transport_type": "streamable_http", "upstream_auth": upstream_auth});
    let (status, doc) = sg.gw.cp.api(reqwest::Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "registering {name}: {status} {doc}");
    sg.gw.proxy.wait_routable(name, mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    Ok(sg.gw.proxy.url(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_their_own_tokens_never_the_callers() -> Result<()> {
    let sg = SignInGateway::start(users(), None, &[]).await?;
    let issuer = sg.issuer();
    // Protected by the gateway's own authorization server: tokens exchanged on behalf of each caller.
    let exchange_upstream =
        PyServer::start_protected("py-exchange", &format!("{issuer}/oauth/jwks"), &issuer).await?;
    let exchange_url = register_with(
        &sg,
        "py-exchange",
        &exchange_upstream.url(),
        json!({"type": "token_exchange", "scopes": ["mcp:tools"]}),
    )
    .await?;
    // Protected by the IdP: the gateway's own client credentials there.
    let idp_issuer = sg.idp.issuer();
    let cc_upstream = PyServer::start_protected("py-cc", &format!("{idp_issuer}/jwks"), &idp_issuer).await?;
    let cc_auth = json!({"type": "oauth_client_credentials", "token_url": format!("{idp_issuer}/token"),
        "client_id": mcpgw_e2e::idp::CLIENT.0, "client_secret": mcpgw_e2e::idp::CLIENT.1, "scope": "mcp",
        "resource": cc_upstream.url()});
    let cc_url = register_with(&sg, "py-cc", &cc_upstream.url(), cc_auth).await?;

    // A signed-in user: the upstream sees a token for itself, naming the user, the gateway as the actor.
    let dump = std::env::temp_dir().join(format!("mcpgw-e2e-tokens-{}.json", std::process::id()));
    let dump_arg = dump.to_string_lossy().into_owned();
    let out =
        py_oauth_client(&exchange_url, "alice", &["--dump-tokens", &dump_arg, "call", "whoami_token", "{}"])
            .await?;
    let result =
        out["results"].as_array().and_then(|r| r.first()).map(|r| r["result"].clone()).context("a result")?;
    let claims = claims_of(&result)?;
    let client_token: Value = serde_json::from_str(&std::fs::read_to_string(&dump)?)?;
    let _ = std::fs::remove_file(&dump);
    ensure!(claims["aud"] == json!(exchange_upstream.url()), "the upstream's own audience: {claims}");
    ensure!(claims["iss"] == json!(issuer) && claims["act"]["sub"] == "mcpgw-gateway", "{claims}");
    ensure!(claims["scope"] == "mcp:tools", "scopes narrowed to the server's: {claims}");
    let (_, users) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/users", None).await?;
    let alice = users["items"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["email"] == "alice@example.com"))
        .context("alice")?;
    ensure!(claims["sub"] == alice["id"], "on behalf of alice: {claims} {alice}");
    let client_access = client_token["access_token"].as_str().context("the client's token")?;
    ensure!(!result.to_string().contains(client_access), "the client's own token never reaches the upstream");

    // An API key caller is the subject too.
    let (key_id, key) = sg.gw.cp.create_api_key(json!({"name": "exchange"})).await?;
    let auth = format!("Authorization: Bearer {key}");
    let called =
        mcpgw_e2e::py_client(&exchange_url, "auto", &["--header", &auth, "call", "whoami_token", "{}"])
            .await?;
    let claims = claims_of(&called["result"])?;
    ensure!(
        claims["sub"] == json!(format!("api-key:{key_id}"))
            && claims["aud"] == json!(exchange_upstream.url()),
        "{claims}"
    );

    // Client credentials: the IdP's token for the upstream, obtained and renewed by the control plane.
    let claims = mcpgw_e2e::poll_until(
        "the client credentials token to reach the proxy",
        std::time::Duration::from_secs(20),
        || {
            let (url, auth) = (cc_url.clone(), auth.clone());
            async move {
                Ok(
                    match mcpgw_e2e::py_client(
                        &url,
                        "auto",
                        &["--header", &auth, "call", "whoami_token", "{}"],
                    )
                    .await
                    {
                        Ok(called) => claims_of(&called["result"]).ok(),
                        Err(_) => None,
                    },
                )
            }
        },
    )
    .await?;
    ensure!(claims["iss"] == json!(idp_issuer) && claims["aud"] == json!(cc_upstream.url()), "{claims}");
    ensure!(claims["client_id"] == mcpgw_e2e::idp::CLIENT.0, "the gateway's client at the IdP: {claims}");
    let (_, server) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/servers", None).await?;
    ensure!(!server.to_string().contains(mcpgw_e2e::idp::CLIENT.1), "the client secret is never shown");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_authorization_server_checks_pass() -> Result<()> {
    let (sg, _upstream, url) = gateway_with_server(None, &[]).await?;
    let issuer = sg.issuer();
    let port = mcpgw_e2e::free_port()?;
    let callback = format!("http://127.0.0.1:{port}/callback");
    let resp = reqwest::Client::new()
        .post(format!("{issuer}/oauth/register"))
        .json(&json!({"redirect_uris": [callback], "application_type": "native", "token_endpoint_auth_method": "none"}))
        .send()
        .await?;
    let client_id = resp.json::<Value>().await?["client_id"].as_str().context("client_id")?.to_owned();
    let run = mcpgw_e2e::conformance::run_authorization(
        &issuer,
        &client_id,
        &url,
        port,
        "authorization-server",
        |auth_url| {
            let callback = callback.clone();
            async move {
                let back = browser_login(&auth_url, &callback, "alice", &[]).await?;
                let query = form(
                    &back
                        .as_object()
                        .context("params")?
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>(),
                );
                // The suite's callback server receives the redirect, as a browser would deliver it.
                reqwest::get(format!("{callback}?{query}")).await?;
                Ok(())
            }
        },
    )
    .await?;
    let statuses: Vec<String> =
        run.checks.iter().map(|((s, id), c)| format!("{s}/{id}={}", c.status)).collect();
    ensure!(run.checks.len() >= 2, "both scenarios ran: {statuses:?}");
    for ((scenario, id), check) in &run.checks {
        ensure!(
            check.status == "SUCCESS",
            "{scenario}/{id}: {} {:?} ({statuses:?})",
            check.status,
            check.error
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_providers_added_through_rest_are_offered_at_sign_in() -> Result<()> {
    let (sg, _upstream, url) = gateway_with_server(None, &[]).await?;
    let issuer = sg.issuer();
    let login = mcpgw_e2e::idp::LoginIdp {
        users: users(),
        client: ("corp-client".into(), "corp-secret".into(), format!("{issuer}/oauth/callback")),
        entra: Some("0f0e0d0c-aaaa-bbbb-cccc-000000000001".into()),
    };
    let corp = mcpgw_e2e::Idp::start_login(&login).await?;
    let body = json!({"name": "corp", "issuer": corp.issuer(), "client_id": "corp-client", "client_secret": "corp-secret"});
    let (status, created) =
        sg.gw.cp.api(reqwest::Method::POST, "/api/v1/identity-providers", Some(body.clone())).await?;
    ensure!(status == 201 && created.get("client_secret").is_none(), "{status} {created}");
    let (status, _) = sg.gw.cp.api(reqwest::Method::POST, "/api/v1/identity-providers", Some(body)).await?;
    ensure!(status == 409, "a name is taken once: {status}");
    let unreachable =
        json!({"name": "gone", "issuer": "http://127.0.0.1:9/x", "client_id": "c", "client_secret": "s"});
    let (status, doc) =
        sg.gw.cp.api(reqwest::Method::POST, "/api/v1/identity-providers", Some(unreachable)).await?;
    ensure!(
        status == 502 && doc["code"] == "identity_provider_unavailable",
        "checked before stored: {status} {doc}"
    );

    // Two IdPs: the sign-in page offers both ("corp" first, by name); the SDK client signs in at corp.
    let out = py_oauth_client(&url, "bob", &["call", "echo", r#"{"message":"via corp"}"#]).await?;
    ensure!(out.to_string().contains("via corp"), "{out}");
    let (_, users) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/users", None).await?;
    ensure!(
        users["items"].as_array().is_some_and(|u| u.iter().any(|u| u["issuer"] == json!(corp.issuer()))),
        "the user is recorded with corp as issuer: {users}"
    );
    // The choice is bound to the browser that started the sign-in.
    let client_id = register(&issuer).await?;
    let page = reqwest::get(authorize_url(&issuer, &client_id, &url, VERIFIER, "s")).await?.text().await?;
    let request = page
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .context("a request id")?;
    let no_cookie = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let resp = no_cookie.get(format!("{issuer}/oauth/login?request={request}&idp=corp")).send().await?;
    ensure!(resp.status() == 403, "a choice from another browser: {}", resp.status());

    let id = created["id"].as_str().context("id")?;
    let (status, _) =
        sg.gw.cp.api(reqwest::Method::DELETE, &format!("/api/v1/identity-providers/{id}"), None).await?;
    ensure!(status == 204);
    let (_, listed) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/identity-providers", None).await?;
    ensure!(listed["items"] == json!([]), "{listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_puts_its_users_in_the_tenant_its_claim_names() -> Result<()> {
    let (sg, upstream, default_url) = gateway_with_server(None, &[]).await?;
    let issuer = sg.issuer();
    let login = mcpgw_e2e::idp::LoginIdp {
        users: json!({"carol": {"email": "carol@acme.test", "org": "acme", "groups": ["acme-calculators"]}}),
        client: ("corp-client".into(), "corp-secret".into(), format!("{issuer}/oauth/callback")),
        entra: None,
    };
    let corp = mcpgw_e2e::Idp::start_login(&login).await?;
    let body = json!({"name": "corp", "issuer": corp.issuer(), "client_id": "corp-client",
        "client_secret": "corp-secret", "tenant_claim": "org"});
    let (status, created) =
        sg.gw.cp.api(reqwest::Method::POST, "/api/v1/identity-providers", Some(body)).await?;
    ensure!(status == 201 && created["tenant_claim"] == "org", "{status} {created}");
    let server = json!({"name": "acme-tools", "endpoint_url": upstream.url(), "transport_type": "streamable_http",
        "tenant_id": "acme"});
    let (status, doc) = sg.gw.cp.api(reqwest::Method::POST, "/api/v1/servers", Some(server)).await?;
    ensure!(status == 201, "{status} {doc}");
    let role = json!({"name": "calculator", "tenant_id": "acme", "rules": [{"server": "acme-tools", "tools": ["add"]}],
        "idp_groups": ["acme-calculators"]});
    let (status, doc) = sg.gw.cp.api(reqwest::Method::POST, "/api/v1/roles", Some(role)).await?;
    ensure!(status == 201, "{status} {doc}");
    sg.gw.proxy.wait_routable("acme-tools", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;

    // Carol's `org` claim puts her in acme: its server is hers, with the role her group maps to there.
    let acme_url = sg.gw.proxy.url("acme-tools");
    let out = py_oauth_client(
        &acme_url,
        "carol",
        &["call", "add", r#"{"a": 40, "b": 2}"#, "call", "echo", r#"{"message": "no"}"#],
    )
    .await;
    let text = format!("{out:?}");
    ensure!(
        text.contains("42") && text.contains("Unknown tool: echo"),
        "carol in acme, as a calculator: {text}"
    );
    let (_, users) = sg.gw.cp.api(reqwest::Method::GET, "/api/v1/users", None).await?;
    let carol =
        users["items"].as_array().and_then(|u| u.iter().find(|u| u["email"] == "carol@acme.test")).cloned();
    ensure!(carol.as_ref().is_some_and(|c| c["tenant_id"] == "acme"), "carol is recorded in acme: {users}");
    // The default tenant's server does not exist for her.
    let out = format!(
        "{:?}",
        py_oauth_client(&default_url, "carol", &["call", "echo", r#"{"message": "x"}"#]).await
    );
    ensure!(
        out.contains("no MCP server named") || out.contains("unknown_server"),
        "another tenant's server: {out}"
    );
    Ok(())
}
