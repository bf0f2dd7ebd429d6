//! PostgreSQL access: the connection pool, database bootstrap (create + migrate) and the registry queries.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;

pub mod bootstrap;
pub mod schema;
pub mod store;

pub use bootstrap::{MIGRATIONS, create_database_if_missing, drop_database, prepare, run_migrations};

/// The shared pool of async PostgreSQL connections.
pub type DbPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// A connection borrowed from the pool.
pub type DbConn<'a> = bb8::PooledConnection<'a, AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How long a request waits for a pooled connection before it is answered with 503.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a database operation outside a request failed (bootstrap, migrations, the hub).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: tokio_postgres::Error },
    #[error("cannot create database {name:?}: {source}")]
    Create { name: String, source: tokio_postgres::Error },
    #[error("cannot drop database {name:?}: {source}")]
    Drop { name: String, source: tokio_postgres::Error },
    #[error("migrations failed: {0}")]
    Migration(String),
    #[error("no connection from the pool: {0}")]
    Pool(#[from] bb8::RunError<diesel_async::pooled_connection::PoolError>),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
}

/// Builds the pool without connecting: connections open on first use, so a database that is briefly
/// away at start delays requests instead of failing the process.
pub fn pool(database_url: &str, max_size: u32) -> DbPool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    crate::metrics::METRICS.db_pool_built(max_size);
    bb8::Pool::builder().max_size(max_size).connection_timeout(CONNECTION_TIMEOUT).build_unchecked(manager)
}

/// Quotes a PostgreSQL identifier (`"` doubled), for statements such as CREATE DATABASE that take no
/// bind parameters.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_identifiers() {
        assert_eq!(super::quote_ident("mcpgw"), "\"mcpgw\"");
        assert_eq!(super::quote_ident("a\"b; DROP"), "\"a\"\"b; DROP\"");
    }
}
