//! The official MCP conformance suite, run differentially: against each real server directly and through
//! the gateway, every (scenario, check) must conclude the same. The suite's content scenarios need its own
//! fixture server, so many of its checks fail against ours; what matters is that the gateway changes none
//! of the conclusions. Scenarios that keep a legacy session also run through two proxy replicas behind a
//! front that sends each request of a session to the other replica than the one before, so every
//! session is opened on one replica and continued on the other. The front-end scenarios
//! (`server-session-lifecycle`, `http-header-validation`, `server-stateless`, `dns-rebinding-protection`)
//! judge the gateway's own answers the same way.
//!
//! Differences the gateway is known to make are listed in `conformance-expected.json`, each with why and
//! the issue that removes it; the test fails on any other difference, and on a listed one that no longer
//! occurs. With `--no-capture` it prints every scenario run, per server, with its counts.
//!
//! The same front-end scenarios also run against the gateway itself: its own MCP endpoint `/mcp`, which
//! the gateway answers (aggregation), with no server behind it to compare with. Every check must pass
//! there, except those listed in `conformance-gateway-expected.json`, each with why.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use futures_util::StreamExt;
use mcpgw_e2e::conformance::{self, Check, Checks, Selection};
use mcpgw_e2e::dataplane::{Fleet, SESSION_KEY, instances_body};
use mcpgw_e2e::{EverythingServer, PyServer, PyServerOpts, RmcpServer, workspace_root};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Suite invocations running at once. Two cores, but a run spends most of its time waiting for answers.
const CONCURRENCY: usize = 3;

/// What the suite runs against which server, and whether its scenarios keep a legacy session (then they
/// also run through the two replicas).
struct Plan {
    server: &'static str,
    selection: Selection,
    sessions: bool,
}

const PLANS: [Plan; 5] = [
    // The longest runs first: the Python server's 2026-07-28 run takes the longest.
    Plan { server: "python", selection: Selection::Requirements("2026-07-28"), sessions: false },
    Plan { server: "rmcp", selection: Selection::Requirements("2026-07-28"), sessions: false },
    // server-everything speaks only the legacy era: every scenario initializes a session.
    Plan { server: "everything", selection: Selection::SpecVersion("2025-11-25"), sessions: true },
    Plan { server: "python", selection: Selection::Scenario("server-session-lifecycle"), sessions: true },
    Plan { server: "rmcp", selection: Selection::Scenario("server-session-lifecycle"), sessions: true },
];

/// The servers of the plans, in the order the report shows them.
const SERVERS: [&str; 3] = ["everything", "python", "rmcp"];

/// Scenarios about the gateway's own front end, which must run through it against at least one server.
const FRONT_END: [&str; 4] =
    ["server-session-lifecycle", "http-header-validation", "server-stateless", "dns-rebinding-protection"];

/// Where one invocation points the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// The server's own URL.
    Direct,
    /// `/mcp/{server}` on a proxy of its own.
    Gateway,
    /// `/mcp/{server}` through the alternating front, on two replicas sharing a session key.
    Replicas,
}

impl Target {
    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Gateway => "gateway",
            Self::Replicas => "2 replicas",
        }
    }
}

