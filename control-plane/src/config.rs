//! Settings from flags and environment, checked by one pure `validate()` into the `Config` the process runs on.

use std::fmt;
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::auth::AdminToken;

/// Environment variable of `--http-addr`.
pub const ENV_HTTP_ADDR: &str = "MCPGW_HTTP_ADDR";
/// Environment variable of `--grpc-addr`.
pub const ENV_GRPC_ADDR: &str = "MCPGW_GRPC_ADDR";
/// Environment variable of `--database-url`.
pub const ENV_DATABASE_URL: &str = "MCPGW_DATABASE_URL";
/// Environment variable of `--redis-url`.
pub const ENV_REDIS_URL: &str = "MCPGW_REDIS_URL";
/// Environment variable of `--admin-token`.
pub const ENV_ADMIN_TOKEN: &str = "MCPGW_ADMIN_TOKEN";
/// Environment variable of `--db-pool-size`.
pub const ENV_DB_POOL_SIZE: &str = "MCPGW_DB_POOL_SIZE";
/// Environment variable of `--api-body-limit`.
pub const ENV_API_BODY_LIMIT: &str = "MCPGW_API_BODY_LIMIT";
/// Environment variable of `--log-format`.
pub const ENV_LOG_FORMAT: &str = "MCPGW_LOG_FORMAT";

/// Largest accepted `--api-body-limit` (64 MiB): admin requests are small JSON documents.
pub const MAX_API_BODY_LIMIT: usize = 64 * 1024 * 1024;
/// Largest accepted `--db-pool-size`.
pub const MAX_DB_POOL_SIZE: u32 = 1000;

/// mcpgw control plane: the server registry on PostgreSQL, the admin REST API, and the gRPC routing stream
/// that feeds every proxy. Every flag can also be set through its `MCPGW_*` environment variable.
#[derive(Debug, Parser)]
#[command(name = "mcpgw-control-plane", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: RawSettings,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The control plane's subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Create and migrate the database if needed, then serve the REST API and the gRPC routing stream.
    Serve,
    /// Check the configuration and exit (0 when valid), printing a summary; touches no database.
    Validate,
    /// Create the database if it is missing, apply pending migrations, and exit.
    Migrate,
}

/// Output format of the logs written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings as given on the command line or in the environment, before validation.
#[derive(Debug, Clone, Args)]
pub struct RawSettings {
    /// Address of the admin REST API (`ip:port`; port 0 picks a free port, logged as `http_addr=`).
    #[arg(long, global = true, env = ENV_HTTP_ADDR, default_value = "127.0.0.1:8000")]
    pub http_addr: String,
    /// Address of the gRPC routing stream that proxies connect to (`ip:port`; port 0 picks a free port).
    #[arg(long, global = true, env = ENV_GRPC_ADDR, default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// PostgreSQL URL; the database is created if it does not exist and migrated at start.
    #[arg(long, global = true, env = ENV_DATABASE_URL, default_value = "postgres://postgres@localhost/mcpgw")]
    pub database_url: String,
    /// Redis URL (`redis://host:port`); when set, /ready also requires Redis to answer PING.
    #[arg(long, global = true, env = ENV_REDIS_URL)]
    pub redis_url: Option<String>,
    /// Bootstrap admin bearer token for REST mutations; without it every POST/PUT/DELETE is refused (401).
    #[arg(long, global = true, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Maximum number of PostgreSQL connections in the pool.
    #[arg(long, global = true, env = ENV_DB_POOL_SIZE, default_value_t = 10)]
    pub db_pool_size: u32,
    /// Largest accepted REST request body, in bytes; bigger bodies get 413 payload_too_large.
    #[arg(long, global = true, env = ENV_API_BODY_LIMIT, default_value_t = 1_048_576)]
    pub api_body_limit: usize,
    /// Log format on stderr (the filter comes from RUST_LOG, default `info`).
    #[arg(long, global = true, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The PostgreSQL database the control plane owns, with its name split out for CREATE DATABASE.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    url: Url,
    name: String,
}

