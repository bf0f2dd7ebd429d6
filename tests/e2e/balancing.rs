//! Balancing and session affinity across replicas: three Python instances (`whoami` names them a, b,
//! c) behind one server name and two proxy replicas sharing a session key. Thirty legacy sessions
//! alternate between the replicas call by call; every call must land on the instance that holds its
//! session, and the sessions must spread over the instances as the server's policy says:
//!
//! - `round_robin`: exactly 10/10/10 (each replica starts 15 sessions: 5 full turns).
//! - `weighted` 1:2:3: within one session of 5/10/15 (smooth weighted round robin keeps every prefix of
//!   its schedule within one pick of the ideal share on each replica).
//! - `random` (power of two choices): every instance gets between 2 and 20 of the 30 sessions (with
//!   nothing in flight each pick is uniform: a false alarm has a probability of about 3·10⁻⁴).
//! - `consistent_hash` on a header: every session with the same key lands on the same instance through
//!   either replica, the keys use more than one instance, and without the header (or with
//!   `client_ip`) every session from 127.0.0.1 lands on one instance.
//! - `least_connections`: with nothing in flight ties rotate, so sequential sessions spread evenly
//!   (10 ± 2 each); with two slow calls in flight on one instance through a replica, that replica
//!   starts no new session there and its `/routes` shows `active_requests: 2` for it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use mcpgw_e2e::dataplane::{CuttablePost, Fleet, ReplicatedSession, looks_sealed, route_instance};
use mcpgw_e2e::mcp::headers;
use mcpgw_e2e::poll_until;
use mcpgw_e2e::process::log_dir;
use serde_json::{Value, json};

const SESSIONS: usize = 30;
/// Calls per session after `initialize`, alternating replicas (the first one on the other replica).
const CALLS: usize = 4;
const NAMES: [&str; 3] = ["a", "b", "c"];

/// Registration of `name` over the fleet's instances with `weights` and the policy fields in `extra`.
fn body(fleet: &Fleet, name: &str, weights: &[u32], extra: Value) -> Value {
    let mut body = fleet.instances_body(name, weights);
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// Opens `SESSIONS` sessions, session `i` through replica `i % 2` with `header(i)`, and makes `CALLS`
/// calls in each, alternating replicas; every call must reach the session's instance. Returns the
/// sessions.
async fn run_sessions(
    fleet: &Fleet,
    name: &str,
    header: impl Fn(usize) -> Option<(String, String)>,
) -> Result<Vec<ReplicatedSession>> {
    let urls = fleet.urls(name);
    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let extra: Vec<(String, String)> = header(i).into_iter().collect();
        let session = ReplicatedSession::open(&urls, i % 2, &extra).await?;
        assert!(
            looks_sealed(&session.token),
            "session {i}: Mcp-Session-Id is not a sealed token: {}",
            session.token
        );
        for k in 0..CALLS {
            let replica = (i + 1 + k) % 2;
            let seen =
                session.instance_via(replica).await.with_context(|| format!("session {i}, call {k}"))?;
            assert_eq!(
                seen,
                session.instance,
                "session {i} (initialized through replica {}, on {}): call {k} through replica {replica} \
                 reached {seen}",
                i % 2,
                session.instance
            );
        }
        sessions.push(session);
    }
    Ok(sessions)
}

fn spread(sessions: &[ReplicatedSession]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = NAMES.iter().map(|n| ((*n).to_owned(), 0)).collect();
    for s in sessions {
        *counts.entry(s.instance.clone()).or_default() += 1;
    }
    counts
}