/// Every finished invocation, by plan (index into [`PLANS`]) and target.
type Runs = BTreeMap<(usize, Target), conformance::Run>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_changes_no_conformance_check() -> Result<()> {
    let expected = Expected::load()?;
    let started = Instant::now();
    // The replicas behind the front know it as their public URL, as replicas behind a load balancer do
    // (its origin is the one they accept); the lone proxy keeps its own.
    let front_listener = TcpListener::bind("127.0.0.1:0").await?;
    let front_url = format!("http://{}", front_listener.local_addr()?);
    let behind_front: &[&str] = &["--session-key", SESSION_KEY, "--public-url", &front_url];
    let proxies: [&[&str]; 3] = [&[], behind_front, behind_front];
    let (fleet, everything, python, rmcp) = tokio::try_join!(
        Fleet::start_with(&[], &proxies),
        EverythingServer::start(),
        PyServer::start("python", PyServerOpts::default()),
        RmcpServer::start("rmcp"),
    )?;
    let direct: BTreeMap<&str, String> =
        [("everything", everything.url()), ("python", python.url()), ("rmcp", rmcp.url())].into();
    futures_util::future::try_join_all(
        direct.iter().map(|(name, url)| fleet.register(instances_body(name, &[(url, 1)]))),
    )
    .await?;
    let replicas = fleet.proxies[1..].iter().map(|p| p.listen_addr()).collect();
    let front = Alternating::start(front_listener, replicas)?;
    let setup = started.elapsed();

    let mut jobs = Vec::new();
    for (plan, p) in PLANS.iter().enumerate() {
        jobs.push((plan, Target::Direct, direct[p.server].clone()));
        jobs.push((plan, Target::Gateway, fleet.proxies[0].url(p.server)));
        if p.sessions {
            jobs.push((plan, Target::Replicas, front.url(p.server)));
        }
    }
    let suite_started = Instant::now();
    let own_url = format!("{}/mcp", fleet.proxies[0].base_url());
    let (runs, own) = tokio::try_join!(run_all(jobs), run_own(&own_url))?;
    let suite_time = suite_started.elapsed();

    let mut differences = Vec::new();
    for ((plan, target), run) in &runs {
        if *target != Target::Direct {
            differences.extend(differ(*plan, *target, &runs[&(*plan, Target::Direct)].checks, &run.checks));
        }
    }
    let (requests, sessions, continued) = front.spread();
    eprintln!("{}", report(&runs, &differences, &expected));
    eprintln!(
        "conformance: setup {setup:.1?}, {} suite runs in {suite_time:.1?} ({CONCURRENCY} at once), total \
         {:.1?}; through the two replicas: {requests:?} requests, {sessions} sessions opened, {continued} \
         requests continued one on the other replica",
        runs.len(),
        started.elapsed()
    );
    for scenario in FRONT_END {
        ensure!(
            runs.iter().any(|((_, target), run)| {
                *target == Target::Gateway && run.checks.keys().any(|(s, _)| s == scenario)
            }),
            "the front-end scenario {scenario} ran through the gateway against no server"
        );
    }
    ensure!(
        requests.iter().all(|n| *n > 0) && sessions > 0 && continued > 0,
        "the alternating front did not make sessions cross replicas: {requests:?} requests per replica, \
         {sessions} sessions opened, {continued} requests continued one"
    );
    let own_verdict = judge_own(&own);
    expected.judge(&differences)?;
    own_verdict
}

