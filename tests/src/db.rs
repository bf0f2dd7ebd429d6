//! A PostgreSQL database name of its own for each test, dropped when the test ends.

use anyhow::{Context, Result};

/// Server the tests use; override with `MCPGW_E2E_PG` (a URL without a database name).
fn server_url() -> String {
    std::env::var("MCPGW_E2E_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A unique database (`mcpgw_e2e_<uuid>`) on the local PostgreSQL. The control plane creates and migrates it
/// at start; dropping the handle drops the database (`WITH (FORCE)`, so lingering connections do not block).
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh database name; nothing is created yet.
    pub fn new() -> Self {
        let name = format!("mcpgw_e2e_{}", uuid::Uuid::new_v4().simple());
        let url = format!("{}/{name}", server_url().trim_end_matches('/'));
        Self { name, url }
    }

    /// Database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection URL of the database (for `--database-url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's URL through another address (a relay in front of the server).
    pub fn url_through(&self, addr: std::net::SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    /// The PostgreSQL server's address (host and port of `MCPGW_E2E_PG`).
    pub fn server_addr() -> Result<std::net::SocketAddr> {
        let url = url::Url::parse(&server_url())?;
        let host = url.host_str().context("the PostgreSQL URL names no host")?;
        let port = url.port().unwrap_or(5432);
        Ok(format!("{host}:{port}").parse()?)
    }

    /// Drops the database now.
    pub async fn drop_database(&self) -> Result<()> {
        drop_database(&self.name).await
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

async fn drop_database(name: &str) -> Result<()> {
    let admin = format!("{}/postgres", server_url().trim_end_matches('/'));
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect {admin}"))?;
    let conn = tokio::spawn(connection);
    // The name is ours (hex uuid), so quoting it is enough.
    let result = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
    drop(client);
    let _ = conn.await;
    result.with_context(|| format!("drop database {name}"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: use a runtime of our own on a
        // thread of our own.
        let outcome = std::thread::spawn(move || -> Result<()> {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(drop_database(&name))
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}
