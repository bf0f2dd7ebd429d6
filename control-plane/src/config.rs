//! Settings from flags and environment, checked by one pure `validate()` into the `Config` the process runs on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::auth::SecretToken;
use crate::mcp::StdioPrograms;
use crate::secrets::{KeyError, SecretsKey};
use crate::ssrf::{SsrfError, SsrfPolicy};

mod checks;
mod database;
pub mod oauth;
mod summary;

use checks::default_replica_id;
pub use checks::{HealthDefaults, parse_duration};
pub use database::DatabaseUrl;
pub use oauth::{OauthConfig, OauthSettings, OidcProvider};

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
/// Environment variable of `--proxy-token`.
pub const ENV_PROXY_TOKEN: &str = "MCPGW_PROXY_TOKEN";
/// Environment variable of `--grpc-tls-cert`.
pub const ENV_GRPC_TLS_CERT: &str = "MCPGW_GRPC_TLS_CERT";
/// Environment variable of `--grpc-tls-key`.
pub const ENV_GRPC_TLS_KEY: &str = "MCPGW_GRPC_TLS_KEY";
/// Environment variable of `--db-pool-size`.
pub const ENV_DB_POOL_SIZE: &str = "MCPGW_DB_POOL_SIZE";
/// Environment variable of `--api-body-limit`.
pub const ENV_API_BODY_LIMIT: &str = "MCPGW_API_BODY_LIMIT";
/// Environment variable of `--log-format`.
pub const ENV_LOG_FORMAT: &str = "MCPGW_LOG_FORMAT";
/// Environment variable of `--health-interval`.
pub const ENV_HEALTH_INTERVAL: &str = "MCPGW_HEALTH_INTERVAL";
/// Environment variable of `--health-timeout`.
pub const ENV_HEALTH_TIMEOUT: &str = "MCPGW_HEALTH_TIMEOUT";
/// Environment variable of `--health-healthy-threshold`.
pub const ENV_HEALTH_HEALTHY_THRESHOLD: &str = "MCPGW_HEALTH_HEALTHY_THRESHOLD";
/// Environment variable of `--health-unhealthy-threshold`.
pub const ENV_HEALTH_UNHEALTHY_THRESHOLD: &str = "MCPGW_HEALTH_UNHEALTHY_THRESHOLD";
/// Environment variable of `--health-concurrency`.
pub const ENV_HEALTH_CONCURRENCY: &str = "MCPGW_HEALTH_CONCURRENCY";
/// Environment variable of `--discovery-interval`.
pub const ENV_DISCOVERY_INTERVAL: &str = "MCPGW_DISCOVERY_INTERVAL";
/// Environment variable of `--ssrf-deny`.
pub const ENV_SSRF_DENY: &str = "MCPGW_SSRF_DENY";
/// Environment variable of `--ssrf-allow`.
pub const ENV_SSRF_ALLOW: &str = "MCPGW_SSRF_ALLOW";
/// Environment variable of `--replica-id`.
pub const ENV_REPLICA_ID: &str = "MCPGW_REPLICA_ID";
/// Environment variable of `--api-url` (the CLI's `import` / `export`).
pub const ENV_API_URL: &str = "MCPGW_API_URL";
/// Environment variable of `--secrets-key`.
pub const ENV_SECRETS_KEY: &str = "MCPGW_SECRETS_KEY";
/// Environment variable of `--jwks-refresh`.
pub const ENV_JWKS_REFRESH: &str = "MCPGW_JWKS_REFRESH";
/// Environment variable of `--audit-retention`.
pub const ENV_AUDIT_RETENTION: &str = "MCPGW_AUDIT_RETENTION";
/// Environment variable of `--stdio-programs`.
pub const ENV_STDIO_PROGRAMS: &str = "MCPGW_STDIO_PROGRAMS";

/// Shortest accepted `--audit-retention`: records are dropped a whole day (partition) at a time.
pub const MIN_AUDIT_RETENTION: Duration = Duration::from_secs(86_400);
/// Longest accepted `--audit-retention` (ten years).
pub const MAX_AUDIT_RETENTION: Duration = Duration::from_secs(3650 * 86_400);