/// The front-end scenarios against the gateway's own `/mcp`, one invocation each.
async fn run_own(url: &str) -> Result<Checks> {
    let runs = futures_util::stream::iter(FRONT_END)
        .map(|scenario| async move {
            let run =
                conformance::run(url, Selection::Scenario(scenario), &format!("gateway-own-{scenario}"))
                    .await?;
            ensure!(
                run.checks.keys().any(|(s, _)| s == scenario),
                "{scenario} reported no check against the gateway's own endpoint"
            );
            anyhow::Ok(run.checks)
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut all = Checks::new();
    for run in runs {
        all.extend(run?);
    }
    Ok(all)
}

/// Every check of the gateway's own endpoint passes (or only informs), except the failures listed in
/// `conformance-gateway-expected.json`; a listed failure that now passes must be removed from the file.
fn judge_own(checks: &Checks) -> Result<()> {
    let path = workspace_root().join("tests/e2e/conformance-gateway-expected.json");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )
    .with_context(|| format!("parse {}", path.display()))?;
    let mut listed: BTreeMap<(String, String), (String, bool)> = BTreeMap::new();
    for entry in doc["failures"].as_array().context("no `failures` array")? {
        let field = |name: &str| entry[name].as_str().filter(|v| !v.is_empty()).map(str::to_owned);
        let (Some(scenario), Some(check), Some(status), Some(_why)) =
            (field("scenario"), field("check"), field("status"), field("why"))
        else {
            bail!("{}: every entry needs scenario, check, status and why: {entry}", path.display());
        };
        listed.insert((scenario, check), (status, false));
    }
    let mut report = String::new();
    let mut unexpected = Vec::new();
    for ((scenario, check), result) in checks {
        let _ = writeln!(report, "  {scenario:<28} {check:<48} {}", result.status);
        if matches!(result.status.as_str(), "SUCCESS" | "INFO") {
            continue;
        }
        match listed.get_mut(&(scenario.clone(), check.clone())) {
            Some((status, seen)) if *status == result.status => *seen = true,
            _ => unexpected.push(format!(
                "{scenario} / {check}: {} ({}; details {})",
                result.status,
                result.error.as_deref().unwrap_or("no message"),
                shorten(&result.details, 300)
            )),
        }
    }
    eprintln!("conformance: the gateway's own /mcp, {} checks:\n{report}", checks.len());
    let gone: Vec<String> = listed
        .iter()
        .filter(|(_, (_, seen))| !seen)
        .map(|((s, c), (st, _))| format!("{s} / {c} ({st})"))
        .collect();
    ensure!(
        unexpected.is_empty() && gone.is_empty(),
        "the gateway's own endpoint: {} failing check(s) not in {}:\n  {}\nlisted but no longer failing (remove them):\n  {}",
        unexpected.len(),
        path.display(),
        unexpected.join("\n  "),
        gone.join("\n  ")
    );
    Ok(())
}

/// Runs every `(plan, target, url)`, [`CONCURRENCY`] at a time.
async fn run_all(jobs: Vec<(usize, Target, String)>) -> Result<Runs> {
    futures_util::stream::iter(jobs)
        .map(|(plan, target, url)| async move {
            let p = &PLANS[plan];
            let label = format!("{}-{}-{plan}", p.server, target.label().replace(' ', "-"));
            let run = conformance::run(&url, p.selection, &label).await?;
            anyhow::Ok(((plan, target), run))
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// One (scenario, check) that concluded differently through the gateway.
#[derive(Debug)]
struct Difference {
    plan: usize,
    target: Target,
    scenario: String,
    check: String,
    direct: Option<Check>,
    gateway: Option<Check>,
}

impl Difference {
    fn server(&self) -> &'static str {
        PLANS[self.plan].server
    }
}

/// Status of a check, `absent` when the run did not report it.
fn status(check: Option<&Check>) -> &str {
    check.map_or("absent", |c| c.status.as_str())
}

/// Every (scenario, check) of either run whose status differs.
fn differ(plan: usize, target: Target, direct: &Checks, gateway: &Checks) -> Vec<Difference> {
    let keys: BTreeSet<&(String, String)> = direct.keys().chain(gateway.keys()).collect();
    keys.into_iter()
        .filter(|key| status(direct.get(key)) != status(gateway.get(key)))
        .map(|key| Difference {
            plan,
            target,
            scenario: key.0.clone(),
            check: key.1.clone(),
            direct: direct.get(key).cloned(),
            gateway: gateway.get(key).cloned(),
        })
        .collect()
}

/// Per server: every scenario run with its counts; then the differences, with what the suite saw and
/// whether `expected` allows them.
fn report(runs: &Runs, differences: &[Difference], expected: &Expected) -> String {
    let mut out = String::new();
    for server in SERVERS {
        let _ = writeln!(
            out,
            "\nconformance: {server} (counts of the direct run; differing: checks the gateway concluded otherwise)"
        );
        let _ = writeln!(
            out,
            "  {:<46} {:>6} {:>6} {:>6} {:>6}  differing (gateway / 2 replicas)",
            "scenario", "checks", "passed", "failed", "other"
        );
        let mut total = [0usize; 6];
        for (plan, p) in PLANS.iter().enumerate().filter(|(_, p)| p.server == server) {
            let times: Vec<String> = runs
                .iter()
                .filter(|((i, _), _)| *i == plan)
                .map(|((_, t), run)| format!("{} {:.1?}", t.label(), run.elapsed))
                .collect();
            let _ = writeln!(out, "  {} ({})", p.selection, times.join(", "));
            let direct = &runs[&(plan, Target::Direct)].checks;
            let mut scenarios: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
            for ((scenario, _), check) in direct {
                let c = scenarios.entry(scenario).or_default();
                c[0] += 1;
                match check.status.as_str() {
                    "SUCCESS" => c[1] += 1,
                    "FAILURE" => c[2] += 1,
                    _ => c[3] += 1,
                }
            }
            for d in differences.iter().filter(|d| d.plan == plan) {
                scenarios.entry(&d.scenario).or_default();
            }
            for (scenario, c) in scenarios {
                let differing = |target: Target| {
                    if !runs.contains_key(&(plan, target)) {
                        return None;
                    }
                    Some(
                        differences
                            .iter()
                            .filter(|d| d.plan == plan && d.target == target && d.scenario == scenario)
                            .count(),
                    )
                };
                let (gw, both) = (differing(Target::Gateway), differing(Target::Replicas));
                let shown = |n: Option<usize>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
                let _ = writeln!(
                    out,
                    "  {scenario:<46} {:>6} {:>6} {:>6} {:>6}  {} / {}",
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    shown(gw),
                    shown(both)
                );
                for (t, n) in
                    total.iter_mut().zip([c[0], c[1], c[2], c[3], gw.unwrap_or(0), both.unwrap_or(0)])
                {
                    *t += n;
                }
            }
        }
        let _ = writeln!(
            out,
            "  {:<46} {:>6} {:>6} {:>6} {:>6}  {} / {}",
            "total", total[0], total[1], total[2], total[3], total[4], total[5]
        );
    }
    if differences.is_empty() {
        out.push_str("\nno check differs between direct and gateway\n");
        return out;
    }
    let _ = writeln!(out, "\ndifferences ({}):", differences.len());
    let _ = writeln!(
        out,
        "  {:<10} {:<10} {:<28} {:<44} {:<8} {:<8} allowed",
        "server", "via", "scenario", "check", "direct", "gateway"
    );
    for d in differences {
        let allowed = match expected.allowing(d) {
            Some(i) => format!("yes, issue {}", expected.entries[i].issue),
            None => "NO".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<10} {:<28} {:<44} {:<8} {:<8} {allowed}",
            d.server(),
            d.target.label(),
            d.scenario,
            d.check,
            status(d.direct.as_ref()),
            status(d.gateway.as_ref())
        );
        for (side, check) in [("direct", &d.direct), ("gateway", &d.gateway)] {
            if let Some(check) = check {
                let error = check.error.as_deref().map(|e| format!("{e}; ")).unwrap_or_default();
                let _ = writeln!(out, "      {side}: {error}details {}", shorten(&check.details, 400));
            }
        }
    }
    out
}

/// `value` as compact JSON, cut to about `max` characters.
fn shorten(value: &Value, max: usize) -> String {
    let text = value.to_string();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `conformance-expected.json`: the differences the gateway is known to make.
struct Expected {
    path: PathBuf,
    entries: Vec<ExpectedDifference>,
}

/// One allowed difference.
#[derive(Debug)]
struct ExpectedDifference {
    server: String,
    scenario: String,
    check: String,
    direct: String,
    gateway: String,
    issue: String,
}

impl Expected {
    fn load() -> Result<Self> {
        let path = workspace_root().join("tests/e2e/conformance-expected.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let entries = parse_expected(&doc).with_context(|| format!("{}", path.display()))?;
        Ok(Self { path, entries })
    }

    /// The entry that allows `d`: same server, scenario, check and statuses.
    fn allowing(&self, d: &Difference) -> Option<usize> {
        self.entries.iter().position(|e| {
            e.server == d.server()
                && e.scenario == d.scenario
                && e.check == d.check
                && e.direct == status(d.direct.as_ref())
                && e.gateway == status(d.gateway.as_ref())
        })
    }

    /// Fails on a difference no entry allows, and on an entry that matched no difference.
    fn judge(&self, differences: &[Difference]) -> Result<()> {
        let mut used = vec![false; self.entries.len()];
        let mut unexpected = Vec::new();
        for d in differences {
            match self.allowing(d) {
                Some(i) => used[i] = true,
                None => unexpected.push(format!(
                    "{} via {}: {} / {}: direct {}, gateway {}",
                    d.server(),
                    d.target.label(),
                    d.scenario,
                    d.check,
                    status(d.direct.as_ref()),
                    status(d.gateway.as_ref())
                )),
            }
        }
        let gone: Vec<String> = self
            .entries
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|(e, _)| {
                format!(
                    "{} / {} / {} (direct {}, gateway {}; issue {}) no longer differs: remove it",
                    e.server, e.scenario, e.check, e.direct, e.gateway, e.issue
                )
            })
            .collect();
        if unexpected.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let mut message = String::new();
        if !unexpected.is_empty() {
            let _ = writeln!(
                message,
                "{} conformance check(s) differ between direct and gateway and are not in {} \
                 (the table above has the details):\n  {}",
                unexpected.len(),
                self.path.display(),
                unexpected.join("\n  ")
            );
        }
        if !gone.is_empty() {
            let _ = writeln!(
                message,
                "{} expected difference(s) in {} no longer occur:\n  {}",
                gone.len(),
                self.path.display(),
                gone.join("\n  ")
            );
        }
        bail!("{message}")
    }
}

/// Reads `{"differences": [{server, scenario, check, direct, gateway, why, issue}]}`; unknown fields
/// and empty reasons are refused so that the file stays a record of why each entry is there.
fn parse_expected(doc: &Value) -> Result<Vec<ExpectedDifference>> {
    const FIELDS: [&str; 7] = ["server", "scenario", "check", "direct", "gateway", "why", "issue"];
    let top = doc.as_object().context("not a JSON object")?;
    if let Some(key) = top.keys().find(|k| !["about", "differences"].contains(&k.as_str())) {
        bail!("unknown field {key:?}");
    }
    let list = top.get("differences").and_then(Value::as_array).context("no `differences` array")?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.as_object().with_context(|| format!("differences[{i}] is not an object"))?;
            if let Some(key) = entry.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                bail!("differences[{i}]: unknown field {key:?}");
            }
            let field = |name: &str| -> Result<String> {
                match entry.get(name).and_then(Value::as_str).map(str::trim) {
                    Some(text) if !text.is_empty() => Ok(text.to_owned()),
                    _ => bail!("differences[{i}]: `{name}` must be a non-empty string"),
                }
            };
            field("why")?;
            Ok(ExpectedDifference {
                server: field("server")?,
                scenario: field("scenario")?,
                check: field("check")?,
                direct: field("direct")?,
                gateway: field("gateway")?,
                issue: field("issue")?,
            })
        })
        .collect()
}

