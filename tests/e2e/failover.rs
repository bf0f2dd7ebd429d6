//! Instance failure and proxy restarts with real Python instances behind two replicas sharing a key:
//! a killed instance's sessions get 404 and re-initialize onto the others while every other session
//! keeps working; each replica's circuit breaker opens for it (metrics, `/routes`) and closes once the
//! instance is back on its port; a replica restarted with the same key carries on every session.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcpgw_e2e::dataplane::{Fleet, ReplicatedSession, SESSION_KEY, metric, route_instance};
use mcpgw_e2e::{Proxy, poll_until};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NAMES: [&str; 3] = ["a", "b", "c"];
const VICTIM: &str = "b";

async fn open_sessions(fleet: &Fleet, name: &str, count: usize) -> Result<Vec<ReplicatedSession>> {
    let urls = fleet.urls(name);
    let mut sessions = Vec::with_capacity(count);
    for i in 0..count {
        sessions.push(ReplicatedSession::open(&urls, i % 2, &[]).await?);
    }
    Ok(sessions)
}

fn spread(sessions: &[ReplicatedSession]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in sessions {
        *counts.entry(s.instance.clone()).or_insert(0) += 1;
    }
    counts
}

/// Breaker state (0 closed, 1 open, 2 half-open) and transitions to `to` of one instance in a replica's
/// metrics; a missing sample reads as closed / none.
async fn breaker(proxy: &Proxy, server: &str, instance: &str, to: &str) -> Result<(f64, f64)> {
    let text = proxy.metrics().await?;
    let state = metric(&text, "mcpgw_proxy_breaker_state", &[("server", server), ("instance", instance)]);
    let moves = metric(&text, "mcpgw_proxy_breaker_transitions_total", &[("server", server), ("to", to)]);
    Ok((state.unwrap_or(0.0), moves.unwrap_or(0.0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_sessions_reinitialize_elsewhere_and_its_breaker_opens_then_closes() -> Result<()> {
    let name = "py-failover";
    let mut fleet = Fleet::start(&NAMES).await?;
    let mut body = fleet.instances_body(name, &[]);
    body["load_balancing"] = json!("round_robin");
    body["circuit_breaker"] = json!({"consecutive_failures": 3, "open": "2s", "max_open": "4s"});
    let registered = fleet.register(body).await?;
    let victim_id = registered.instance_id(&fleet.instance(VICTIM).url()).context("victim id")?.to_owned();

    let mut sessions = open_sessions(&fleet, name, 30).await?;
    let before = spread(&sessions);
    eprintln!("sessions before the kill: {before:?}");
    assert_eq!(before.get(VICTIM), Some(&10), "round robin puts 10 of 30 sessions on {VICTIM}: {before:?}");

    fleet.instance_mut(VICTIM).kill().await?;
    let killed = Instant::now();

    // Round 1: the victim's sessions get 404 (and re-initialize); every other session answers as before.
    let mut first_404: Option<Duration> = None;
    let mut moved = BTreeMap::new();
    for (i, session) in sessions.iter_mut().enumerate() {
        let replica = (i + 1) % 2;
        let (status, message) = session.whoami(replica).await?;
        if session.instance == VICTIM {
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "session {i} on the killed instance through replica {replica}: {message}\n{}",
                fleet.proxies[replica].describe()
            );
            assert_eq!(message.pointer("/error/code"), Some(&json!(-32001)), "session {i}: {message}");
            assert_eq!(message.pointer("/error/data/reason"), Some(&json!("session_not_found")), "{message}");
            first_404.get_or_insert_with(|| killed.elapsed());
            session.reinitialize(replica).await.with_context(|| format!("re-initialize session {i}"))?;
            assert_ne!(session.instance, VICTIM, "session {i} re-initialized onto the killed instance");
            assert_eq!(session.instance_via(1 - replica).await?, session.instance, "re-homed session {i}");
            *moved.entry(session.instance.clone()).or_insert(0) += 1;
        } else {
            let seen = message.pointer("/result/content/0/text").and_then(Value::as_str);
            assert_eq!(
                (status, seen),
                (StatusCode::OK, Some(session.instance.as_str())),
                "session {i}: {message}"
            );
        }
    }
    let first_404 = first_404.context("no session got 404")?;
    eprintln!("kill → first 404: {first_404:?}; the victim's sessions moved to {moved:?}");

    // The breaker of the victim opens on both replicas.
    let mut opened = Vec::new();
    for (replica, proxy) in fleet.proxies.iter().enumerate() {
        let victim_id = victim_id.as_str();
        let (state, shown) =
            poll_until("the victim's breaker to open", Duration::from_secs(10), || async move {
                let (state, opens) = breaker(proxy, name, victim_id, "open").await?;
                let routes = proxy.routes().await?;
                let shown = route_instance(&routes, name, victim_id)
                    .and_then(|i| i["breaker"].as_str().map(str::to_owned));
                Ok((opens >= 1.0 && state >= 1.0).then_some((state, shown)))
            })
            .await
            .with_context(|| proxy.describe())?;
        opened.push(killed.elapsed());
        eprintln!(
            "replica {replica}: breaker state {state} (1 open, 2 half-open), /routes breaker {shown:?}"
        );
        assert!(
            matches!(shown.as_deref(), Some("open" | "half_open")),
            "replica {replica}: /routes shows breaker {shown:?} for the killed instance"
        );
    }
    eprintln!("kill → breaker open seen on replicas: {opened:?}");

    // While it is down: every session works through both replicas, new sessions avoid the victim.
    for (i, session) in sessions.iter().enumerate() {
        for replica in 0..2 {
            assert_eq!(
                session.instance_via(replica).await?,
                session.instance,
                "session {i} while {VICTIM} is down"
            );
        }
    }
    let urls = fleet.urls(name);
    for i in 0..6 {
        let s = ReplicatedSession::open(&urls, i % 2, &[]).await?;
        assert_ne!(s.instance, VICTIM, "new session {i} landed on the killed instance");
    }

    // The instance comes back on its port; new sessions probe it and the breakers close.
    fleet.instance_mut(VICTIM).restart().await?;
    let restarted = Instant::now();
    let mut closed = Vec::new();
    for replica in 0..2 {
        let proxy = &fleet.proxies[replica];
        let (urls, victim_id) = (&urls, victim_id.as_str());
        poll_until("the victim's breaker to close", Duration::from_secs(20), || async move {
            ReplicatedSession::open(urls, replica, &[]).await?;
            let (state, closes) = breaker(proxy, name, victim_id, "closed").await?;
            Ok((state == 0.0 && closes >= 1.0).then_some(()))
        })
        .await
        .with_context(|| proxy.describe())?;
        closed.push(restarted.elapsed());
    }
    eprintln!("restart → breaker closed on replicas: {closed:?}");
    for replica in 0..2 {
        let mut landed = Vec::new();
        for _ in 0..3 {
            landed.push(ReplicatedSession::open(&urls, replica, &[]).await?.instance);
        }
        assert!(
            landed.iter().any(|i| i == VICTIM),
            "replica {replica}: no new session on the returned instance: {landed:?}"
        );
    }
    for (i, session) in sessions.iter().enumerate() {
        for replica in 0..2 {
            assert_eq!(
                session.instance_via(replica).await?,
                session.instance,
                "session {i} after the return"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_with_the_same_key_keeps_every_session() -> Result<()> {
    let name = "py-restart";
    let mut fleet = Fleet::start(&NAMES).await?;
    fleet.register(fleet.instances_body(name, &[])).await?;
    let sessions = open_sessions(&fleet, name, 12).await?;
    eprintln!("sessions before the restart: {:?}", spread(&sessions));

    // Replica 0 goes away (killed) and a new process with the same key takes its place.
    let old = fleet.proxies.remove(0);
    let old_addr = old.listen_addr();
    drop(old);
    poll_until("the old replica to stop accepting", Duration::from_secs(10), || async move {
        Ok(tokio::net::TcpStream::connect(old_addr).await.is_err().then_some(()))
    })
    .await?;
    let started = Instant::now();
    let fresh = Proxy::start(&fleet.cp.grpc_url(), &["--session-key", SESSION_KEY]).await?;
    mcpgw_e2e::dataplane::wait_instances(&fresh, name, 3).await?;
    eprintln!("new replica ready in {:?}", started.elapsed());
    let fresh_url = fresh.url(name);
    fleet.proxies.insert(0, fresh);

    for (i, session) in sessions.iter().enumerate() {
        let mut s = ReplicatedSession {
            clients: session.clients.clone(),
            instance: session.instance.clone(),
            token: session.token.clone(),
        };
        s.clients[0] = {
            let mut c = mcpgw_e2e::McpHttp::new(&fresh_url);
            c.session_id = Some(s.token.clone());
            c.protocol_version = s.clients[1].protocol_version.clone();
            c
        };
        for replica in [0, 1, 0] {
            assert_eq!(
                s.instance_via(replica)
                    .await
                    .with_context(|| format!("session {i} via replica {replica}"))?,
                s.instance,
                "session {i} (initialized through replica {}) after replica 0 restarted",
                i % 2
            );
        }
    }
    Ok(())
}
