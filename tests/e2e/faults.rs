//! The fault-injection suite: real processes (both planes, the benchmark fixture as upstream, a private
//! PostgreSQL cluster, a private Redis), load from the benchmark's load generator (`load::timeline`, every
//! call kept with when it ended and how it went), and one fault per scenario. Each scenario states its
//! promise, asserts it, and writes a row — scenario, promise, measured — to
//! `target/fault-report/<scenario>.md`; `scripts/fault-report.sh` prints them as one table after the test
//! run (`.ci/run` does).
//!
//! The kernel here has no `netem` queueing discipline, so the degraded gRPC link is a user-space relay
//! (`relay::Relay`) that delays every byte and stalls (holds everything, as a link losing every packet
//! does) or resets its connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mcpgw_bench::load::timeline::{Loop, Target, Timeline};
use mcpgw_bench::requests::Endpoint;
use mcpgw_e2e::postgres::{OwnPostgres, wait_answering};
use mcpgw_e2e::process::Spawned;
use mcpgw_e2e::proxy::Proxy;
use mcpgw_e2e::relay::Relay;
use mcpgw_e2e::{ADMIN_TOKEN, ControlPlane, Redis, SilentUpstream, TestDb, localhost, poll_until};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections of the load.
const CONNECTIONS: usize = 4;
/// Longest wait for one answer of the load.
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long the load may take to make the calls a step waits for.
const PROGRESS: Duration = Duration::from_secs(60);

/// The benchmark fixture (`mcpgw-bench-fixture`): a fast MCP upstream with `echo` and `stream` tools.
struct Fixture {
    proc: Spawned,
    addr: SocketAddr,
}

impl Fixture {
    async fn start() -> Result<Self> {
        let addr = localhost(mcpgw_e2e::free_port()?);
        let mut cmd = tokio::process::Command::new(mcpgw_e2e::binary("mcpgw-bench-fixture")?);
        cmd.args(["--listen", &addr.to_string(), "--threads", "1"]);
        let proc = Spawned::spawn("fixture", cmd)?;
        mcpgw_e2e::wait_for_tcp(addr, Duration::from_secs(10)).await.with_context(|| proc.describe())?;
        Ok(Self { proc, addr })
    }

    fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

/// Registers `url` as `name` without discovery or health checks (the scenarios measure what the proxy
/// does with the upstream, not what the checks decide about it); returns the server's id.
async fn register(cp: &ControlPlane, name: &str, url: &str) -> Result<String> {
    let body = json!({"name": name, "endpoint_url": url, "transport_type": "streamable_http",
        "auto_discover": false, "health_check": {"enabled": false}});
    let (status, created) = cp.api(Method::POST, "/api/v1/servers", Some(body)).await?;
    ensure!(status == 201, "register {name}: {status} {created}");
    Ok(created["id"].as_str().context("id")?.to_owned())
}

/// A stateless `tools/call echo` to `server` through the proxy at `proxy`, with `key`.
fn echo(proxy: SocketAddr, server: &str, key: &str) -> Target {
    let request = Endpoint::new(proxy, format!("/mcp/{server}")).with_bearer(key).stateless_echo();
    Target { addr: proxy, request }
}

/// One call with reqwest: status and body.
async fn call(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    tool: &str,
    arguments: Value,
) -> Result<(u16, String)> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    let resp = http
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// Waits until `proxy` answers an `echo` to `server` with `key` (the key and the server reached it).
async fn accepted(proxy: &Proxy, server: &str, key: &str) -> Result<()> {
    let http = mcpgw_e2e::http_client();
    let url = proxy.url(server);
    poll_until(&format!("the proxy to route {server} for the key"), Duration::from_secs(20), || async {
        Ok((call(&http, &url, key, "echo", json!({"message": "ready"})).await?.0 == 200).then_some(()))
    })
    .await
    .with_context(|| proxy.describe())
}

/// The value of an unlabelled metric of the proxy.
async fn gauge(proxy: &Proxy, name: &str) -> Result<f64> {
    let text = proxy.metrics().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in the proxy's metrics"))
}

/// Audit rows of `principal` in the database at `url`.
async fn audit_rows(url: &str, principal: &str) -> Result<i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(connection);
    let n = client
        .query_one("SELECT count(*) FROM audit_log WHERE kind = 'mcp' AND principal = $1", &[&principal])
        .await?
        .get::<_, i64>(0);
    drop(client);
    let _ = task.await;
    Ok(n)
}