/// Shortest accepted `--jwks-refresh` (tests use about a second; issuers are not to be hammered).
pub const MIN_JWKS_REFRESH: Duration = Duration::from_millis(100);

/// Shortest accepted health-check interval.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(50);
/// Largest accepted health threshold.
pub const MAX_HEALTH_THRESHOLD: u32 = 100;

/// Shortest accepted `--proxy-token`: the proxies refuse shorter ones, so the control plane does too.
pub const MIN_PROXY_TOKEN_CHARS: usize = 16;

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
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Create and migrate the database if needed, then serve the REST API and the gRPC routing stream.
    Serve,
    /// Check the configuration and exit (0 when valid), printing a summary; touches no database.
    Validate,
    /// Create the database if it is missing, apply pending migrations, and exit.
    Migrate,
    /// Ask the running control plane's REST listener (`--http-addr`) for `/ready`: exit 0 when ready, 1
    /// otherwise (a container health check that needs no shell).
    Healthcheck,
    /// Print the registry as YAML (`GET /api/v1/admin/export` of the running control plane at --api-url).
    Export,
    /// Apply a YAML registry file through the REST API of the control plane at --api-url (idempotent).
    Import(ImportArgs),
    /// Registered servers, through the REST API at --api-url (answers printed as JSON).
    #[command(subcommand)]
    Servers(ServersCommand),
    /// A server's instances, through the REST API at --api-url.
    #[command(subcommand)]
    Instances(InstancesCommand),
    /// API keys, through the REST API at --api-url.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Rate limits, through the REST API at --api-url.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Query the audit log through the REST API at --api-url (newest first, JSON).
    Audit(AuditArgs),
    /// Print the shell completion script of this command (e.g. `completions bash > /etc/bash_completion.d/mcpgw-control-plane`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `servers …`: a server is named by its id or its name.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServersCommand {
    /// Every server (`--tag`, `--health` filter).
    List {
        #[arg(long)]
        tag: Option<String>,
        /// healthy, unhealthy or unknown.
        #[arg(long)]
        health: Option<String>,
    },
    /// One server, with its instances and health.
    Get { server: String },
    /// Register a server with one instance.
    Create {
        name: String,
        endpoint_url: String,
        /// streamable_http (default), sse, websocket or stdio.
        #[arg(long)]
        transport: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Do not discover its tools, prompts and resources now.
        #[arg(long)]
        no_discover: bool,
    },
    /// Delete a server.
    Delete { server: String },
    /// Discover a server's tools, prompts and resources now.
    Refresh { server: String },
}

/// `instances …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum InstancesCommand {
    /// Add an instance to a server.
    Add {
        server: String,
        endpoint_url: String,
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove an instance (its id: `servers get` lists them).
    Remove { server: String, instance_id: String },
}

/// `keys …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Every API key (never their secrets).
    List,
    /// Create a key; its secret is printed once.
    Create {
        name: String,
        /// admin, server_owner, user (default) or a custom role.
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a key at once.
    Revoke { id: String },
}

/// `limits …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LimitsCommand {
    /// Every rate limit.
    List,
    /// Create a rate limit, e.g. `limits create user 100 1m --server docs`.
    Create {
        /// tenant, user, api_key, server or tool: what one bucket counts.
        scope: String,
        /// Requests allowed per period.
        requests: u32,
        /// The period: 1s, 1m, 1h.
        per: String,
        #[arg(long)]
        burst: Option<u32>,
        /// Which requests (names or globs); a missing one matches any.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        /// Shared across proxy replicas (needs --redis-url on the control plane).
        #[arg(long)]
        global: bool,
    },
    /// Delete a rate limit.
    Delete { id: String },
}

