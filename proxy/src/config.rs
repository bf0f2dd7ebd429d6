//! Proxy settings: flags and `MCPGW_*` environment variables, validated into a [`Config`] before anything
//! is built from them.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::session;

/// mcpgw data plane: forwards MCP traffic on `/mcp/{server}` to the upstream servers registered in the
/// control plane, streaming responses (SSE included) without buffering.
#[derive(Debug, Parser)]
#[command(name = "mcpgw-proxy", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Check the configuration and exit: 0 when valid, 2 with the reason otherwise.
    Validate,
    /// Ask the running proxy's admin listener (`--admin-addr`) for `/readyz`: exit 0 when ready, 1
    /// otherwise (a container health check that needs no shell).
    Healthcheck,
    /// Print the shell completion script of this command (e.g. `completions bash`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Raw settings as given by flags and environment; [`Settings::validate`] turns them into a [`Config`].
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address for MCP client traffic (`/mcp/{server}`).
    #[arg(long, env = "MCPGW_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: String,

    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics`, `/routes`.
    #[arg(long, env = "MCPGW_ADMIN_ADDR", default_value = "127.0.0.1:9180", global = true)]
    pub admin_addr: String,

    /// gRPC URL of the control plane that streams the routing table.
    #[arg(long, env = "MCPGW_CONTROL_PLANE", default_value = "http://127.0.0.1:50051", global = true)]
    pub control_plane: String,

    /// Identity this proxy reports to the control plane (default: hostname-pid).
    #[arg(long, env = "MCPGW_PROXY_ID", global = true)]
    pub proxy_id: Option<String>,

    /// Largest request body accepted from a client, in bytes; larger bodies get 413.
    #[arg(long, env = "MCPGW_MAX_REQUEST_BODY", default_value_t = 4 * 1024 * 1024, global = true)]
    pub max_request_body: usize,

    /// Time allowed to open a connection (TCP and TLS) to an upstream instance; beyond it the client gets 504.
    #[arg(long, env = "MCPGW_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub connect_timeout: Duration,

    /// Time allowed for an upstream to start answering (response headers); beyond it the client gets 504.
    #[arg(long, env = "MCPGW_UPSTREAM_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration, global = true)]
    pub upstream_timeout: Duration,

    /// Longest silence allowed inside an ordinary (non-SSE) response body. SSE streams have no idle limit:
    /// they live as long as the upstream keeps them open.
    #[arg(long, env = "MCPGW_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub idle_timeout: Duration,

    /// Total time a client has to send a request's body (a slow client holding a connection and a
    /// worker is cut at this deadline with 408).
    #[arg(long, env = "MCPGW_REQUEST_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub request_body_timeout: Duration,

    /// Total time a client has to send a request's head, from its first byte (a client dripping its
    /// headers is disconnected at this deadline).
    #[arg(long, env = "MCPGW_REQUEST_HEAD_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub request_head_timeout: Duration,

    /// Most client connections open at once; beyond it a new connection is answered 503
    /// `too_many_connections` and closed.
    #[arg(long, env = "MCPGW_MAX_CONNECTIONS", default_value_t = 20_000, global = true)]
    pub max_connections: usize,

    /// Most connections open at once from one client address; beyond it 429 `too_many_connections`. Behind
    /// a load balancer every client shares its address: raise this to --max-connections there.
    #[arg(long, env = "MCPGW_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 1_000, global = true)]
    pub max_connections_per_client: usize,

    /// Most long-lived streams (GET: server-to-client SSE, legacy SSE sessions and bridges) open at once;
    /// beyond it new ones get 503 `too_many_streams`.
    #[arg(long, env = "MCPGW_MAX_STREAMS", default_value_t = 10_000, global = true)]
    pub max_streams: usize,

    /// Most long-lived streams one principal may hold open; beyond it 429 `too_many_streams`.
    #[arg(long, env = "MCPGW_MAX_STREAMS_PER_PRINCIPAL", default_value_t = 100, global = true)]
    pub max_streams_per_principal: usize,

    /// Audit records of MCP requests, shipped to the control plane: `on` or `off`.
    #[arg(long, env = "MCPGW_AUDIT", default_value = "on", value_parser = ["on", "off"], global = true)]
    pub audit: String,

    /// Audit records the in-memory queue holds between requests and the shipper.
    #[arg(long, env = "MCPGW_AUDIT_QUEUE", default_value_t = 65_536, global = true)]
    pub audit_queue: usize,

    /// Directory where audit batches wait on disk while the control plane is away or slow (one directory
    /// per proxy; kept across restarts and replayed in order). Without it they wait in memory only.
    #[arg(long, env = "MCPGW_AUDIT_SPILL_DIR", global = true)]
    pub audit_spill_dir: Option<std::path::PathBuf>,

    /// Most disk space the audit spill may take, e.g. `512MiB`, `1GiB` (bytes without a unit).
    #[arg(long, env = "MCPGW_AUDIT_SPILL_MAX", default_value = "1GiB", value_parser = parse_size, global = true)]
    pub audit_spill_max: u64,

    /// When the audit queue and spill are both full: `drop` the record (counted and logged) or `refuse` new
    /// MCP requests with 503 `audit_unavailable` until there is room.
    #[arg(long, env = "MCPGW_AUDIT_OVERFLOW", value_enum, default_value = "drop", global = true)]
    pub audit_overflow: crate::audit::Overflow,

    /// Worker threads of the MCP listener.
    #[arg(long, env = "MCPGW_THREADS", default_value_t = 2, global = true)]
    pub threads: usize,

    /// On SIGTERM, how long to keep serving before draining (lets a load balancer notice the shutdown).
    #[arg(long, env = "MCPGW_GRACE_PERIOD", default_value = "1s", value_parser = humantime::parse_duration, global = true)]
    pub grace_period: Duration,

    /// After the grace period, how long in-flight requests get to finish.
    #[arg(long, env = "MCPGW_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_timeout: Duration,

    /// Key sealing session tokens (`Mcp-Session-Id`): 32 random bytes as base64 or hex, the same on every
    /// replica so a session continues on any of them (`openssl rand -base64 32`). Without one, a random key
    /// is generated: sessions then die with the process and do not cross replicas (development only).
    #[arg(long, env = "MCPGW_SESSION_KEY", hide_env_values = true, global = true)]
    pub session_key: Option<String>,

    /// Earlier session keys, comma-separated: tokens they sealed are still accepted (key rotation).
    #[arg(
        long,
        env = "MCPGW_SESSION_PREVIOUS_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        global = true
    )]
    pub session_previous_keys: Vec<String>,

    /// Lifetime of a session token; an older token gets 404 and the client re-initializes.
    #[arg(long, env = "MCPGW_SESSION_TTL", default_value = "24h", value_parser = humantime::parse_duration, global = true)]
    pub session_ttl: Duration,

    /// A session bridged onto a message transport (legacy HTTP+SSE, WebSocket or stdio server) with no
    /// message either way for this long, and no GET stream open, ends (its link closes, its stdio process
    /// is killed); the client's next request gets 404 and it re-initializes. At the latest a bridged
    /// session ends with its token (--session-ttl).
    #[arg(long, env = "MCPGW_BRIDGE_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration, global = true)]
    pub bridge_idle_timeout: Duration,

    /// Programs stdio servers may run on this proxy, comma-separated, matched exactly against a command's
    /// `program` (`npx`, `/usr/local/bin/my-server`). Empty (the default): this proxy runs no stdio server.
    #[arg(long, env = "MCPGW_STDIO_PROGRAMS", value_delimiter = ',', global = true)]
    pub stdio_programs: Vec<String>,

    /// More upstream destinations to refuse: CIDRs or `loopback`, `private`, `link_local` (comma-separated).
    /// Cloud metadata, link-local, multicast and reserved addresses are always refused; a name is checked
    /// by every address it resolves to (refused ones are never connected to).
    #[arg(long, env = "MCPGW_SSRF_DENY", value_delimiter = ',', global = true)]
    pub ssrf_deny: Vec<String>,

    /// Exceptions that win over every refusal (built-in ones included): CIDRs or the same names.
    #[arg(long, env = "MCPGW_SSRF_ALLOW", value_delimiter = ',', global = true)]
    pub ssrf_allow: Vec<String>,

    /// How often upstream host names are resolved again; an instance whose name now resolves elsewhere
    /// gets new connections at the new address. `0s`: resolved only when the routing table changes.
    #[arg(long, env = "MCPGW_DNS_REFRESH", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub dns_refresh: Duration,

    /// File keeping the last good routing table; at start, the proxy serves it until the control plane
    /// answers (cold start while the control plane is down). Unset: no cache.
    #[arg(long, env = "MCPGW_TABLE_CACHE", global = true)]
    pub table_cache: Option<std::path::PathBuf>,

    /// Base URL clients use to reach this gateway (default `http://<--listen>`); its origin is allowed in
    /// `Origin` and its host in `Host` unless the lists below are given.
    #[arg(long, env = "MCPGW_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// `Host` values the MCP listener serves, comma-separated: names (any port) or `name:port`; `*` for any.
    /// Default: `localhost`, `127.0.0.1`, `[::1]` and the `--public-url` host. Others get 421.
    #[arg(long, env = "MCPGW_ALLOWED_HOSTS", value_delimiter = ',', global = true)]
    pub allowed_hosts: Vec<String>,

    /// `Origin` values accepted from browsers, comma-separated (`https://app.example`); `*` for any. Default:
    /// the `--public-url` origin. A request with another `Origin` gets 403; one without `Origin` passes.
    #[arg(long, env = "MCPGW_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub allowed_origins: Vec<String>,

    /// PEM file of the certificate authority that signed the control plane's gRPC certificate; needed for
    /// an `https://` `--control-plane` URL (the stream then runs over TLS).
    #[arg(long, env = "MCPGW_CONTROL_PLANE_CA", global = true)]
    pub control_plane_ca: Option<std::path::PathBuf>,

    /// PEM certificate chain of the MCP listener; with --tls-key it serves HTTPS only. The files are read
    /// again when they change: a renewed certificate is served to new connections without a restart.
    #[arg(long, env = "MCPGW_TLS_CERT", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "MCPGW_TLS_KEY", global = true)]
    pub tls_key: Option<std::path::PathBuf>,

    /// PEM file of the certificate authorities trusted for https:// and wss:// upstreams, instead of the
    /// system's (a private CA).
    #[arg(long, env = "MCPGW_UPSTREAM_CA", global = true)]
    pub upstream_ca: Option<std::path::PathBuf>,

    /// Credential presented to the control plane on the routing stream (the control plane's
    /// `--proxy-token`). Without it, the control plane accepts only proxies on its own machine.
    #[arg(long, env = "MCPGW_PROXY_TOKEN", hide_env_values = true, global = true)]
    pub proxy_token: Option<String>,

    /// Let callers without credentials through as an anonymous principal allowed everything. For local
    /// development only: anyone who reaches the MCP port can then use every registered server.
    #[arg(long, env = "MCPGW_ANONYMOUS", global = true)]
    pub anonymous: bool,

    /// Log format: `text` or `json` (filter with RUST_LOG, default `info`).
    #[arg(long, env = "MCPGW_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    /// A YAML file of settings: keys are the long flag names, values what the flag takes (lists for the
    /// comma-separated ones). Flags beat environment variables, which beat the file.
    #[arg(long, env = mcpgw_proto::config_file::ENV, global = true)]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub otlp: mcpgw_proto::otlp::Args,
}

