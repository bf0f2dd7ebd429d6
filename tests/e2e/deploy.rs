//! The deployment files checked without a cluster or a Docker engine by `tests/peers/check_deploy.py`:
//! the Helm chart lints and renders to manifests valid against the Kubernetes schemas, its values schema
//! refuses bad values, the Dockerfiles pass hadolint and the Compose file the Compose Specification, and
//! all of them use only the flags, variables, routes, subcommands and metrics the binaries have.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mcpgw_e2e::peers::{peers_dir, python};
use mcpgw_e2e::process::prepare;
use mcpgw_e2e::workspace_root;
use tokio::process::Command;

/// It takes seconds (ten chart renders); the margin is for a busy shared machine.
const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_dockerfiles_and_compose_file_pass_their_checks() -> Result<()> {
    let script = peers_dir().join("check_deploy.py");
    let mut cmd = Command::new(python()?);
    cmd.arg(&script).current_dir(workspace_root());
    prepare(&mut cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{} did not finish within {TIMEOUT:?}", script.display()))?
        .with_context(|| format!("run {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{} exited with {}:\n{stdout}{stderr}", script.display(), out.status);
    // Shown with --no-capture: what was checked.
    println!("{stdout}");
    Ok(())
}
