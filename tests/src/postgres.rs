//! A PostgreSQL server of the test's own (`initdb` into a temporary directory, its own port), so that a
//! test can stop the server for real and start it again without touching the one other tests share.
//! Run as root (CI), the cluster belongs to the `postgres` user, as PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::Command;

/// A running (or stopped) private cluster.
pub struct OwnPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl_blocking(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest PostgreSQL installation's `bin` directory (Debian keeps them under /usr/lib/postgresql).
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: PostgreSQL's server binaries are needed")?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin")
}

impl OwnPostgres {
    /// Creates the cluster and starts it on a free port of 127.0.0.1.
    pub async fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpgw-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = is_root();
        let pg = Self { dir, bin: bin_dir()?, port: crate::free_port()?, as_postgres };
        if as_postgres {
            let status =
                std::process::Command::new("chown").arg("postgres:postgres").arg(&pg.dir).status()?;
            if !status.success() {
                bail!("chown postgres {}: {status}", pg.dir.display());
            }
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().context("utf-8 path")?,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .await?;
        pg.start_again().await?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: sessions are ended, as in a restart or failover).
    pub async fn stop(&self) -> Result<()> {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]).await
    }

    /// Starts the stopped server again on the same port and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        self.pg_ctl(&["start", "-w", "-t", "30", "-o", &options, "-l", log.to_str().context("utf-8 path")?])
            .await
            .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())
    }

    async fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let data = self.data();
        let mut all = vec!["-D", data.to_str().context("utf-8 path")?];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all).await
    }

    fn pg_ctl_blocking(&self, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
        let data = self.data();
        let mut cmd = self.command_std("pg_ctl");
        cmd.arg("-D")
            .arg(&data)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.status()
    }

    fn command_std(&self, program: &str) -> std::process::Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            std::process::Command::new(path)
        }
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let mut cmd = Command::from(self.command_std(program));
        cmd.args(args).current_dir(Path::new("/"));
        let out = cmd.output().await.with_context(|| format!("run {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Waits until `url` accepts a connection and answers a query.
pub async fn wait_answering(url: &str, timeout: Duration) -> Result<()> {
    crate::poll_until("PostgreSQL to answer", timeout, || async {
        let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
            return Ok(None);
        };
        let task = tokio::spawn(connection);
        let ok = client.simple_query("SELECT 1").await.is_ok();
        drop(client);
        let _ = task.await;
        Ok(ok.then_some(()))
    })
    .await
}