/// Validated configuration: only this reaches the running proxy.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_addr: SocketAddr,
    pub control_plane: String,
    pub proxy_id: String,
    pub max_request_body: usize,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_body_timeout: Duration,
    pub request_head_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_streams: usize,
    pub max_streams_per_principal: usize,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub json_logs: bool,
    /// `None`: generate a development key at start.
    pub session_key: Option<[u8; session::KEY_LEN]>,
    pub session_previous_keys: Vec<[u8; session::KEY_LEN]>,
    pub session_ttl: Duration,
    pub bridge_idle_timeout: Duration,
    pub stdio_programs: Vec<String>,
    pub dns_refresh: Duration,
    pub ssrf: std::sync::Arc<mcpgw_proto::ssrf::SsrfPolicy>,
    pub table_cache: Option<std::path::PathBuf>,
    pub audit: crate::audit::AuditSettings,
    /// Base URL clients use (no trailing slash in its path).
    pub public_url: url::Url,
    pub front: crate::front::FrontDoor,
    pub anonymous: bool,
    /// Trust root of an `https://` control plane (PEM, read at start).
    pub control_plane_ca: Option<Vec<u8>>,
    /// `authorization` metadata value for the routing stream (`Bearer <--proxy-token>`).
    pub proxy_token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Span export; `None` without `--otlp-endpoint`.
    pub otlp: Option<mcpgw_proto::otlp::Settings>,
    /// The MCP listener's certificate (`--tls-cert`/`--tls-key`); `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<mcpgw_proto::tls::ReloadingCert>>,
    /// CA file trusted for TLS upstreams instead of the system's (checked to hold certificates).
    pub upstream_ca: Option<std::path::PathBuf>,
}