/// Waits until the audit rows of `principal` reach `expected` (or 90 s pass) and returns how many of the
/// expected records are missing (negative: more rows than calls).
async fn lost_records(url: &str, principal: &str, expected: i64) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let rows = audit_rows(url, principal).await?;
        if rows >= expected || Instant::now() > deadline {
            return Ok(expected - rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One line of the report.
struct Row<'a> {
    scenario: &'a str,
    promise: &'a str,
    timeline: &'a Timeline,
    lost: Option<i64>,
    recovery: Option<Duration>,
    more: String,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Writes the scenario's row (Markdown) under `target/fault-report/` and prints it.
fn report(row: &Row<'_>) -> Result<()> {
    let dir = mcpgw_e2e::target_dir().join("fault-report");
    std::fs::create_dir_all(&dir)?;
    let line = format!(
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        row.scenario,
        row.promise,
        row.timeline.total(),
        row.timeline.failed(),
        row.lost.map_or("—".to_owned(), |n| n.to_string()),
        row.recovery.map_or("—".to_owned(), ms),
        row.more,
    );
    eprint!("fault-report: {line}");
    std::fs::write(dir.join(format!("{}.md", row.scenario)), line)?;
    Ok(())
}

fn describe(timeline: &Timeline) -> String {
    format!("{} of {} calls failed: {:?}", timeline.failed(), timeline.total(), timeline.errors(5))
}

/// What the audited scenarios share: the fixture registered as `fx`, an API key (id and secret) and a
/// proxy routing it that spills its audit batches to a directory of its own (removed with it).
struct Audited {
    fixture: Fixture,
    key_id: String,
    key: String,
    proxy: Proxy,
    spill: std::path::PathBuf,
}

impl Drop for Audited {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spill);
    }
}

