//! Two control-plane replicas on one database: a registration through replica A reaches a proxy fed by
//! replica B (LISTEN/NOTIFY), and when the health-check leader is killed the other replica continues the
//! checks within an interval.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::{ADMIN_TOKEN, ControlPlane, Proxy, PyServer, PyServerOpts, TestDb, poll_until};
use reqwest::Method;
use serde_json::json;

use crate::health::{FAST_HEALTH, instances};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_crosses_replicas_and_checks_survive_the_leader() -> Result<()> {
    let db = TestDb::new();
    let with_id = |id: &'static str| {
        let mut args = FAST_HEALTH.to_vec();
        args.extend(["--replica-id", id]);
        args
    };
    let mut a = ControlPlane::start_with(&db, ADMIN_TOKEN, &with_id("cp-a")).await?;
    let mut b = ControlPlane::start_with(&db, ADMIN_TOKEN, &with_id("cp-b")).await?;
    let proxy = Proxy::start(&b.grpc_url(), &[]).await?;
    let upstream = PyServer::start("replicated", PyServerOpts::default()).await?;

    a.register("via-a", &upstream.url(), "streamable_http").await?;
    let registered = Instant::now();
    proxy.wait_routable("via-a", Duration::from_secs(10)).await?;
    let took = registered.elapsed();
    eprintln!("registration through replica A → routable on a proxy of replica B: {took:?}");
    ensure!(took < Duration::from_secs(2), "crossed replicas only after {took:?} (the poll is 5 s)");

    let (_, servers) = a.api(Method::GET, "/api/v1/servers?name=via-a", None).await?;
    let id = servers[0]["id"].as_str().context("id")?.to_owned();
    let leader = poll_until("a leader with a check", Duration::from_secs(20), || {
        let (a, id) = (&a, &id);
        async move {
            let list = instances(a, id).await?;
            Ok(list.first().and_then(|i| i["checked_by"].as_str()).map(str::to_owned))
        }
    })
    .await?;
    let (_, stats) = b.api(Method::GET, "/api/v1/admin/stats", None).await?;
    ensure!(
        stats["health_checks"]["leader_replica_id"] == json!(leader),
        "both replicas agree on the leader: {stats}"
    );
    let (dead, survivor, survivor_id) =
        if leader == "cp-a" { (&mut a, &b, "cp-b") } else { (&mut b, &a, "cp-a") };
    dead.kill().await?;
    let killed = Instant::now();
    poll_until("a check by the surviving replica", Duration::from_secs(10), || {
        let id = &id;
        async move {
            let list = instances(survivor, id).await?;
            Ok((list.first().and_then(|i| i["checked_by"].as_str()) == Some(survivor_id)).then_some(()))
        }
    })
    .await
    .with_context(|| survivor.describe())?;
    let failover = killed.elapsed();
    eprintln!("leader killed → first check by {survivor_id}: {failover:?} (interval 200ms)");
    ensure!(
        failover < Duration::from_millis(200) + Duration::from_secs(1),
        "checks resumed only after {failover:?}"
    );
    let (_, stats) = survivor.api(Method::GET, "/api/v1/admin/stats", None).await?;
    ensure!(stats["health_checks"]["leader"] == true, "{stats}");
    Ok(())
}