/// A setting that cannot be used, with the flag that carries it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

fn err(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { flag, reason: reason.into() }
}

fn socket_addr(flag: &'static str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| err(flag, format!("{raw:?} is not an IP:port address")))
}

impl Settings {
    /// Checks every setting; pure, so `validate` and `serve` agree.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let listen = socket_addr("listen", &self.listen)?;
        let admin_addr = socket_addr("admin-addr", &self.admin_addr)?;
        if listen == admin_addr {
            return Err(err("admin-addr", "must differ from --listen"));
        }
        let cp = url::Url::parse(&self.control_plane)
            .map_err(|e| err("control-plane", format!("{:?} is not a URL: {e}", self.control_plane)))?;
        if !matches!(cp.scheme(), "http" | "https") || cp.host_str().is_none() {
            return Err(err("control-plane", "must be an http:// or https:// URL with a host"));
        }
        let ssrf = mcpgw_proto::ssrf::SsrfPolicy::new(&self.ssrf_deny, &self.ssrf_allow)
            .map_err(|e| err("ssrf-deny", format!("--ssrf-deny/--ssrf-allow: {e}")))?;
        if self.max_request_body == 0 {
            return Err(err("max-request-body", "must be at least 1 byte"));
        }
        for (flag, d) in [
            ("connect-timeout", self.connect_timeout),
            ("upstream-timeout", self.upstream_timeout),
            ("idle-timeout", self.idle_timeout),
            ("request-body-timeout", self.request_body_timeout),
            ("request-head-timeout", self.request_head_timeout),
            ("bridge-idle-timeout", self.bridge_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(err(flag, "must be greater than zero"));
            }
        }
        if self.max_streams == 0 || self.max_streams_per_principal == 0 {
            return Err(err(
                "max-streams",
                "--max-streams and --max-streams-per-principal must be at least 1",
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            return Err(err(
                "max-connections",
                "--max-connections and --max-connections-per-client must be at least 1",
            ));
        }
        if !(1..=256).contains(&self.threads) {
            return Err(err("threads", "must be between 1 and 256"));
        }
        let otlp = self.otlp.validate().map_err(|(flag, reason)| err(flag, reason))?;
        let json_logs = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(err("log-format", format!("{other:?} is not one of text, json"))),
        };
        let key = |flag: &'static str, raw: &str| {
            session::parse_key(raw).map_err(|e| err(flag, format!("the key {e}")))
        };
        let session_key = match &self.session_key {
            Some(raw) => Some(key("session-key", raw)?),
            None => None,
        };
        let session_previous_keys = self
            .session_previous_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|raw| key("session-previous-keys", raw))
            .collect::<Result<Vec<_>, _>>()?;
        if session_key.is_none() && !session_previous_keys.is_empty() {
            return Err(err("session-previous-keys", "needs --session-key (the current key)"));
        }
        if self.session_ttl.is_zero() {
            return Err(err("session-ttl", "must be greater than zero"));
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                Some(mcpgw_proto::tls::ReloadingCert::load(cert, key).map_err(|e| err("tls-cert", e))?)
            }
            (None, None) => None,
            _ => return Err(err("tls-cert", "--tls-cert and --tls-key go together: give both or neither")),
        };
        if let Some(path) = &self.upstream_ca {
            mcpgw_proto::tls::root_store(path).map_err(|e| err("upstream-ca", e))?;
        }
        let public_url = match &self.public_url {
            Some(raw) => url::Url::parse(raw.trim_end_matches('/'))
                .map_err(|e| err("public-url", format!("{raw:?} is not a URL: {e}")))?,
            None => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                url::Url::parse(&format!("{scheme}://{listen}")).map_err(|e| err("listen", e.to_string()))?
            }
        };
        if !matches!(public_url.scheme(), "http" | "https")
            || public_url.host_str().is_none()
            || public_url.query().is_some()
            || public_url.fragment().is_some()
        {
            return Err(err("public-url", "must be an http:// or https:// URL with a host and no query"));
        }
        let list =
            |values: &[String]| values.iter().filter(|v| !v.trim().is_empty()).cloned().collect::<Vec<_>>();
        let front = crate::front::FrontDoor::new(
            &public_url,
            &list(&self.allowed_hosts),
            &list(&self.allowed_origins),
        );
        let control_plane_ca = match (&self.control_plane_ca, cp.scheme()) {
            (Some(path), "https") => Some(
                std::fs::read(path)
                    .map_err(|e| err("control-plane-ca", format!("cannot read {}: {e}", path.display())))?,
            ),
            (Some(_), _) => {
                return Err(err("control-plane-ca", "is only used with an https:// --control-plane"));
            }
            (None, "https") => {
                return Err(err(
                    "control-plane-ca",
                    "an https:// --control-plane needs the CA that signed it",
                ));
            }
            (None, _) => None,
        };
        let proxy_token = match self.proxy_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) if token.len() < 16 => {
                return Err(err("proxy-token", "must be at least 16 characters (openssl rand -base64 32)"));
            }
            Some(token) => {
                let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                    format!("Bearer {token}")
                        .parse()
                        .map_err(|_| err("proxy-token", "must be visible ASCII without spaces"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let proxy_id = match &self.proxy_id {
            Some(id) if id.trim().is_empty() => return Err(err("proxy-id", "must not be empty")),
            Some(id) => id.clone(),
            None => default_proxy_id(),
        };
        if self.audit_queue == 0 {
            return Err(err("audit-queue", "must be at least 1"));
        }
        let audit = crate::audit::AuditSettings {
            enabled: self.audit == "on",
            queue: self.audit_queue,
            spill_dir: self.audit_spill_dir.clone().filter(|p| !p.as_os_str().is_empty()),
            spill_max: self.audit_spill_max,
            overflow: self.audit_overflow,
        };
        Ok(Config {
            listen,
            admin_addr,
            control_plane: self.control_plane.trim_end_matches('/').to_owned(),
            proxy_id,
            max_request_body: self.max_request_body,
            connect_timeout: self.connect_timeout,
            upstream_timeout: self.upstream_timeout,
            idle_timeout: self.idle_timeout,
            request_body_timeout: self.request_body_timeout,
            request_head_timeout: self.request_head_timeout,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_streams: self.max_streams,
            max_streams_per_principal: self.max_streams_per_principal,
            threads: self.threads,
            grace_period: self.grace_period,
            shutdown_timeout: self.shutdown_timeout,
            json_logs,
            session_key,
            session_previous_keys,
            session_ttl: self.session_ttl,
            bridge_idle_timeout: self.bridge_idle_timeout,
            stdio_programs: list(&self.stdio_programs),
            dns_refresh: self.dns_refresh,
            ssrf: std::sync::Arc::new(ssrf),
            table_cache: self.table_cache.clone().filter(|p| !p.as_os_str().is_empty()),
            audit,
            public_url,
            front,
            anonymous: self.anonymous,
            proxy_token,
            control_plane_ca,
            otlp,
            tls,
            upstream_ca: self.upstream_ca.clone(),
        })
    }
}

/// A size in bytes: a number with an optional `KiB`, `MiB` or `GiB` unit.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size such as 512MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (B, KiB, MiB, GiB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

fn default_proxy_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "proxy".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    fn parse(args: &[&str]) -> Settings {
        let mut argv = vec!["mcpgw-proxy"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse").settings
    }

    #[test]
    fn a_config_file_takes_the_flag_names() {
        use clap::CommandFactory;
        let path = std::env::temp_dir().join(format!("mcpgw-proxy-config-{}.yaml", std::process::id()));
        let text =
            "listen: 0.0.0.0:18080\nthreads: 3\nallowed-hosts: [gw.example, gw2.example]\nanonymous: true\n";
        std::fs::write(&path, text).expect("write the file");
        let argv: Vec<std::ffi::OsString> =
            ["mcpgw-proxy", "--config", path.to_str().expect("UTF-8"), "--threads", "5", "validate"]
                .map(Into::into)
                .to_vec();
        let expanded = mcpgw_proto::config_file::expand(&Cli::command(), argv, |_| None);
        std::fs::remove_file(&path).expect("remove the file");
        let cli = Cli::try_parse_from(expanded.expect("the file expands")).expect("flags parse");
        assert_eq!(cli.command, Some(Command::Validate));
        let config = cli.settings.validate().expect("valid");
        assert_eq!(config.listen.to_string(), "0.0.0.0:18080");
        assert_eq!(config.threads, 5, "the command line beats the file");
        assert!(config.anonymous);
        assert_eq!(cli.settings.allowed_hosts, ["gw.example", "gw2.example"]);
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&[]).validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.admin_addr, "127.0.0.1:9180".parse().unwrap());
        assert_eq!(config.control_plane, "http://127.0.0.1:50051");
        assert_eq!(config.upstream_timeout, Duration::from_secs(120));
        assert!(!config.proxy_id.is_empty());
    }

    #[test]
    fn refuses_bad_values() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "localhost"], "listen"),
            (&["--admin-addr", "127.0.0.1:8080"], "admin-addr"),
            (&["--control-plane", "127.0.0.1:50051"], "control-plane"),
            (&["--control-plane", "ftp://h"], "control-plane"),
            (&["--max-request-body", "0"], "max-request-body"),
            (&["--upstream-timeout", "0s"], "upstream-timeout"),
            (&["--threads", "0"], "threads"),
            (&["--log-format", "xml"], "log-format"),
            (&["--proxy-id", " "], "proxy-id"),
            (&["--session-key", "c2hvcnQ="], "session-key"),
            (
                &["--session-key", "0000000000000000000000000000000000000000000000000000000000000000"],
                "session-key",
            ),
            (
                &["--session-previous-keys", "7T2ULrhWSqF3WzSU2X7DZ7iZ3XHq8KFW3FSbrCzbYyE="],
                "session-previous-keys",
            ),
            (&["--session-ttl", "0s"], "session-ttl"),
            (&["--public-url", "gateway.example"], "public-url"),
            (&["--proxy-token", "short"], "proxy-token"),
            (&["--control-plane", "https://cp.example:50051"], "control-plane-ca"),
            (&["--control-plane-ca", "/etc/hostname"], "control-plane-ca"),
            (
                &["--control-plane", "https://cp.example:50051", "--control-plane-ca", "/nonexistent.pem"],
                "control-plane-ca",
            ),
            (&["--public-url", "https://gw.example/?x=1"], "public-url"),
        ];
        for (args, flag) in cases {
            let e = parse(args).validate().unwrap_err();
            assert_eq!(e.flag, *flag, "{args:?}: {e}");
        }
    }

    #[test]
    fn session_keys() {
        let current = "7T2ULrhWSqF3WzSU2X7DZ7iZ3XHq8KFW3FSbrCzbYyE=";
        let old = "b6a1f3a7c2d94e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071";
        let config = parse(&["--session-key", current, "--session-previous-keys", &format!("{old},")])
            .validate()
            .unwrap();
        assert!(config.session_key.is_some());
        assert_eq!(config.session_previous_keys.len(), 1);
        assert!(parse(&[]).validate().unwrap().session_key.is_none(), "development mode");
    }

    #[test]
    fn human_durations() {
        let s = parse(&["--connect-timeout", "250ms", "--upstream-timeout", "2m"]);
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.upstream_timeout, Duration::from_secs(120));
        assert!(Cli::try_parse_from(["mcpgw-proxy", "--idle-timeout", "soon"]).is_err());
    }
}