/// `audit` filters (those of `GET /api/v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AuditArgs {
    /// RFC 3339 time or a duration back from now (`1h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub principal: Option<String>,
    #[arg(long)]
    pub server: Option<String>,
    #[arg(long)]
    pub tool: Option<String>,
    #[arg(long)]
    pub method: Option<String>,
    #[arg(long)]
    pub outcome: Option<String>,
    /// mcp or admin.
    #[arg(long)]
    pub kind: Option<String>,
    /// Records per page.
    #[arg(long)]
    pub limit: Option<usize>,
    /// The next page's cursor (from the previous answer).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Arguments of `import`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ImportArgs {
    /// The YAML file (`-` for standard input).
    pub file: String,
    /// Print the changes that would be made, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete servers that the file does not list.
    #[arg(long)]
    pub prune: bool,
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
    /// Bootstrap admin bearer token for the REST API (`/api/v1/...`, reads included); without it only
    /// API keys with the `admin` role are accepted.
    #[arg(long, global = true, env = ENV_ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token every proxy must present on the gRPC routing stream; without it only proxies
    /// connecting from loopback are accepted.
    #[arg(long, global = true, env = ENV_PROXY_TOKEN, hide_env_values = true)]
    pub proxy_token: Option<String>,
    /// PEM certificate chain for TLS on the gRPC listener (with --grpc-tls-key); plaintext without both.
    #[arg(long, global = true, env = ENV_GRPC_TLS_CERT)]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, global = true, env = ENV_GRPC_TLS_KEY)]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM certificate chain of the REST listener (with --http-tls-key): it then serves HTTPS only. The
    /// files are read again when they change: a renewed certificate is served without a restart.
    #[arg(long, global = true, env = "MCPGW_HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(long, global = true, env = "MCPGW_HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
    /// PEM file of certificate authorities trusted, besides the system's, when discovery and health checks
    /// reach https:// and wss:// upstreams (a private CA).
    #[arg(long, global = true, env = "MCPGW_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Maximum number of PostgreSQL connections in the pool.
    #[arg(long, global = true, env = ENV_DB_POOL_SIZE, default_value_t = 10)]
    pub db_pool_size: u32,
    /// Largest accepted REST request body, in bytes; bigger bodies get 413 payload_too_large.
    #[arg(long, global = true, env = ENV_API_BODY_LIMIT, default_value_t = 1_048_576)]
    pub api_body_limit: usize,
    /// Log format on stderr (the filter comes from RUST_LOG, default `info`).
    #[arg(long, global = true, env = ENV_LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Default interval between active health checks of an instance (`500ms`, `10s`); servers may override.
    #[arg(long, global = true, env = ENV_HEALTH_INTERVAL, default_value = "10s")]
    pub health_interval: String,
    /// Default time one probe (connect, handshake and a list) may take before it counts as a failure.
    #[arg(long, global = true, env = ENV_HEALTH_TIMEOUT, default_value = "5s")]
    pub health_timeout: String,
    /// Consecutive successful probes that make an unhealthy instance healthy again.
    #[arg(long, global = true, env = ENV_HEALTH_HEALTHY_THRESHOLD, default_value_t = 2)]
    pub health_healthy_threshold: u32,
    /// Consecutive failed probes that make an instance unhealthy (no traffic from the proxies).
    #[arg(long, global = true, env = ENV_HEALTH_UNHEALTHY_THRESHOLD, default_value_t = 3)]
    pub health_unhealthy_threshold: u32,
    /// Most probes in flight at once.
    #[arg(long, global = true, env = ENV_HEALTH_CONCURRENCY, default_value_t = 16)]
    pub health_concurrency: u32,
    /// How often every server's capabilities are discovered again (`0s` turns periodic refresh off).
    #[arg(long, global = true, env = ENV_DISCOVERY_INTERVAL, default_value = "5m")]
    pub discovery_interval: String,
    /// More destinations to refuse as endpoints: CIDRs or `loopback`, `private`, `link_local` (comma-separated).
    #[arg(long, global = true, env = ENV_SSRF_DENY, value_delimiter = ',')]
    pub ssrf_deny: Vec<String>,
    /// Exceptions that win over every refusal (built-in ones included): CIDRs or the same names.
    #[arg(long, global = true, env = ENV_SSRF_ALLOW, value_delimiter = ',')]
    pub ssrf_allow: Vec<String>,
    /// This replica's name in the health records and the leader state (default: hostname-pid).
    #[arg(long, global = true, env = ENV_REPLICA_ID)]
    pub replica_id: Option<String>,
    /// REST API used by `import` and `export` (default: http://<--http-addr>).
    #[arg(long, global = true, env = ENV_API_URL)]
    pub api_url: Option<String>,
    /// Key that seals upstream credentials at rest (AES-256-GCM): 32 bytes as base64 or 64 hex characters
    /// (`openssl rand -base64 32`). Without it, credentials for upstreams cannot be registered.
    #[arg(long, global = true, env = ENV_SECRETS_KEY, hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// How often the JWKS of every trusted issuer is fetched again (a key rotated out stops verifying on
    /// every proxy within this interval).
    #[arg(long, global = true, env = ENV_JWKS_REFRESH, default_value = "5m")]
    pub jwks_refresh: String,
    /// How long audit records are kept (`30d`, `90d`; 1d to 3650d): the leader drops each day's partition
    /// once the whole day is older, and records older than this that proxies still send are not written.
    #[arg(long, global = true, env = ENV_AUDIT_RETENTION, default_value = "30d")]
    pub audit_retention: String,
    /// Programs stdio servers may run, comma-separated, matched exactly against a command's `program` (a
    /// bare name looked up in PATH, or an absolute path). Empty (the default): stdio servers are refused at
    /// registration (stdio_not_allowed) and never started by discovery or health checks.
    #[arg(long, global = true, env = ENV_STDIO_PROGRAMS, value_delimiter = ',')]
    pub stdio_programs: Vec<String>,
    /// A YAML file of settings: keys are the long flag names, values what the flag takes (lists for the
    /// comma-separated ones). Flags beat environment variables, which beat the file.
    #[arg(long, env = mcpgw_proto::config_file::ENV, global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Keep the registry in sync with Kubernetes Services annotated `mcpgw.io/server: <name>` (the leader
    /// watches them and registers, updates and removes their servers).
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_DISCOVERY")]
    pub kubernetes_discovery: bool,
    /// Namespaces whose Services are watched, comma-separated; `*` for every namespace. Default: the
    /// control plane's own (its service account's namespace).
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_NAMESPACES", value_delimiter = ',')]
    pub kubernetes_namespaces: Vec<String>,
    /// The Kubernetes API server. Default, in a pod: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT.
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_API")]
    pub kubernetes_api: Option<String>,
    /// File holding the bearer token for the API server, read for every request (default, in a pod: its
    /// service account token).
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_TOKEN_FILE")]
    pub kubernetes_token_file: Option<PathBuf>,
    /// PEM CA of the API server's certificate (default, in a pod: its service account CA).
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_CA")]
    pub kubernetes_ca: Option<PathBuf>,
    /// How often the registry is reconciled with the Services besides the watch's events.
    #[arg(long, global = true, env = "MCPGW_KUBERNETES_RESYNC", default_value = "5m")]
    pub kubernetes_resync: String,
    #[command(flatten)]
    pub oauth: OauthSettings,
    #[command(flatten)]
    pub otlp: mcpgw_proto::otlp::Args,
}

