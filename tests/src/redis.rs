//! A Redis server of the test's own on a Unix socket (no port to pick or race for), so a test can stop it
//! and start it again at the same address.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::process::Spawned;

/// A `redis-server` without persistence.
pub struct Redis {
    /// Under the system's temporary directory: a socket path must stay under 108 bytes.
    dir: PathBuf,
    process: Option<Spawned>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Redis {
    /// Starts it and waits until it answers PING.
    pub async fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpgw-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self { dir, process: None };
        redis.restart().await?;
        Ok(redis)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `redis+unix:///…/redis.sock`, for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Stops the server (SIGTERM); clients see connection errors until [`Redis::restart`].
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(5)).await?;
        }
        let _ = std::fs::remove_file(self.socket());
        Ok(())
    }

    /// Starts the server (again) at the same socket, empty, and waits until it answers PING.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocketperm",
            "700",
            "--unixsocket",
        ])
        .arg(self.socket());
        self.process = Some(Spawned::spawn("redis", cmd).context("redis-server (apt install redis-server)")?);
        let socket = self.socket();
        crate::poll_until("redis-server to answer PING", Duration::from_secs(10), || {
            let socket = socket.clone();
            async move {
                let Ok(mut conn) = tokio::net::UnixStream::connect(&socket).await else { return Ok(None) };
                conn.write_all(b"PING\r\n").await?;
                let mut reply = [0u8; 7];
                conn.read_exact(&mut reply).await?;
                Ok((&reply == b"+PONG\r\n").then_some(()))
            }
        })
        .await
    }
}