/// Starts the fleet and registers `name` with `weights` and the policy in `extra`.
async fn fleet_with(name: &str, weights: &[u32], extra: Value) -> Result<Fleet> {
    let fleet = Fleet::start(&NAMES).await?;
    fleet.register(body(&fleet, name, weights, extra)).await?;
    Ok(fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_sessions_evenly_and_keeps_each_on_its_instance() -> Result<()> {
    let fleet = fleet_with("lb-rr", &[], json!({"load_balancing": "round_robin"})).await?;
    let sessions = run_sessions(&fleet, "lb-rr", |_| None).await?;
    let counts = spread(&sessions);
    eprintln!("round_robin spread over {SESSIONS} sessions: {counts:?}");
    let expected: BTreeMap<String, usize> = NAMES.iter().map(|n| ((*n).to_owned(), 10)).collect();
    assert_eq!(counts, expected, "round_robin must give each instance exactly a third");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_spreads_sessions_by_weight() -> Result<()> {
    let fleet = fleet_with("lb-weighted", &[1, 2, 3], json!({"load_balancing": "weighted"})).await?;
    let sessions = run_sessions(&fleet, "lb-weighted", |_| None).await?;
    let counts = spread(&sessions);
    eprintln!("weighted 1:2:3 spread over {SESSIONS} sessions: {counts:?}");
    for (name, weight) in NAMES.iter().zip([1usize, 2, 3]) {
        let ideal = SESSIONS * weight / 6;
        let got = counts[*name];
        assert!(
            got.abs_diff(ideal) <= 1,
            "weighted: {name} (weight {weight}) got {got} sessions, ideal {ideal} ± 1: {counts:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_sessions_over_every_instance() -> Result<()> {
    let fleet = fleet_with("lb-random", &[], json!({"load_balancing": "random"})).await?;
    let sessions = run_sessions(&fleet, "lb-random", |_| None).await?;
    let counts = spread(&sessions);
    eprintln!("random spread over {SESSIONS} sessions: {counts:?}");
    for (name, got) in &counts {
        assert!(
            (2..=20).contains(got),
            "random: {name} got {got} of {SESSIONS} sessions (bound 2..=20): {counts:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_one_instance_across_replicas() -> Result<()> {
    const KEYS: usize = 10;
    let fleet = fleet_with(
        "lb-hash",
        &[],
        json!({"load_balancing": "consistent_hash", "hash_key": "header:x-tenant"}),
    )
    .await?;
    let sessions =
        run_sessions(&fleet, "lb-hash", |i| Some(("X-Tenant".to_owned(), format!("tenant-{}", i % KEYS))))
            .await?;
    let mut by_key: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (i, s) in sessions.iter().enumerate() {
        *by_key.entry(format!("tenant-{}", i % KEYS)).or_default().entry(s.instance.clone()).or_default() +=
            1;
    }
    eprintln!(
        "consistent_hash on X-Tenant: sessions per key and instance {by_key:?}; spread {:?}",
        spread(&sessions)
    );
    for (key, instances) in &by_key {
        assert_eq!(
            instances.len(),
            1,
            "consistent_hash: sessions with {key} landed on several instances: {instances:?}"
        );
    }
    let used: std::collections::BTreeSet<&String> = by_key.values().flat_map(|m| m.keys()).collect();
    assert!(
        used.len() >= 2,
        "consistent_hash: {KEYS} keys all on one instance ({used:?}); p = 3^-9 by chance"
    );

    // Without the header the key falls back to the client address: everything from 127.0.0.1 together.
    let urls = fleet.urls("lb-hash");
    let mut fallback = Vec::new();
    for i in 0..6 {
        fallback.push(ReplicatedSession::open(&urls, i % 2, &[]).await?.instance);
    }
    eprintln!("consistent_hash without the header: {fallback:?}");
    assert!(
        fallback.iter().all(|i| *i == fallback[0]),
        "header missing: sessions from one address split: {fallback:?}"
    );

    // hash_key client_ip: the same, on a server of its own.
    let ip_name = "lb-hash-ip";
    fleet
        .register(body(
            &fleet,
            ip_name,
            &[],
            json!({"load_balancing": "consistent_hash", "hash_key": "client_ip"}),
        ))
        .await?;
    let urls = fleet.urls(ip_name);
    let mut by_ip = Vec::new();
    for i in 0..6 {
        let s = ReplicatedSession::open(&urls, i % 2, &headers(&[("X-Tenant", &format!("t{i}"))])).await?;
        assert_eq!(s.instance_via((i + 1) % 2).await?, s.instance, "client_ip session {i} across replicas");
        by_ip.push(s.instance);
    }
    eprintln!("consistent_hash on client_ip: {by_ip:?}");
    assert!(by_ip.iter().all(|i| *i == by_ip[0]), "client_ip: sessions from 127.0.0.1 split: {by_ip:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_instance() -> Result<()> {
    let name = "lb-least";
    let fleet = fleet_with(name, &[], json!({"load_balancing": "least_connections"})).await?;
    let sessions = run_sessions(&fleet, name, |_| None).await?;
    let counts = spread(&sessions);
    eprintln!("least_connections spread over {SESSIONS} sequential sessions: {counts:?}");
    for (instance, got) in &counts {
        assert!(
            got.abs_diff(10) <= 2,
            "least_connections, nothing in flight: {instance} got {got} (10 ± 2): {counts:?}"
        );
    }

    // Two slow calls in flight on instance `busy` through replica 0.
    let busy = sessions[0].instance.clone();
    let holders: Vec<&ReplicatedSession> = sessions.iter().filter(|s| s.instance == busy).take(2).collect();
    let markers = log_dir();
    let mut slow = Vec::new();
    for (n, s) in holders.iter().enumerate() {
        let client = &s.clients[0];
        let mut hdrs = vec![("Mcp-Session-Id".to_owned(), s.token.clone())];
        hdrs.push(("MCP-Protocol-Version".to_owned(), client.protocol_version.clone().unwrap_or_default()));
        let marker = markers.join(format!("busy-{n}"));
        let call = json!({"jsonrpc": "2.0", "id": 1000 + n, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"seconds": 20, "marker": marker.to_string_lossy()}}});
        slow.push(CuttablePost::send(client.url(), &hdrs, &call));
    }
    let registered = fleet.proxies[0].routes().await?;
    let busy_url = fleet.instance(&busy).url();
    let busy_id = mcpgw_e2e::dataplane::route(&registered, name)
        .and_then(|s| s["instances"].as_array())
        .and_then(|list| list.iter().find(|i| i["endpoint_url"].as_str() == Some(busy_url.as_str())))
        .and_then(|i| i["id"].as_str())
        .context("busy instance in /routes")?
        .to_owned();
    let proxy = &fleet.proxies[0];
    poll_until("2 active requests on the busy instance in /routes", Duration::from_secs(10), || async {
        let routes = proxy.routes().await?;
        let active = route_instance(&routes, name, &busy_id).and_then(|i| i["active_requests"].as_u64());
        Ok((active == Some(2)).then_some(()))
    })
    .await?;

    let urls = fleet.urls(name);
    let mut while_busy = Vec::new();
    for _ in 0..6 {
        while_busy.push(ReplicatedSession::open(&urls, 0, &[]).await?.instance);
    }
    eprintln!(
        "least_connections with 2 calls in flight on {busy} (replica 0): new sessions went to {while_busy:?}"
    );
    assert!(
        !while_busy.contains(&busy),
        "least_connections: replica 0 started a session on {busy}, which has 2 requests in flight: {while_busy:?}"
    );
    let others: std::collections::BTreeSet<&String> = while_busy.iter().collect();
    assert_eq!(others.len(), 2, "the two idle instances share the new sessions: {while_busy:?}");
    drop(slow);
    Ok(())
}

/// The rotation of `round_robin` must not restart whenever the routing table changes (any server's
/// registration, any instance's health): each restart sends the next session to the first instance
/// again, so frequent updates skew new sessions towards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rotation_survives_unrelated_routing_updates() -> Result<()> {
    let name = "lb-rotation";
    let fleet = fleet_with(name, &[], json!({"load_balancing": "round_robin"})).await?;
    let url = [fleet.proxies[0].url(name)];
    let first = ReplicatedSession::open(&url, 0, &[]).await?.instance;
    let second = ReplicatedSession::open(&url, 0, &[]).await?.instance;
    assert_ne!(first, second, "two sessions in a row on one instance");

    // Another server is registered: the table every replica serves changes, this server does not.
    let other = fleet.instance("a").url();
    fleet.register(json!({"name": "lb-unrelated", "endpoint_url": other})).await?;
    let third = ReplicatedSession::open(&url, 0, &[]).await?.instance;
    eprintln!("round robin across an unrelated update: {first}, {second}, then {third}");
    assert!(
        third != first && third != second,
        "after an unrelated routing update round robin went back to {third} instead of the third instance \
         (sessions so far: {first}, {second})"
    );
    Ok(())
}