/// The validated configuration: the only form of settings the running code sees.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub database: DatabaseUrl,
    pub redis_url: Option<String>,
    pub admin_token: Option<SecretToken>,
    /// `None`: proxies are accepted from loopback only.
    pub proxy_token: Option<SecretToken>,
    /// `None`: the gRPC listener speaks plaintext HTTP/2.
    pub grpc_tls: Option<GrpcTls>,
    /// The REST listener's certificate; `None`: plain HTTP.
    pub http_tls: Option<std::sync::Arc<mcpgw_proto::tls::ReloadingCert>>,
    /// Extra CAs trusted for upstreams (PEM, read at start).
    pub upstream_ca: Option<Vec<u8>>,
    pub db_pool_size: u32,
    pub api_body_limit: usize,
    pub log_format: LogFormat,
    pub health: HealthDefaults,
    /// `None`: no periodic discovery.
    pub discovery_interval: Option<Duration>,
    pub ssrf: SsrfPolicy,
    pub replica_id: String,
    /// Base URL of the REST API for `import` / `export`.
    pub api_url: String,
    /// `None`: upstream credentials cannot be stored (nor stored ones opened).
    pub secrets_key: Option<SecretsKey>,
    /// Interval of the trusted issuers' JWKS refresh.
    pub jwks_refresh: Duration,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// The programs stdio servers may run (none by default).
    pub stdio_programs: StdioPrograms,
    /// The authorization server.
    pub oauth: OauthConfig,
    /// The SSRF policy of client ID metadata documents: `ssrf` plus loopback, private and link-local
    /// addresses (`--ssrf-allow` still wins).
    pub document_ssrf: SsrfPolicy,
    /// Span export; `None` without `--otlp-endpoint`.
    pub otlp: Option<mcpgw_proto::otlp::Settings>,
    /// Kubernetes service discovery; `None` unless `--kubernetes-discovery`.
    pub kubernetes: Option<crate::kube::KubeSettings>,
}

