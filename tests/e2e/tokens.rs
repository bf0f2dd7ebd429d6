//! Session tokens that are not the proxy's own: forged, tampered, truncated, expired, sealed by another
//! deployment's key, bound to another server or role, or an upstream's raw session id. Every one gets
//! 404 (the client re-initializes), on POST, GET and DELETE, never a crash and never an instance; the
//! real sessions keep working on their instances afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcpgw_e2e::dataplane::{Fleet, LegacySseClient, OTHER_SESSION_KEY, ReplicatedSession, SESSION_KEY};
use mcpgw_e2e::{EverythingServer, McpHttp, Proxy, poll_until};
use reqwest::StatusCode;
use serde_json::json;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Base64url without padding (the token alphabet), for crafting tokens.
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn unb64url(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> =
        text.bytes().map(|c| A.iter().position(|a| *a == c).expect("base64url") as u32).collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | (v << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The token with one bit flipped at byte `at` (counted from the end when negative).
fn flip(token: &str, at: isize) -> String {
    let mut raw = unb64url(token);
    let i = if at < 0 { raw.len() - at.unsigned_abs() } else { at as usize };
    raw[i] ^= 0x01;
    b64url(&raw)
}

/// POST (tools/call whoami), GET and DELETE with `token` through `url`: each must be 404, the POST a
/// JSON-RPC -32001 error carrying the request's id.
async fn refused(url: &str, token: &str, what: &str) -> Result<()> {
    let mut client = McpHttp::new(url);
    client.session_id = Some(token.to_owned());
    client.protocol_version = Some(mcpgw_e2e::mcp::LEGACY_VERSION.to_owned());
    let id = json!(4242);
    let resp = client
        .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}))
        .await
        .with_context(|| format!("{what}: POST"))?;
    assert_eq!(
        resp.status,
        StatusCode::NOT_FOUND,
        "{what}: POST {url} answered {}: {}",
        resp.status,
        resp.text()
    );
    let body = resp.json().with_context(|| format!("{what}: POST body"))?;
    assert_eq!(body["id"], id, "{what}: {body}");
    assert_eq!(body.pointer("/error/code"), Some(&json!(-32001)), "{what}: {body}");
    assert!(body.get("result").is_none(), "{what}: {body}");
    let get = client.open_get_stream().await.with_context(|| format!("{what}: GET"))?;
    assert_eq!(get.status, StatusCode::NOT_FOUND, "{what}: GET {url}: {:?}", get.body);
    let delete = client.delete_session().await.with_context(|| format!("{what}: DELETE"))?;
    assert_eq!(delete, StatusCode::NOT_FOUND, "{what}: DELETE {url}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_session_tokens_get_404_and_never_reach_an_instance() -> Result<()> {
    let name = "py-tokens";
    let fleet =
        Fleet::start_with(&NAMES, &[&["--session-key", SESSION_KEY], &["--session-key", OTHER_SESSION_KEY]])
            .await?;
    fleet.register(fleet.instances_body(name, &[])).await?;
    fleet.register(fleet.instances_body("py-tokens-other", &[])).await?;
    let everything = EverythingServer::start_sse().await?;
    let sse_name = "sse-tokens";
    fleet
        .register(json!({"name": sse_name, "endpoint_url": everything.url(), "transport_type": "sse"}))
        .await?;

    let ours = fleet.proxies[0].url(name);
    let theirs = fleet.proxies[1].url(name);
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(ReplicatedSession::open(std::slice::from_ref(&ours), 0, &[]).await?);
    }
    let token = sessions[0].token.clone();
    let raw = unb64url(&token);
    eprintln!("a session token: {} bytes of base64url ({} raw)", token.len(), raw.len());

    // The upstream's own session id, obtained directly from an instance.
    let mut direct = McpHttp::new(fleet.instance("a").url());
    let upstream_id = direct.initialize().await?.session_id.context("Python gives a session id")?;

    let mut forged_same_header = raw.clone();
    for (i, b) in forged_same_header.iter_mut().enumerate().skip(2) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    let cases: Vec<(&str, String)> = vec![
        ("random bytes", b64url(&(0..raw.len()).map(|i| (i * 97 + 13) as u8).collect::<Vec<_>>())),
        ("forged body under the right format and key id", b64url(&forged_same_header)),
        ("tag bit flipped", flip(&token, -1)),
        ("ciphertext bit flipped", flip(&token, 20)),
        ("nonce bit flipped", flip(&token, 3)),
        ("key id changed", flip(&token, 1)),
        ("format byte changed", flip(&token, 0)),
        ("last character dropped", token[..token.len() - 1].to_owned()),
        ("truncated to half", token[..token.len() / 2].to_owned()),
        ("truncated to 10 characters", token[..10].to_owned()),
        ("empty", String::new()),
        ("not base64", "not/a*token!".to_owned()),
        ("the upstream's raw session id", upstream_id.clone()),
        ("two tokens joined", format!("{token}{}", sessions[1].token)),
    ];
    for (what, forged) in &cases {
        refused(&ours, forged, what).await?;
    }
    // A real token replayed where it does not belong.
    refused(&theirs, &token, "replayed on a replica with another key").await?;
    refused(&fleet.proxies[0].url("py-tokens-other"), &token, "replayed on another server").await?;

    // HTTP+SSE message endpoint: forged, cross-role and cross-key session ids.
    let mut sse = LegacySseClient::connect(&format!("{}/sse", fleet.proxies[0].url(sse_name))).await?;
    let sse_token = sse.endpoint.split("sessionId=").nth(1).context("sessionId in the endpoint")?.to_owned();
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    let message_url = |proxy: &Proxy, id: &str| format!("{}/message?sessionId={id}", proxy.url(sse_name));
    for (what, url) in [
        ("forged sessionId", message_url(&fleet.proxies[0], &flip(&sse_token, -1))),
        ("a Mcp-Session-Id token as sessionId", message_url(&fleet.proxies[0], &token)),
        ("sessionId replayed on a replica with another key", message_url(&fleet.proxies[1], &sse_token)),
    ] {
        let (status, body) = sse.post_to(&url, &ping).await?;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}: {body}");
    }
    let (status, body) = sse.post_to(&format!("{}/message", fleet.proxies[0].url(sse_name)), &ping).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "message without sessionId: {body}");
    sse.initialize().await.context("the real HTTP+SSE session after the forgeries")?;

    // An expired token: a replica with the same key and a 1 s lifetime refuses it once it is old enough.
    let short =
        Proxy::start(&fleet.cp.grpc_url(), &["--session-key", SESSION_KEY, "--session-ttl", "1s"]).await?;
    mcpgw_e2e::dataplane::wait_instances(&short, name, 3).await?;
    let issued = Instant::now();
    let short_url = short.url(name);
    poll_until("the 1 s replica to refuse the aging token", Duration::from_secs(15), || {
        let (url, token) = (short_url.clone(), token.clone());
        async move {
            let mut c = McpHttp::new(url);
            c.session_id = Some(token);
            let status = c.call("tools/list", json!({})).await.map(|m| m.get("error").is_some())?;
            Ok(status.then_some(()))
        }
    })
    .await?;
    refused(&short_url, &token, "expired").await?;
    eprintln!("token refused as expired by the 1 s replica {:?} after the check started", issued.elapsed());

    // Nothing crashed and nothing was deleted: the proxy is ready and every real session still answers
    // from its own instance (the forged DELETEs deleted nothing).
    assert_eq!(fleet.proxies[0].readyz().await?, 200);
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(s.instance_via(0).await?, s.instance, "real session {i} after the forgeries");
    }
    let fresh = ReplicatedSession::open(std::slice::from_ref(&ours), 0, &[]).await?;
    assert!(NAMES.contains(&fresh.instance.as_str()));
    let result = sessions[0].clients[0].call("tools/list", json!({})).await?;
    assert!(result.pointer("/result/tools").is_some(), "{result}");
    Ok(())
}