impl DatabaseUrl {
    /// Parses a `postgres://` or `postgresql://` URL that names a database.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::DatabaseUrl(why.to_owned());
        let url = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad("the scheme must be postgres:// or postgresql://"));
        }
        let path = url.path().trim_start_matches('/');
        let name = percent_decode(path).ok_or_else(|| bad("the database name is not valid UTF-8"))?;
        if name.is_empty() || name.contains('/') {
            return Err(bad("the URL must name one database, as in postgres://host/mcpgw"));
        }
        if name.len() > 63 {
            return Err(bad("the database name is longer than PostgreSQL's 63 bytes"));
        }
        Ok(Self { url, name })
    }

    /// The full connection URL (it may carry a password: never log it, log `redacted()`).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same server's `postgres` maintenance database, used to create or drop this one.
    pub fn maintenance(&self) -> String {
        let mut url = self.url.clone();
        url.set_path("/postgres");
        url.to_string()
    }

    /// The same server with another database name (tests use it for throwaway databases).
    pub fn with_name(&self, name: &str) -> Result<Self, ConfigError> {
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        Self::parse(url.as_str())
    }

    /// The URL with any password replaced, safe for logs.
    pub fn redacted(&self) -> String {
        let mut url = self.url.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The validated configuration: the only form of settings the running code sees.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub database: DatabaseUrl,
    pub redis_url: Option<String>,
    pub admin_token: Option<AdminToken>,
    pub db_pool_size: u32,
    pub api_body_limit: usize,
    pub log_format: LogFormat,
}

/// Why the settings were refused; each names the flag to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--http-addr {0:?} is not an ip:port socket address")]
    HttpAddr(String),
    #[error("--grpc-addr {0:?} is not an ip:port socket address")]
    GrpcAddr(String),
    #[error("--http-addr and --grpc-addr are both {0}; give them different ports")]
    SameAddr(SocketAddr),
    #[error("--database-url is invalid: {0}")]
    DatabaseUrl(String),
    #[error("--redis-url is invalid: {0}")]
    RedisUrl(String),
    #[error("--admin-token must not contain whitespace or control characters")]
    AdminToken,
    #[error("--db-pool-size must be between 1 and {MAX_DB_POOL_SIZE}, not {0}")]
    DbPoolSize(u32),
    #[error("--api-body-limit must be between 1 and {MAX_API_BODY_LIMIT} bytes, not {0}")]
    ApiBodyLimit(usize),
}

/// Checks raw settings and builds the `Config`; pure, so `validate` and `serve` agree and tests cover it.
pub fn validate(raw: &RawSettings) -> Result<Config, ConfigError> {
    let http_addr: SocketAddr =
        raw.http_addr.trim().parse().map_err(|_| ConfigError::HttpAddr(raw.http_addr.clone()))?;
    let grpc_addr: SocketAddr =
        raw.grpc_addr.trim().parse().map_err(|_| ConfigError::GrpcAddr(raw.grpc_addr.clone()))?;
    if http_addr == grpc_addr && http_addr.port() != 0 {
        return Err(ConfigError::SameAddr(http_addr));
    }
    let database = DatabaseUrl::parse(raw.database_url.trim())?;
    let redis_url = match raw.redis_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(validate_redis_url(url)?),
    };
    // An empty token (an unset Helm value, say) means "no token", which disables mutations loudly at start.
    let admin_token = match raw.admin_token.as_deref() {
        None | Some("") => None,
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            return Err(ConfigError::AdminToken);
        }
        Some(t) => Some(AdminToken::new(t)),
    };
    if raw.db_pool_size == 0 || raw.db_pool_size > MAX_DB_POOL_SIZE {
        return Err(ConfigError::DbPoolSize(raw.db_pool_size));
    }
    if raw.api_body_limit == 0 || raw.api_body_limit > MAX_API_BODY_LIMIT {
        return Err(ConfigError::ApiBodyLimit(raw.api_body_limit));
    }
    Ok(Config {
        http_addr,
        grpc_addr,
        database,
        redis_url,
        admin_token,
        db_pool_size: raw.db_pool_size,
        api_body_limit: raw.api_body_limit,
        log_format: raw.log_format,
    })
}

fn validate_redis_url(raw: &str) -> Result<String, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::RedisUrl(e.to_string()))?;
    match url.scheme() {
        "redis" | "rediss" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(raw.to_owned()),
        "redis" | "rediss" => Err(ConfigError::RedisUrl("the URL must name a host".into())),
        "redis+unix" | "unix" => Ok(raw.to_owned()),
        other => Err(ConfigError::RedisUrl(format!("unsupported scheme {other:?}; use redis://host:port"))),
    }
}

impl Config {
    /// A human-readable summary without secrets, printed by `validate`.
    pub fn summary(&self) -> String {
        let redis = self.redis_url.as_deref().map_or("(not configured)".to_owned(), redact_url);
        let token = if self.admin_token.is_some() { "set" } else { "NOT SET (mutations refused)" };
        format!(
            "http_addr={}\ngrpc_addr={}\ndatabase_url={}\nredis_url={redis}\nadmin_token={token}\n\
             db_pool_size={}\napi_body_limit={}\nlog_format={:?}",
            self.http_addr,
            self.grpc_addr,
            self.database.redacted(),
            self.db_pool_size,
            self.api_body_limit,
            self.log_format,
        )
    }
}

fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests;