/// PEM files of the gRPC listener's TLS identity (read when serving starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the settings were refused; each names the flag to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--http-addr {0:?} is not an ip:port socket address")]
    HttpAddr(String),
    #[error("--{flag}: {reason}")]
    Otlp { flag: &'static str, reason: String },
    #[error("--grpc-addr {0:?} is not an ip:port socket address")]
    GrpcAddr(String),
    #[error("--http-addr and --grpc-addr are both {0}; give them different ports")]
    SameAddr(SocketAddr),
    #[error("--database-url is invalid: {0}")]
    DatabaseUrl(String),
    #[error("--redis-url is invalid: {0}")]
    RedisUrl(String),
    #[error(
        "--admin-token must be at least {MIN_PROXY_TOKEN_CHARS} characters without whitespace or control \
         characters (openssl rand -base64 32): anyone who guesses it administers the gateway"
    )]
    AdminToken,
    #[error(
        "--proxy-token must be at least {MIN_PROXY_TOKEN_CHARS} visible ASCII characters (openssl rand -base64 32)"
    )]
    ProxyToken,
    #[error("--grpc-tls-cert and --grpc-tls-key go together: give both or neither")]
    GrpcTls,
    #[error("--{flag}: {reason}")]
    Tls { flag: &'static str, reason: String },
    #[error("--{flag}: {reason}")]
    Kubernetes { flag: &'static str, reason: String },
    #[error("--db-pool-size must be between 1 and {MAX_DB_POOL_SIZE}, not {0}")]
    DbPoolSize(u32),
    #[error("--api-body-limit must be between 1 and {MAX_API_BODY_LIMIT} bytes, not {0}")]
    ApiBodyLimit(usize),
    #[error(
        "--{flag} {value:?} is not a duration like \"500ms\" or \"10s\" within the allowed range ({why})"
    )]
    Duration { flag: &'static str, value: String, why: String },
    #[error("--{0} must be between 1 and {MAX_HEALTH_THRESHOLD}")]
    Threshold(&'static str),
    #[error("--health-concurrency must be between 1 and 1024, not {0}")]
    Concurrency(u32),
    #[error("--ssrf-deny/--ssrf-allow: {0}")]
    Ssrf(#[from] SsrfError),
    #[error("--api-url {0:?} is not an http(s) URL")]
    ApiUrl(String),
    #[error(transparent)]
    SecretsKey(#[from] KeyError),
    #[error("--{flag}: {why}")]
    Oauth { flag: &'static str, why: String },
    #[error(
        "--stdio-programs: {0:?} is not a program: give bare names (looked up in PATH) or absolute paths, comma-separated"
    )]
    StdioProgram(String),
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
    // An empty token (an unset Helm value, say) means "no token", which is warned about loudly at start.
    if raw.admin_token.as_deref().is_some_and(|t| !t.is_empty() && t.chars().count() < MIN_PROXY_TOKEN_CHARS)
    {
        return Err(ConfigError::AdminToken);
    }
    let admin_token = secret(raw.admin_token.as_deref()).map_err(|()| ConfigError::AdminToken)?;
    // Proxies send it as gRPC metadata, which is visible ASCII.
    let proxy_token = match raw.proxy_token.as_deref() {
        None | Some("") => None,
        Some(t) if t.len() >= MIN_PROXY_TOKEN_CHARS && t.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(SecretToken::new(t))
        }
        Some(_) => return Err(ConfigError::ProxyToken),
    };
    let grpc_tls = match (&raw.grpc_tls_cert, &raw.grpc_tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(GrpcTls { cert: cert.clone(), key: key.clone() }),
        _ => return Err(ConfigError::GrpcTls),
    };
    let http_tls = match (&raw.http_tls_cert, &raw.http_tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(
            mcpgw_proto::tls::ReloadingCert::load(cert, key)
                .map_err(|reason| ConfigError::Tls { flag: "http-tls-cert", reason })?,
        ),
        _ => {
            return Err(ConfigError::Tls {
                flag: "http-tls-cert",
                reason: "--http-tls-cert and --http-tls-key go together: give both or neither".into(),
            });
        }
    };
    let upstream_ca = match &raw.upstream_ca {
        None => None,
        Some(path) => {
            let invalid = |reason| ConfigError::Tls { flag: "upstream-ca", reason };
            mcpgw_proto::tls::root_store(path).map_err(invalid)?;
            Some(std::fs::read(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?)
        }
    };
    if raw.db_pool_size == 0 || raw.db_pool_size > MAX_DB_POOL_SIZE {
        return Err(ConfigError::DbPoolSize(raw.db_pool_size));
    }
    if raw.api_body_limit == 0 || raw.api_body_limit > MAX_API_BODY_LIMIT {
        return Err(ConfigError::ApiBodyLimit(raw.api_body_limit));
    }
    let hour = Duration::from_secs(3600);
    let interval = parse_duration("health-interval", &raw.health_interval, MIN_HEALTH_INTERVAL, hour)?;
    let timeout = parse_duration("health-timeout", &raw.health_timeout, Duration::from_millis(10), hour)?;
    for (flag, value) in [
        ("health-healthy-threshold", raw.health_healthy_threshold),
        ("health-unhealthy-threshold", raw.health_unhealthy_threshold),
    ] {
        if value == 0 || value > MAX_HEALTH_THRESHOLD {
            return Err(ConfigError::Threshold(flag));
        }
    }
    if raw.health_concurrency == 0 || raw.health_concurrency > 1024 {
        return Err(ConfigError::Concurrency(raw.health_concurrency));
    }
    let discovery = parse_duration(
        "discovery-interval",
        &raw.discovery_interval,
        Duration::ZERO,
        Duration::from_secs(7 * 86400),
    )?;
    let ssrf = SsrfPolicy::new(&raw.ssrf_deny, &raw.ssrf_allow)?;
    let api_url = match raw.api_url.as_deref().map(str::trim) {
        None | Some("") => format!("{}://{http_addr}", if http_tls.is_some() { "https" } else { "http" }),
        Some(url) => match Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => url.trim_end_matches('/').to_owned(),
            _ => return Err(ConfigError::ApiUrl(url.to_owned())),
        },
    };
    let secrets_key = match raw.secrets_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(key) => Some(SecretsKey::parse(key)?),
    };
    let jwks_refresh =
        parse_duration("jwks-refresh", &raw.jwks_refresh, MIN_JWKS_REFRESH, Duration::from_secs(86_400))?;
    let audit_retention =
        parse_duration("audit-retention", &raw.audit_retention, MIN_AUDIT_RETENTION, MAX_AUDIT_RETENTION)?;
    let oauth = oauth::validate(&raw.oauth)?;
    let stdio_programs = stdio_programs(&raw.stdio_programs)?;
    let strict: Vec<String> = raw
        .ssrf_deny
        .iter()
        .cloned()
        .chain(["loopback", "private", "link_local"].map(String::from))
        .collect();
    let document_ssrf = SsrfPolicy::new(&strict, &raw.ssrf_allow)?;
    let otlp = raw.otlp.validate().map_err(|(flag, reason)| ConfigError::Otlp { flag, reason })?;
    let kubernetes = if raw.kubernetes_discovery { Some(kubernetes(raw)?) } else { None };
    Ok(Config {
        stdio_programs,
        oauth,
        document_ssrf,
        secrets_key,
        jwks_refresh,
        audit_retention,
        health: HealthDefaults {
            interval,
            timeout,
            healthy_threshold: raw.health_healthy_threshold,
            unhealthy_threshold: raw.health_unhealthy_threshold,
            concurrency: raw.health_concurrency as usize,
        },
        discovery_interval: (!discovery.is_zero()).then_some(discovery),
        ssrf,
        replica_id: raw
            .replica_id
            .clone()
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(default_replica_id),
        api_url,
        http_addr,
        grpc_addr,
        database,
        redis_url,
        admin_token,
        proxy_token,
        grpc_tls,
        http_tls,
        upstream_ca,
        db_pool_size: raw.db_pool_size,
        api_body_limit: raw.api_body_limit,
        log_format: raw.log_format,
        otlp,
        kubernetes,
    })
}