/// An HTTP/1.1 front that spreads requests over two or more upstreams the way that tests session
/// continuity hardest: a request of a known session (`Mcp-Session-Id`) goes to another upstream than the
/// session's previous request, any other request to the next upstream in turn. Every request gets a
/// connection of its own (`Connection: close` both ways, everything else relayed byte for byte), so the
/// client's keep-alive cannot pin it to one upstream.
struct Alternating {
    addr: SocketAddr,
    state: Arc<Mutex<Spread>>,
    task: JoinHandle<()>,
}

/// Where the front sent what.
#[derive(Debug, Default)]
struct Spread {
    /// Requests per upstream.
    requests: Vec<usize>,
    /// Upstream of each session's latest request, by the `Mcp-Session-Id` its first response carried.
    sessions: HashMap<String, usize>,
    /// Requests that continued a known session (each on another upstream than the one before).
    continued: usize,
    /// Next upstream for a request outside any known session.
    next: usize,
}

impl Spread {
    fn pick(&mut self, session: Option<&str>) -> usize {
        let n = self.requests.len();
        let i = match session.and_then(|id| self.sessions.get_mut(id)) {
            Some(last) => {
                *last = (*last + 1) % n;
                self.continued += 1;
                *last
            }
            None => {
                self.next = (self.next + 1) % n;
                self.next
            }
        };
        self.requests[i] += 1;
        i
    }
}

