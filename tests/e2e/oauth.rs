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