/// Where a pod finds its service account.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `--kubernetes-*`: the API server, credentials and namespaces of the service discovery.
fn kubernetes(raw: &RawSettings) -> Result<crate::kube::KubeSettings, ConfigError> {
    let invalid = |flag: &'static str, reason: String| ConfigError::Kubernetes { flag, reason };
    let account = Path::new(SERVICE_ACCOUNT);
    let api = match raw.kubernetes_api.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(api) => api.to_owned(),
        None => match (std::env::var("KUBERNETES_SERVICE_HOST"), std::env::var("KUBERNETES_SERVICE_PORT")) {
            (Ok(host), Ok(port)) if host.contains(':') => format!("https://[{host}]:{port}"),
            (Ok(host), Ok(port)) => format!("https://{host}:{port}"),
            _ => {
                return Err(invalid(
                    "kubernetes-api",
                    "not in a pod (no KUBERNETES_SERVICE_HOST): give the API server's URL".into(),
                ));
            }
        },
    };
    let mut api = Url::parse(&api).map_err(|e| invalid("kubernetes-api", format!("{api:?}: {e}")))?;
    if !matches!(api.scheme(), "http" | "https") || api.host_str().is_none() {
        return Err(invalid("kubernetes-api", format!("{api} is not an http(s) URL")));
    }
    if !api.path().ends_with('/') {
        api.set_path(&format!("{}/", api.path()));
    }
    let token_file = raw.kubernetes_token_file.clone().or_else(|| {
        let default = account.join("token");
        default.exists().then_some(default)
    });
    let ca_file = raw.kubernetes_ca.clone().or_else(|| {
        let default = account.join("ca.crt");
        (api.scheme() == "https" && default.exists()).then_some(default)
    });
    let ca = match ca_file {
        None => None,
        Some(path) => {
            mcpgw_proto::tls::root_store(&path).map_err(|e| invalid("kubernetes-ca", e))?;
            Some(
                std::fs::read(&path)
                    .map_err(|e| invalid("kubernetes-ca", format!("{}: {e}", path.display())))?,
            )
        }
    };
    let listed: Vec<String> =
        raw.kubernetes_namespaces.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
    let namespaces = if listed.iter().any(|n| n == "*") {
        Vec::new()
    } else if listed.is_empty() {
        let own = std::fs::read_to_string(account.join("namespace")).map_err(|_| {
            invalid("kubernetes-namespaces", "not in a pod: name the namespaces to watch (or `*`)".into())
        })?;
        vec![own.trim().to_owned()]
    } else {
        listed
    };
    for ns in &namespaces {
        let label = ns.len() <= 63
            && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !label {
            return Err(invalid("kubernetes-namespaces", format!("{ns:?} is not a namespace name")));
        }
    }
    let resync = parse_duration(
        "kubernetes-resync",
        &raw.kubernetes_resync,
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    )?;
    Ok(crate::kube::KubeSettings { api, namespaces, token_file, ca, resync })
}

/// `--stdio-programs`: bare names or absolute paths (empty entries, from a trailing comma, are skipped).
fn stdio_programs(raw: &[String]) -> Result<StdioPrograms, ConfigError> {
    let mut programs = Vec::new();
    for entry in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let relative = entry.contains('/') && !entry.starts_with('/');
        if relative || entry.len() > crate::model::MAX_ITEM_BYTES || entry.chars().any(char::is_control) {
            return Err(ConfigError::StdioProgram(entry.to_owned()));
        }
        programs.push(entry.to_owned());
    }
    Ok(StdioPrograms::new(programs))
}

/// A bearer secret from a flag: empty means unset; whitespace and control characters are refused.
fn secret(raw: Option<&str>) -> Result<Option<SecretToken>, ()> {
    match raw {
        None | Some("") => Ok(None),
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(()),
        Some(t) => Ok(Some(SecretToken::new(t))),
    }
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

#[cfg(test)]
mod tests;