impl Alternating {
    /// Serves on `listener` (bound beforehand, so that the upstreams can be told its address).
    fn start(listener: TcpListener, upstreams: Vec<SocketAddr>) -> Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(Spread { requests: vec![0; upstreams.len()], ..Spread::default() }));
        let upstreams: Arc<[SocketAddr]> = upstreams.into();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when the front is dropped) aborts every relay still running.
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (upstreams, state) = (upstreams.clone(), shared.clone());
                relays.spawn(async move {
                    let _ = relay(client, &upstreams, &state).await;
                });
                while relays.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `/mcp/{server}` through the front.
    fn url(&self, server: &str) -> String {
        format!("http://{}/mcp/{server}", self.addr)
    }

    /// Requests per upstream, sessions opened, and requests that continued a session on another upstream.
    fn spread(&self) -> (Vec<usize>, usize, usize) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.requests.clone(), state.sessions.len(), state.continued)
    }
}

impl Drop for Alternating {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one request and its response; the upstream is chosen once the request head has arrived.
async fn relay(client: TcpStream, upstreams: &[SocketAddr], state: &Mutex<Spread>) -> Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let Some((head, rest)) = read_head(&mut client_read).await? else { return Ok(()) };
    let session = header(&head, "mcp-session-id");
    let i = state.lock().unwrap_or_else(|e| e.into_inner()).pick(session.as_deref());
    let (mut upstream_read, mut upstream_write) = TcpStream::connect(upstreams[i]).await?.into_split();
    upstream_write.write_all(&closing(&head)).await?;
    upstream_write.write_all(&rest).await?;
    // The rest of the body, and the client's going away (which closes the upstream connection too).
    let request = tokio::io::copy(&mut client_read, &mut upstream_write);
    let response = async {
        let Some((head, rest)) = read_head(&mut upstream_read).await? else { return anyhow::Ok(()) };
        if let Some(id) = header(&head, "mcp-session-id") {
            state.lock().unwrap_or_else(|e| e.into_inner()).sessions.entry(id).or_insert(i);
        }
        client_write.write_all(&closing(&head)).await?;
        client_write.write_all(&rest).await?;
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await?;
        Ok(())
    };
    tokio::select! {
        done = response => done,
        _ = request => Ok(()),
    }
}

