//! Who may call, with real clients and real processes: API keys created through the REST API work with
//! every client CLI through a proxy as deployed (credentials required), a caller without one gets the
//! RFC 9728 challenge, and a deleted key is refused on every proxy within a second. JWT access tokens of a
//! real OpenID provider trusted through the REST API work for the exact resource they were issued for,
//! stop working when the provider rotates its key (the control plane refreshes the JWKS) and when they
//! expire. Upstream credentials reach the upstream, the client's never do.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::dataplane::ts_client;
use mcpgw_e2e::fake::RecordingOptions;
use mcpgw_e2e::{
    Gateway, Idp, Proxy, PyServer, PyServerOpts, RecordingUpstream, SECRETS_KEY, fastmcp, inspector,
    poll_until, py_client,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{first_text, tool_names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_call_through_the_gateway_with_an_api_key() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-identity", PyServerOpts::default()).await?;
    let url = gw.add_server("py-identity", &upstream.url(), "streamable_http").await?;
    let (_, key) = gw.cp.create_api_key(json!({"name": "e2e clients"})).await?;
    ensure!(key.starts_with("mcpgw_") && key.len() >= 40, "a recognisable key of at least 256 bits: {key}");
    let auth = format!("Authorization: Bearer {key}");

    for mode in ["auto", "legacy"] {
        let listed = py_client(&url, mode, &["--header", &auth, "list-tools"]).await?;
        ensure!(tool_names(&listed).iter().any(|t| t == "echo"), "python {mode}: {listed}");
        let called =
            py_client(&url, mode, &["--header", &auth, "call", "echo", r#"{"message":"keyed"}"#]).await?;
        ensure!(first_text(&called["result"]) == Some("keyed"), "python {mode}: {called}");
    }
    let ts =
        ts_client(&url, "legacy", &["--header", &auth, "call", "echo", r#"{"message":"ts keyed"}"#]).await?;
    ensure!(first_text(&ts["result"]) == Some("ts keyed"), "ts: {ts}");
    let listed = inspector(&url, &["--header", &auth, "--method", "tools/list"]).await?;
    ensure!(tool_names(&listed).iter().any(|t| t == "echo"), "inspector: {listed}");
    let listed = fastmcp(&["list", &url, "--auth", &key]).await?;
    ensure!(listed.to_string().contains("\"echo\""), "fastmcp list: {listed}");
    let called = fastmcp(&["call", &url, "echo", "message=fast keyed", "--auth", &key]).await?;
    ensure!(called.to_string().contains("fast keyed"), "fastmcp call: {called}");

    // Without the key, the client is told where to authenticate.
    let anonymous = py_client(&url, "legacy", &["list-tools"]).await;
    let refused = anonymous.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(refused.contains("needs credentials"), "a client without credentials is refused: {refused}");
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await?;
    ensure!(resp.status() == 401, "{}", resp.status());
    let challenge = resp.headers().get("www-authenticate").context("no challenge")?.to_str()?.to_owned();
    let metadata = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no resource_metadata in the challenge")?
        .to_owned();
    let prm: serde_json::Value = reqwest::get(&metadata).await?.json().await?;
    ensure!(prm["resource"] == json!(url), "the metadata names the exact resource: {prm}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_refused_on_every_proxy_within_a_second() -> Result<()> {
    let gw = Gateway::start_closed(&[]).await?;
    let second = Proxy::start_closed(&gw.cp.grpc_url(), &[]).await?;
    let upstream = PyServer::start("py-revoke", PyServerOpts::default()).await?;
    gw.add_server("py-revoke", &upstream.url(), "streamable_http").await?;
    second.wait_routable("py-revoke", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    let (id, key) = gw.cp.create_api_key(json!({"name": "short-lived"})).await?;
    let urls = [gw.proxy.url("py-revoke"), second.url("py-revoke")];
    let http = reqwest::Client::new();
    let status = |url: String| {
        let req = http
            .post(url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    // The key reaches both proxies (a creation is streamed like any change). Whatever the upstream
    // answers a sessionless ping, anything but 401 means the gateway let the key through.
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(5);
        while status(url.clone()).await? == 401 {
            ensure!(Instant::now() < deadline, "the new key never worked on {url}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (code, body) = gw.cp.api(reqwest::Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await?;
    ensure!(code == 204, "delete: {code} {body}");
    let deleted = Instant::now();
    let mut refused_after = Vec::new();
    for url in &urls {
        while status(url.clone()).await? != 401 {
            ensure!(
                deleted.elapsed() < Duration::from_secs(1),
                "{url} still accepts the deleted key after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        refused_after.push(deleted.elapsed());
    }
    eprintln!("deleted key refused by both proxies after {refused_after:?}");
    Ok(())
}

/// The routing stream carries every credential, so it is closed too: a proxy presenting the control plane's
/// `--proxy-token` over TLS gets the table; one with a wrong token gets none and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_stream_needs_the_proxy_token_and_runs_over_tls() -> Result<()> {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../control-plane/tests/integration/tls");
    let (cert, key, ca) = (tls.join("server.pem"), tls.join("server.key"), tls.join("ca.pem"));
    let token = "e2e-proxy-token-0123456789";
    let db = mcpgw_e2e::TestDb::new();
    let cp = mcpgw_e2e::ControlPlane::start_with(
        &db,
        mcpgw_e2e::ADMIN_TOKEN,
        &[
            "--proxy-token",
            token,
            "--grpc-tls-cert",
            cert.to_str().context("path")?,
            "--grpc-tls-key",
            key.to_str().context("path")?,
        ],
    )
    .await?;
    let url = format!("https://localhost:{}", cp.grpc_addr().port());
    let ca = ca.to_str().context("path")?;
    let proxy = Proxy::start_closed(&url, &["--control-plane-ca", ca, "--proxy-token", token]).await?;
    let upstream = PyServer::start("py-tls", PyServerOpts::default()).await?;
    cp.register("py-tls", &upstream.url(), "streamable_http").await?;
    proxy.wait_routable("py-tls", mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;

    // A proxy with the wrong token is refused: it never becomes ready, and its log says why.
    let intruder =
        Proxy::start_unready(&url, &["--control-plane-ca", ca, "--proxy-token", "not-the-proxy-token-42"])
            .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !intruder.log_text().to_lowercase().contains("unauthenticated") {
        ensure!(Instant::now() < deadline, "no refusal in the proxy's log: {}", intruder.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(intruder.readyz().await? == 503, "a refused proxy has no table");
    ensure!(!intruder.log_text().contains("not-the-proxy-token-42"), "the token is never logged");
    Ok(())
}

/// `--jwks-refresh` of the control planes in the JWT tests.
const JWKS_REFRESH: Duration = Duration::from_secs(1);

/// The proxy's answer to a `ping` POSTed to `url` with `token`: its status and `WWW-Authenticate`.
/// Anything but 401 means the gateway let the token through (the upstream answers the sessionless ping as
/// it likes).
async fn probe(url: &str, token: &str) -> Result<(u16, String)> {
    let resp = mcpgw_e2e::http_client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await?;
    let challenge =
        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Ok((resp.status().as_u16(), challenge))
}

/// Trusts `idp` through the REST API and waits until the proxy names it in the metadata of `server`.
async fn trust(gw: &Gateway, idp: &Idp, server: &str) -> Result<Value> {
    // The default allow-list (RS256 + ES256, two key families); the provider signs with RS256.
    let body = json!({"issuer": idp.issuer()});
    let (status, issuer) = gw.cp.api(Method::POST, "/api/v1/trusted-issuers", Some(body)).await?;
    ensure!(status == 201, "trust {}: {status} {issuer}\n{}", idp.issuer(), idp.describe());
    ensure!(issuer["jwks_uri_source"] == "discovered" && issuer["keys"][0]["alg"] == "RS256", "{issuer}");
    let metadata = format!("{}/.well-known/oauth-protected-resource/mcp/{server}", gw.proxy.base_url());
    let named = json!(idp.issuer());
    poll_until("the proxy to name the issuer in its metadata", Duration::from_secs(10), || async {
        let prm: Value = mcpgw_e2e::http_client().get(&metadata).send().await?.json().await?;
        Ok(prm["authorization_servers"].as_array().is_some_and(|s| s.contains(&named)).then_some(()))
    })
    .await?;
    Ok(issuer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_from_a_trusted_issuer_work_for_their_resource_until_the_key_rotates() -> Result<()> {
    let mut idp = Idp::start(300).await?;
    let refresh = format!("{}ms", JWKS_REFRESH.as_millis());
    let gw =
        Gateway::start_closed_with(&["--jwks-refresh", &refresh, "--ssrf-allow", "loopback"], &[]).await?;
    let upstream = PyServer::start("py-jwt", PyServerOpts::default()).await?;
    let url = gw.add_server("py-jwt", &upstream.url(), "streamable_http").await?;
    let other_url = gw.add_server("py-jwt-other", &upstream.url(), "streamable_http").await?;
    trust(&gw, &idp, "py-jwt").await?;

    let token = idp.token(&url).await?;
    let auth = format!("Authorization: Bearer {token}");
    for mode in ["auto", "legacy"] {
        let listed = py_client(&url, mode, &["--header", &auth, "list-tools"]).await?;
        ensure!(tool_names(&listed).iter().any(|t| t == "echo"), "python {mode}: {listed}");
        let called =
            py_client(&url, mode, &["--header", &auth, "call", "echo", r#"{"message":"signed"}"#]).await?;
        ensure!(first_text(&called["result"]) == Some("signed"), "python {mode}: {called}");
    }

    // A token for another server's URL is refused here, and works where it belongs.
    let foreign = idp.token(&other_url).await?;
    let (status, challenge) = probe(&url, &foreign).await?;
    ensure!(status == 401 && challenge.contains("error=\"invalid_token\""), "{status} {challenge}");
    ensure!(probe(&other_url, &foreign).await?.0 != 401, "the foreign token is valid for its own resource");

    // The provider rotates its key: once the control plane has fetched the new JWKS, every proxy refuses
    // tokens signed with the old key and accepts the new ones.
    idp.restart().await?;
    let restarted = Instant::now();
    let refused = poll_until("the old token refused", JWKS_REFRESH + Duration::from_secs(10), || async {
        let (status, challenge) = probe(&url, &token).await?;
        Ok((status == 401).then_some(challenge))
    })
    .await
    .with_context(|| gw.cp.describe())?;
    let took = restarted.elapsed();
    ensure!(refused.contains("error=\"invalid_token\""), "{refused}");
    eprintln!(
        "the rotated-out key refused by the proxy {took:?} after the IdP restarted (--jwks-refresh {JWKS_REFRESH:?})"
    );
    ensure!(took <= JWKS_REFRESH + Duration::from_secs(3), "rotation took {took:?}");
    let fresh = idp.token(&url).await?;
    let auth = format!("Authorization: Bearer {fresh}");
    let called =
        py_client(&url, "legacy", &["--header", &auth, "call", "echo", r#"{"message":"rotated"}"#]).await?;
    ensure!(first_text(&called["result"]) == Some("rotated"), "{called}");
    let (_, issuers) = gw.cp.api(Method::GET, "/api/v1/trusted-issuers", None).await?;
    ensure!(issuers[0]["last_error"].is_null() && issuers[0]["jwks_changed_at"].is_string(), "{issuers}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_is_refused() -> Result<()> {
    let idp = Idp::start(1).await?;
    let gw = Gateway::start_closed(&[]).await?;
    let upstream = PyServer::start("py-expiry", PyServerOpts::default()).await?;
    let url = gw.add_server("py-expiry", &upstream.url(), "streamable_http").await?;
    trust(&gw, &idp, "py-expiry").await?;
    let token = idp.token(&url).await?;
    let issued = Instant::now();
    ensure!(probe(&url, &token).await?.0 != 401, "a fresh token works");
    // One second of validity plus the proxy's clock leeway (30 s): poll for the refusal, no fixed sleep.
    let challenge = poll_until("the expired token refused", Duration::from_secs(90), || async {
        let (status, challenge) = probe(&url, &token).await?;
        Ok((status == 401).then_some(challenge))
    })
    .await?;
    let after = issued.elapsed();
    ensure!(after >= Duration::from_secs(1), "refused before it expired ({after:?})");
    ensure!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    eprintln!("a token valid for 1 s refused {after:?} after it was issued (expiry + the proxy's leeway)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_credentials_reach_the_upstream_and_client_credentials_never_do() -> Result<()> {
    const SECRET: &str = "upstream-s3cret-e2e";
    let gw = Gateway::start_closed_with(&["--secrets-key", SECRETS_KEY], &[]).await?;
    let requiring = RecordingOptions { required_header: Some(("x-api-key", SECRET)), ..Default::default() };
    // Two upstreams requiring the same header: one registered with it, one with another value.
    let upstream = RecordingUpstream::start_with(requiring).await?;
    let refusing = RecordingUpstream::start_with(requiring).await?;
    let register = |name: &str, url: String, value: &str| {
        json!({"name": name, "endpoint_url": url, "auto_discover": false,
            "upstream_auth": {"type": "static_header", "header": "X-API-Key", "value": value}})
    };
    for (name, url, value) in
        [("recorded", upstream.url(), SECRET), ("refused", refusing.url(), "not-the-secret")]
    {
        let (status, body) =
            gw.cp.api(Method::POST, "/api/v1/servers", Some(register(name, url, value))).await?;
        ensure!(status == 201, "{name}: {status} {body}");
        ensure!(body["upstream_auth"] == json!({"type": "static_header", "header": "X-API-Key"}), "{body}");
        ensure!(!body.to_string().contains(value), "the value is never returned: {body}");
        gw.proxy.wait_routable(name, mcpgw_e2e::gateway::ROUTABLE_TIMEOUT).await?;
    }
    let (_, key) = gw.cp.create_api_key(json!({"name": "caller"})).await?;
    let call = |name: &str| {
        mcpgw_e2e::http_client()
            .post(gw.proxy.url(name))
            .bearer_auth(&key)
            .header("cookie", "session=client-cookie")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":7001,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#)
            .send()
    };
    let resp = call("recorded").await?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    ensure!(
        status == 200 && body["id"] == 7001 && body["result"]["receivedBytes"].is_number(),
        "{status} {body}"
    );

    let received = upstream.received();
    let calls = received.iter().filter(|r| String::from_utf8_lossy(&r.body).contains("\"id\":7001")).count();
    ensure!(calls == 1, "the call reached the upstream once ({calls})");
    for r in &received {
        // The control plane's health probes and the proxied call alike.
        ensure!(
            r.header("x-api-key") == Some(SECRET),
            "{} {} without the credential: {:?}",
            r.method,
            r.target,
            r.headers
        );
        ensure!(
            r.header("authorization").is_none() && r.header("cookie").is_none(),
            "client credentials forwarded: {:?}",
            r.headers
        );
        ensure!(
            !r.headers.iter().any(|(_, v)| v.contains(&key)),
            "the API key reached the upstream: {:?}",
            r.headers
        );
    }

    // An upstream that refuses the gateway's credential is the gateway's problem, not the client's.
    let resp = call("refused").await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    ensure!(status == 502 && text.contains("upstream_auth_refused"), "{status} {text}");
    ensure!(!text.contains("invalid_token"), "the upstream's challenge is not relayed: {text}");
    let tried = refusing.received();
    ensure!(tried.iter().any(|r| String::from_utf8_lossy(&r.body).contains("\"id\":7001")), "forwarded once");
    ensure!(
        tried
            .iter()
            .all(|r| r.header("x-api-key") == Some("not-the-secret") && r.header("authorization").is_none()),
        "the refusing upstream saw the gateway's credential only"
    );
    let (_, export) = gw.cp.get_text("/api/v1/admin/export").await?;
    ensure!(export.contains("X-API-Key") && !export.contains(SECRET), "{export}");
    Ok(())
}