async fn audited(cp: &ControlPlane) -> Result<Audited> {
    let fixture = Fixture::start().await?;
    register(cp, "fx", &fixture.url()).await?;
    let (key_id, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let spill = std::env::temp_dir().join(format!("mcpgw-faults-{}", uuid::Uuid::new_v4().simple()));
    let proxy =
        Proxy::start_closed(&cp.grpc_url(), &["--audit-spill-dir", spill.to_str().context("path")?]).await?;
    accepted(&proxy, "fx", &key).await?;
    Ok(Audited { fixture, key_id, key, proxy, spill })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_killed_and_restarted_under_load() -> Result<()> {
    let db = TestDb::new();
    let (http, grpc) = (localhost(mcpgw_e2e::free_port()?), localhost(mcpgw_e2e::free_port()?));
    let mut cp = ControlPlane::start_at(&db, ADMIN_TOKEN, http, grpc, &[]).await?;
    let Audited { key_id, key, proxy, .. } = &audited(&cp).await?;

    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(500, PROGRESS).await, "no load before the fault");
    cp.kill().await?;
    ensure!(load.advance(1_000, PROGRESS).await, "the proxy stopped serving without its control plane");
    let restarted = Instant::now();
    cp.restart().await?;
    poll_until("the proxy to reconnect", Duration::from_secs(30), || async {
        Ok((gauge(proxy, "mcpgw_control_plane_connected").await? == 1.0).then_some(()))
    })
    .await
    .with_context(|| proxy.describe())?;
    let reconnected = restarted.elapsed();
    ensure!(load.advance(500, PROGRESS).await, "no load after the restart");
    let timeline = load.stop().await;

    ensure!(timeline.failed() == 0, "{}", describe(&timeline));
    // Every answered call has its record: the ones made while the control plane was down included.
    let lost = lost_records(db.url(), &format!("api-key:{key_id}"), timeline.ok() as i64 + 1).await?;
    ensure!(lost == 0, "{lost} audit records lost (negative: duplicated)");
    report(&Row {
        scenario: "control plane SIGKILL + restart",
        promise: "0 failed calls; every call audited once; proxy reconnects",
        timeline: &timeline,
        lost: Some(lost),
        recovery: Some(reconnected),
        more: "recovery: restart to the proxy's stream connected again".to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_started_under_load() -> Result<()> {
    let pg = OwnPostgres::start().await?;
    let url = pg.url("mcpgw");
    let cp = ControlPlane::start_on_database(&url, ADMIN_TOKEN, localhost(0), localhost(0), &[]).await?;
    let Audited { fixture, key_id, key, proxy, .. } = &audited(&cp).await?;

    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(500, PROGRESS).await, "no load before the fault");
    pg.stop().await?;
    // An administrator's write while the database is away: a clear 503, not a hang.
    let asked = Instant::now();
    let body = json!({"name": "during-outage", "endpoint_url": fixture.url(), "auto_discover": false});
    let (status, refused) = cp.api(Method::POST, "/api/v1/servers", Some(body.clone())).await?;
    let refused_in = asked.elapsed();
    ensure!(status == 503, "a write without the database: {status} {refused}");
    // Each database connection the request asks for waits the pool's 5 s connect timeout, retrying.
    ensure!(refused_in < Duration::from_secs(15), "the refusal took {refused_in:?}");
    ensure!(load.advance(1_000, PROGRESS).await, "the proxy stopped serving without the database");
    let started = Instant::now();
    pg.start_again().await?;
    wait_answering(&url, Duration::from_secs(30)).await?;
    poll_until("a write to succeed again", Duration::from_secs(60), || {
        let (cp, body) = (&cp, body.clone());
        async move { Ok((cp.api(Method::POST, "/api/v1/servers", Some(body)).await?.0 == 201).then_some(())) }
    })
    .await
    .with_context(|| cp.describe())?;
    let recovered = started.elapsed();
    ensure!(load.advance(500, PROGRESS).await, "no load after the database came back");
    let timeline = load.stop().await;

    ensure!(timeline.failed() == 0, "{}", describe(&timeline));
    let lost = lost_records(&url, &format!("api-key:{key_id}"), timeline.ok() as i64 + 1).await?;
    ensure!(lost == 0, "{lost} audit records lost (negative: duplicated)");
    report(&Row {
        scenario: "PostgreSQL stopped + started",
        promise: "0 failed calls; every call audited once; REST writes 503 meanwhile",
        timeline: &timeline,
        lost: Some(lost),
        recovery: Some(recovered),
        more: format!(
            "write refused in {}; recovery: database start to a REST write accepted",
            ms(refused_in)
        ),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_load() -> Result<()> {
    let mut redis = Redis::start().await?;
    let db = TestDb::new();
    let cp = ControlPlane::start_with(&db, ADMIN_TOKEN, &["--redis-url", &redis.url()]).await?;
    let fixture = Fixture::start().await?;
    register(&cp, "fx", &fixture.url()).await?;
    register(&cp, "fx-closed", &fixture.url()).await?;
    // A shared limit far above the load that fails open, and one that fails closed (the default).
    for (server, extra) in [("fx", json!({"fail_mode": "open"})), ("fx-closed", json!({}))] {
        let mut limit = json!({"scope": "api_key", "match": {"server": server}, "requests": 1_000_000,
            "per": "1s", "global": true});
        limit.as_object_mut().context("object")?.extend(extra.as_object().cloned().unwrap_or_default());
        let (status, doc) = cp.api(Method::POST, "/api/v1/rate-limits", Some(limit)).await?;
        ensure!(status == 201, "{status} {doc}");
    }
    let (_, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let proxy = Proxy::start_closed(&cp.grpc_url(), &[]).await?;
    accepted(&proxy, "fx", &key).await?;
    accepted(&proxy, "fx-closed", &key).await?;
    let http = mcpgw_e2e::http_client();
    let closed_url = proxy.url("fx-closed");

    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", &key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(500, PROGRESS).await, "no load before the fault");
    redis.stop().await?;
    poll_until("the closed limit to refuse while Redis is away", Duration::from_secs(20), || async {
        let (status, body) = call(&http, &closed_url, &key, "echo", json!({})).await?;
        Ok((status == 503 && body.contains("rate_limit_unavailable")).then_some(()))
    })
    .await?;
    ensure!(load.advance(1_000, PROGRESS).await, "calls under the open limit stopped");
    let restarted = Instant::now();
    redis.restart().await?;
    poll_until("the closed limit to admit again", Duration::from_secs(20), || async {
        Ok((call(&http, &closed_url, &key, "echo", json!({})).await?.0 == 200).then_some(()))
    })
    .await?;
    let recovered = restarted.elapsed();
    ensure!(load.advance(500, PROGRESS).await, "no load after Redis came back");
    let timeline = load.stop().await;

    ensure!(timeline.failed() == 0, "{}", describe(&timeline));
    report(&Row {
        scenario: "Redis stopped + started",
        promise: "0 failed calls under a fail-open limit; fail-closed ones 503 until Redis is back",
        timeline: &timeline,
        lost: None,
        recovery: Some(recovered),
        more: "recovery: Redis start to a fail-closed call admitted".to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_mid_stream() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let (mut doomed, survivor) = (Fixture::start().await?, Fixture::start().await?);
    let id = register(&cp, "fx", &doomed.url()).await?;
    let (status, added) = cp
        .api(
            Method::POST,
            &format!("/api/v1/servers/{id}/instances"),
            Some(json!({"endpoint_url": survivor.url()})),
        )
        .await?;
    ensure!(status == 201, "{status} {added}");
    let (_, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let proxy = Proxy::start_closed(&cp.grpc_url(), &[]).await?;
    accepted(&proxy, "fx", &key).await?;
    poll_until("both instances routed", Duration::from_secs(20), || async {
        let routes = proxy.routes().await?;
        let fx = routes["servers"].as_array().into_iter().flatten().find(|s| s["name"] == "fx");
        Ok((fx.and_then(|s| s["instances"].as_array()).map_or(0, Vec::len) == 2).then_some(()))
    })
    .await?;

    // Four SSE streams of 400 events 10 ms apart (4 s), spread over both instances.
    let http = mcpgw_e2e::http_client();
    let url = proxy.url("fx");
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        streams.push(tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "stream", "arguments": {"count": 400, "interval_ms": 10}}});
            let mut resp = http
                .post(&url)
                .bearer_auth(&key)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .json(&body)
                .send()
                .await?;
            let mut text = Vec::new();
            let ended = loop {
                match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
                    Err(_) => anyhow::bail!("the stream went silent for 10 s"),
                    Ok(Ok(Some(chunk))) => text.extend_from_slice(&chunk),
                    Ok(Ok(None)) => break "ended",
                    Ok(Err(_)) => break "cut",
                }
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            let complete = text.contains("\"result\"");
            anyhow::Ok((Instant::now(), ended, complete, text.matches("notifications/progress").count()))
        }));
    }
    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", &key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(500, PROGRESS).await, "no load before the fault");
    let killed = load.now();
    let killed_at = Instant::now();
    doomed.proc.kill().await?;
    ensure!(load.advance(1_000, PROGRESS).await, "calls stopped after an instance died");
    let timeline = load.stop().await;

    let mut cut = 0;
    let mut slowest_end = Duration::ZERO;
    for stream in streams {
        let (at, ended, complete, events) = stream.await??;
        if complete {
            ensure!(events == 400, "a complete stream lost events: {events} of 400");
        } else {
            cut += 1;
            // A cut stream ends (the client can retry), it does not hang until some timeout.
            slowest_end = slowest_end.max(at.saturating_duration_since(killed_at));
            eprintln!("a stream on the killed instance {ended} after {events} events");
        }
    }
    ensure!(slowest_end < Duration::from_secs(2), "a cut stream ended only {slowest_end:?} after the kill");
    // Only calls in flight on the dead instance may fail: at most one per connection, all at the kill.
    let failed = timeline.failed();
    ensure!(failed <= CONNECTIONS, "{}", describe(&timeline));
    let recovery = timeline.recovery_after(killed);
    ensure!(
        recovery < Duration::from_secs(1),
        "calls kept failing for {recovery:?}: {}",
        describe(&timeline)
    );
    report(&Row {
        scenario: "upstream instance SIGKILL mid-SSE",
        promise: "only calls in flight on it fail; its streams end at once; the other instance serves",
        timeline: &timeline,
        lost: None,
        recovery: Some(recovery),
        more: format!("{cut} of 4 streams were on it, ended {} after the kill", ms(slowest_end)),
    })
}

/// Serves a fixed misbehaviour to every connection: `answer` is written after the request arrives, then
/// the connection is reset (`reset`) or closed.
async fn misbehaving(answer: &'static [u8], reset: bool) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(localhost(0)).await?;
    let url = format!("http://{}/mcp", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer).await;
                if reset {
                    let _ = socket.set_zero_linger();
                } else {
                    let _ = socket.shutdown().await;
                }
            });
        }
    });
    Ok((url, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_upstreams_cost_only_their_own_calls() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let fixture = Fixture::start().await?;
    register(&cp, "fx", &fixture.url()).await?;
    let silent = SilentUpstream::start().await?;
    register(&cp, "silent", &silent.url()).await?;
    let cases: [(&str, &[u8], bool); 4] = [
        ("garbage", b"\x00\xff\x13 this is not HTTP at all\r\n\r\n", false),
        ("bad-framing", b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n{}", false),
        ("reset-mid-body", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"cont", true),
        ("reset-mid-chunk", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{\"jsonrpc\":\"2.0\",\"id\":1,", true),
    ];
    let mut fakes = Vec::new();
    for (name, answer, reset) in cases {
        let (url, task) = misbehaving(answer, reset).await?;
        register(&cp, name, &url).await?;
        fakes.push(task);
    }
    let (_, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let proxy = Proxy::start_closed(&cp.grpc_url(), &["--upstream-timeout", "1s"]).await?;
    accepted(&proxy, "fx", &key).await?;

    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", &key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(300, PROGRESS).await, "no load before the faults");
    // Each bad upstream, four calls at once, with the raw client: every answer must be a whole error
    // response, or a broken one the client cannot take for whole (cut framing) — never a complete 2xx.
    let mut outcomes = Vec::new();
    for name in ["silent", "garbage", "bad-framing", "reset-mid-body", "reset-mid-chunk"] {
        let target = echo(proxy.listen_addr(), name, &key);
        let mut calls = Vec::new();
        for _ in 0..4 {
            let target = target.clone();
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut conn = mcpgw_bench::http::Conn::connect(target.addr).await?;
                conn.send(&target.request).await?;
                let answer = tokio::time::timeout(Duration::from_secs(10), conn.read_response()).await;
                anyhow::Ok((started.elapsed(), answer.map(|r| r.map(|r| (r.head.status, r.body)))))
            }));
        }
        let mut statuses = Vec::new();
        let mut slowest = Duration::ZERO;
        for c in calls {
            let (took, answer) = c.await??;
            slowest = slowest.max(took);
            match answer {
                Err(_) => anyhow::bail!("{name}: no answer within 10 s"),
                Ok(Ok((status, body))) => {
                    ensure!(
                        !(200..300).contains(&status),
                        "{name}: answered {status} {}",
                        String::from_utf8_lossy(&body)
                    );
                    statuses.push(status.to_string());
                }
                Ok(Err(_)) => statuses.push("cut".to_owned()),
            }
        }
        if name == "silent" {
            ensure!(statuses.iter().all(|s| s == "504"), "silent: {statuses:?}");
            ensure!(slowest < Duration::from_millis(2_500), "silent: answered after {slowest:?}");
        } else {
            ensure!(statuses.iter().all(|s| s == "502" || s == "cut"), "{name}: {statuses:?}");
        }
        statuses.dedup();
        outcomes.push(format!("{name}: {} in ≤ {}", statuses.join("/"), ms(slowest)));
    }
    ensure!(load.advance(300, PROGRESS).await, "no load after the faults");
    let timeline = load.stop().await;
    for task in fakes {
        task.abort();
    }
    ensure!(timeline.failed() == 0, "calls to the healthy server failed: {}", describe(&timeline));
    report(&Row {
        scenario: "upstreams: silent, garbage, bad framing, reset mid-body",
        promise: "504 after --upstream-timeout / 502, never a whole 2xx; other servers' calls unaffected",
        timeline: &timeline,
        lost: None,
        recovery: None,
        more: outcomes.join("; "),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_replica_killed_while_clients_call_through_the_other() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let fixture = Fixture::start().await?;
    register(&cp, "fx", &fixture.url()).await?;
    let (_, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let mut doomed = Proxy::start_closed(&cp.grpc_url(), &["--proxy-id", "doomed"]).await?;
    let survivor = Proxy::start_closed(&cp.grpc_url(), &["--proxy-id", "survivor"]).await?;
    accepted(&doomed, "fx", &key).await?;
    accepted(&survivor, "fx", &key).await?;

    // Half the connections on each replica; a connection that fails moves to the other (a client's
    // failover, as a load balancer's health check would do it).
    let targets = vec![echo(doomed.listen_addr(), "fx", &key), echo(survivor.listen_addr(), "fx", &key)];
    let load = Loop::start(targets, CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(500, PROGRESS).await, "no load before the fault");
    let killed = load.now();
    doomed.kill().await?;
    ensure!(load.advance(1_000, PROGRESS).await, "calls stopped after a replica died");
    let started = Instant::now();
    let replacement = Proxy::start_closed(&cp.grpc_url(), &["--proxy-id", "replacement"]).await?;
    accepted(&replacement, "fx", &key).await?;
    let replaced = started.elapsed();
    let timeline = load.stop().await;

    // Only the calls in flight on the killed replica fail: at most one per connection it had.
    let failed = timeline.failed();
    ensure!(failed <= CONNECTIONS / 2, "{}", describe(&timeline));
    let recovery = timeline.recovery_after(killed);
    ensure!(
        recovery < Duration::from_secs(1),
        "calls kept failing for {recovery:?}: {}",
        describe(&timeline)
    );
    report(&Row {
        scenario: "proxy replica SIGKILL",
        promise: "only calls in flight on it fail; clients go on through the other replica",
        timeline: &timeline,
        lost: None,
        recovery: Some(recovery),
        more: format!("a new replica serves {} after start", ms(replaced)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_routing_link_delays_changes_but_no_call() -> Result<()> {
    let db = TestDb::new();
    let cp = ControlPlane::start(&db, ADMIN_TOKEN).await?;
    let fixture = Fixture::start().await?;
    register(&cp, "fx", &fixture.url()).await?;
    let (_, key) = cp.create_api_key(json!({"name": "load", "role": "user"})).await?;
    let link = Relay::start(cp.grpc_addr()).await?;
    let proxy = Proxy::start_closed(&format!("http://{}", link.addr()), &[]).await?;
    accepted(&proxy, "fx", &key).await?;
    let load = Loop::start(vec![echo(proxy.listen_addr(), "fx", &key)], CONNECTIONS, CALL_LIMIT);
    ensure!(load.advance(300, PROGRESS).await, "no load before the fault");

    // 250 ms each way: a change still arrives, half a second later than it would.
    link.set_delay(Duration::from_millis(250));
    let changed = Instant::now();
    register(&cp, "late", &fixture.url()).await?;
    proxy.wait_routable("late", Duration::from_secs(20)).await?;
    let delayed = changed.elapsed();
    ensure!(delayed >= Duration::from_millis(250), "the delay did not apply: {delayed:?}");

    // Everything held for 3 s (every packet lost): the proxy serves from its table meanwhile, and the
    // change made during the stall arrives once the link carries again.
    link.set_stalled(true);
    register(&cp, "stalled", &fixture.url()).await?;
    ensure!(load.advance(1_000, PROGRESS).await, "calls stopped while the link stalled");
    let unstalled = Instant::now();
    link.set_stalled(false);
    proxy.wait_routable("stalled", Duration::from_secs(30)).await?;
    let after_stall = unstalled.elapsed();

    // The link reset and refused for a while: the proxy reconnects once it is back.
    link.set_delay(Duration::ZERO);
    link.cut();
    register(&cp, "after-cut", &fixture.url()).await?;
    ensure!(load.advance(500, PROGRESS).await, "calls stopped while the link was down");
    let restored = Instant::now();
    link.restore();
    proxy.wait_routable("after-cut", Duration::from_secs(30)).await.with_context(|| proxy.describe())?;
    let reconnected = restored.elapsed();
    let timeline = load.stop().await;

    ensure!(timeline.failed() == 0, "{}", describe(&timeline));
    report(&Row {
        scenario: "routing link: 250 ms delay, 3 s stall, reset",
        promise: "0 failed calls; changes arrive once the link carries",
        timeline: &timeline,
        lost: None,
        recovery: Some(reconnected),
        more: format!(
            "change under delay {}, after the stall {}; recovery: link restored to a change applied",
            ms(delayed),
            ms(after_stall)
        ),
    })
}