/// The value of header `name` (lowercase) in an HTTP head.
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

/// Reads up to the end of an HTTP head; returns the head (with its blank line) and the bytes after it,
/// or `None` when the peer closed before sending anything.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok(Some((buf, rest)));
        }
        ensure!(buf.len() < 64 * 1024, "an HTTP head longer than 64 KiB");
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed in the middle of an HTTP head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with its `Connection` and `Keep-Alive` headers replaced by `Connection: close`.
fn closing(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for line in text.trim_end_matches("\r\n").split("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    out.into_bytes()
}

#[test]
fn the_expected_differences_file_reads() -> Result<()> {
    let expected = Expected::load()?;
    for e in &expected.entries {
        ensure!(
            SERVERS.contains(&e.server.as_str()),
            "{}: unknown server {:?}",
            expected.path.display(),
            e.server
        );
    }
    Ok(())
}

#[test]
fn heads_are_rewritten_to_close() {
    let head = b"POST /mcp/x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
                 content-length: 2\r\n\r\n";
    assert_eq!(
        String::from_utf8_lossy(&closing(head)),
        "POST /mcp/x HTTP/1.1\r\nHost: a\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn sessions_continue_on_the_other_upstream() {
    let mut spread = Spread { requests: vec![0, 0], ..Spread::default() };
    let first = spread.pick(None);
    spread.sessions.insert("s".into(), first);
    let others: Vec<usize> = (0..3).map(|_| spread.pick(Some("s"))).collect();
    assert_eq!(others, [1 - first, first, 1 - first]);
    assert_eq!(spread.continued, 3);
    assert_eq!(spread.pick(Some("unknown")), 1 - first, "outside sessions the turn goes on");
    assert_eq!(
        header(b"POST / HTTP/1.1\r\nMcp-Session-Id: abc \r\n\r\n", "mcp-session-id").as_deref(),
        Some("abc")
    );
}
