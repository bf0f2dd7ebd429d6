//! Unit tests of `validate()`: defaults, every refusal, and secrets kept out of the summary.

use clap::Parser;

use std::time::Duration;

use super::*;

fn raw(args: &[&str]) -> RawSettings {
    let mut argv = vec!["mcpgw-control-plane"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("test arguments parse").settings
}

#[test]
fn defaults_are_valid() {
    let cfg = validate(&raw(&[])).expect("defaults validate");
    assert_eq!(cfg.http_addr.to_string(), "127.0.0.1:8000");
    assert_eq!(cfg.grpc_addr.to_string(), "127.0.0.1:50051");
    assert_eq!(cfg.database.name(), "mcpgw");
    assert_eq!(cfg.database.maintenance(), "postgres://postgres@localhost/postgres");
    assert_eq!(cfg.db_pool_size, 10);
    assert_eq!(cfg.api_body_limit, 1_048_576);
    assert_eq!(cfg.log_format, LogFormat::Text);
    assert!(cfg.redis_url.is_none());
    assert!(cfg.admin_token.is_none());
}

#[test]
fn subcommands_and_global_flags() {
    let cli = Cli::try_parse_from(["x", "migrate", "--db-pool-size", "3"]).expect("parses");
    assert_eq!(cli.command, Some(Command::Migrate));
    assert_eq!(cli.settings.db_pool_size, 3);
    let cli = Cli::try_parse_from(["x"]).expect("parses");
    assert_eq!(cli.command, None);
}

#[test]
fn port_zero_is_allowed_for_both_listeners() {
    let cfg = validate(&raw(&["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])).expect("valid");
    assert_eq!(cfg.http_addr.port(), 0);
}

#[test]
fn refuses_bad_addresses() {
    assert_eq!(
        validate(&raw(&["--http-addr", "localhost"])).unwrap_err(),
        ConfigError::HttpAddr("localhost".into())
    );
    assert!(matches!(validate(&raw(&["--grpc-addr", "1.2.3.4"])), Err(ConfigError::GrpcAddr(_))));
    assert!(matches!(
        validate(&raw(&["--http-addr", "127.0.0.1:9000", "--grpc-addr", "127.0.0.1:9000"])),
        Err(ConfigError::SameAddr(_))
    ));
}

#[test]
fn refuses_bad_database_urls() {
    for bad in [
        "mysql://localhost/x",
        "postgres://localhost",
        "postgres://localhost/",
        "not a url",
        "postgres://h/a/b",
    ] {
        assert!(
            matches!(validate(&raw(&["--database-url", bad])), Err(ConfigError::DatabaseUrl(_))),
            "{bad}"
        );
    }
    let long = format!("postgres://h/{}", "d".repeat(64));
    assert!(matches!(validate(&raw(&["--database-url", &long])), Err(ConfigError::DatabaseUrl(_))));
}

#[test]
fn database_name_is_decoded_and_password_redacted() {
    let cfg = validate(&raw(&["--database-url", "postgresql://u:secret@db:5433/my%2Ddb"])).expect("valid");
    assert_eq!(cfg.database.name(), "my-db");
    assert!(!cfg.database.redacted().contains("secret"));
    assert!(!format!("{:?}", cfg.database).contains("secret"));
    assert_eq!(cfg.database.maintenance(), "postgresql://u:secret@db:5433/postgres");
}

#[test]
fn redis_url_rules() {
    let cfg = validate(&raw(&["--redis-url", "redis://127.0.0.1:6379"])).expect("valid");
    assert_eq!(cfg.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert!(validate(&raw(&["--redis-url", ""])).expect("empty means unset").redis_url.is_none());
    assert!(matches!(validate(&raw(&["--redis-url", "http://x"])), Err(ConfigError::RedisUrl(_))));
    assert!(matches!(validate(&raw(&["--redis-url", "nope"])), Err(ConfigError::RedisUrl(_))));
}

#[test]
fn admin_token_rules() {
    assert!(
        validate(&raw(&["--admin-token", "s3cret-token-of-24-chars"])).expect("valid").admin_token.is_some()
    );
    assert_eq!(
        validate(&raw(&["--admin-token", "x"])).unwrap_err(),
        ConfigError::AdminToken,
        "too short to be a secret"
    );
    assert_eq!(validate(&raw(&["--admin-token", "s3cret-token"])).unwrap_err(), ConfigError::AdminToken);
    assert!(validate(&raw(&["--admin-token", ""])).expect("valid").admin_token.is_none());
    assert_eq!(validate(&raw(&["--admin-token", "a b"])).unwrap_err(), ConfigError::AdminToken);
}

#[test]
fn proxy_token_and_grpc_tls_rules() {
    let cfg = validate(&raw(&[])).expect("defaults");
    assert!(cfg.proxy_token.is_none() && cfg.grpc_tls.is_none());
    let cfg = validate(&raw(&["--proxy-token", "p-secret-0123456789"])).expect("valid");
    assert!(cfg.proxy_token.is_some_and(|t| t.matches("p-secret-0123456789")));
    assert!(validate(&raw(&["--proxy-token", ""])).expect("empty means unset").proxy_token.is_none());
    for refused in ["a\tb-0123456789abcdef", "short-token", "0123456789abcdef é"] {
        assert_eq!(
            validate(&raw(&["--proxy-token", refused])).unwrap_err(),
            ConfigError::ProxyToken,
            "{refused}"
        );
    }
    let cfg = validate(&raw(&["--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem"])).expect("valid");
    assert_eq!(cfg.grpc_tls, Some(GrpcTls { cert: "c.pem".into(), key: "k.pem".into() }));
    assert_eq!(validate(&raw(&["--grpc-tls-cert", "c.pem"])).unwrap_err(), ConfigError::GrpcTls);
    assert_eq!(validate(&raw(&["--grpc-tls-key", "k.pem"])).unwrap_err(), ConfigError::GrpcTls);
}

#[test]
fn secrets_are_hidden_in_help() {
    use clap::CommandFactory;
    let help = Cli::command().render_long_help().to_string();
    // clap shows `[env: NAME]` without the value for hidden ones, even when the variable is set.
    assert!(help.contains("MCPGW_PROXY_TOKEN") && help.contains("MCPGW_ADMIN_TOKEN"), "{help}");
    let cmd = Cli::command();
    for name in ["admin_token", "proxy_token", "secrets_key"] {
        let arg = cmd.get_arguments().find(|a| a.get_id() == name).expect("the flag exists");
        assert!(arg.is_hide_env_values_set(), "{name}");
    }
}

#[test]
fn refuses_out_of_range_numbers() {
    assert_eq!(validate(&raw(&["--db-pool-size", "0"])).unwrap_err(), ConfigError::DbPoolSize(0));
    assert_eq!(validate(&raw(&["--db-pool-size", "1001"])).unwrap_err(), ConfigError::DbPoolSize(1001));
    assert_eq!(validate(&raw(&["--api-body-limit", "0"])).unwrap_err(), ConfigError::ApiBodyLimit(0));
    assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
}

#[test]
fn summary_hides_secrets() {
    let cfg = validate(&raw(&[
        "--admin-token",
        "topsecret-admin-token",
        "--proxy-token",
        "proxysecret-0123456789",
        "--database-url",
        "postgres://u:pw1@h/db",
        "--redis-url",
        "redis://:pw2@h:6379",
        "--secrets-key",
        "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
    ]))
    .expect("valid");
    let summary = cfg.summary();
    for secret in ["topsecret", "proxysecret", "pw1", "pw2", "c2VjcmV0"] {
        assert!(!summary.contains(secret), "{summary}");
    }
    assert!(summary.contains("admin_token=set") && summary.contains("proxy_token=set"), "{summary}");
    assert!(summary.contains("secrets_key=set"), "{summary}");
    assert!(!format!("{cfg:?}").contains("c2VjcmV0"), "Debug hides the key too");
}

#[test]
fn secrets_key_and_jwks_refresh() {
    let cfg = validate(&raw(&[])).expect("defaults");
    assert!(cfg.secrets_key.is_none());
    assert_eq!(cfg.jwks_refresh, Duration::from_secs(300));
    assert!(cfg.summary().contains("secrets_key=NOT SET"));
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let cfg = validate(&raw(&["--secrets-key", hex, "--jwks-refresh", "1s"])).expect("valid");
    assert!(cfg.secrets_key.is_some());
    assert_eq!(cfg.jwks_refresh, Duration::from_secs(1));
    assert!(validate(&raw(&["--secrets-key", ""])).expect("empty means unset").secrets_key.is_none());
    for bad in ["short", "00112233", &format!("{hex}00")] {
        assert!(matches!(validate(&raw(&["--secrets-key", bad])), Err(ConfigError::SecretsKey(_))), "{bad}");
    }
    let message = validate(&raw(&["--secrets-key", "x"])).unwrap_err().to_string();
    assert!(message.contains("--secrets-key") && message.contains("openssl rand"), "{message}");
    for bad in ["10ms", "2d", "often"] {
        assert!(validate(&raw(&["--jwks-refresh", bad])).is_err(), "{bad}");
    }
    assert_eq!(ENV_SECRETS_KEY, "MCPGW_SECRETS_KEY");
    assert_eq!(ENV_JWKS_REFRESH, "MCPGW_JWKS_REFRESH");
}

#[test]
fn health_discovery_and_ssrf_flags() {
    let cfg = validate(&raw(&[])).expect("defaults");
    assert_eq!(cfg.health, HealthDefaults::default());
    assert_eq!(cfg.discovery_interval, Some(Duration::from_secs(300)));
    assert_eq!(cfg.api_url, "http://127.0.0.1:8000");
    let cfg = validate(&raw(&[
        "--health-interval",
        "200ms",
        "--health-timeout",
        "1s",
        "--health-unhealthy-threshold",
        "2",
        "--health-healthy-threshold",
        "1",
        "--health-concurrency",
        "4",
        "--discovery-interval",
        "0s",
        "--ssrf-deny",
        "loopback,10.0.0.0/8",
        "--ssrf-allow",
        "127.0.0.2",
        "--replica-id",
        "cp-a",
        "--api-url",
        "http://cp:8000/",
    ]))
    .expect("valid");
    assert_eq!(cfg.health.interval, Duration::from_millis(200));
    assert_eq!(
        (cfg.health.unhealthy_threshold, cfg.health.healthy_threshold, cfg.health.concurrency),
        (2, 1, 4)
    );
    assert_eq!(cfg.discovery_interval, None, "0s turns periodic discovery off");
    assert!(cfg.ssrf.check_ip("127.0.0.1".parse().expect("ip")).is_err());
    assert!(cfg.ssrf.check_ip("127.0.0.2".parse().expect("ip")).is_ok());
    assert_eq!(cfg.replica_id, "cp-a");
    assert_eq!(cfg.api_url, "http://cp:8000");
    assert!(cfg.summary().contains("health_interval=200ms"));
    for bad in [
        ["--health-interval", "10ms"],
        ["--health-interval", "soon"],
        ["--health-timeout", "2h"],
        ["--health-unhealthy-threshold", "0"],
        ["--health-healthy-threshold", "101"],
        ["--health-concurrency", "0"],
        ["--ssrf-deny", "nowhere"],
        ["--api-url", "ftp://x"],
    ] {
        assert!(validate(&raw(&bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn env_vars_configure_health() {
    let cli = Cli::try_parse_from(["x"]).expect("parses");
    assert_eq!(cli.settings.health_interval, "10s", "the documented default");
    assert_eq!(ENV_HEALTH_INTERVAL, "MCPGW_HEALTH_INTERVAL");
    assert_eq!(ENV_HEALTH_UNHEALTHY_THRESHOLD, "MCPGW_HEALTH_UNHEALTHY_THRESHOLD");
}

#[test]
fn audit_retention() {
    let cfg = validate(&raw(&[])).expect("defaults");
    assert_eq!(cfg.audit_retention, Duration::from_secs(30 * 86_400));
    assert!(cfg.summary().contains("audit_retention=30days"), "{}", cfg.summary());
    let cfg = validate(&raw(&["--audit-retention", "90d"])).expect("valid");
    assert_eq!(cfg.audit_retention, Duration::from_secs(90 * 86_400));
    for bad in ["1h", "3651d", "forever"] {
        let error = validate(&raw(&["--audit-retention", bad])).expect_err(bad);
        assert!(matches!(&error, ConfigError::Duration { flag: "audit-retention", .. }), "{bad}: {error}");
    }
}

#[test]
fn stdio_programs() {
    let cfg = validate(&raw(&[])).expect("defaults");
    assert!(cfg.stdio_programs.is_empty(), "none by default: stdio servers are refused");
    assert!(cfg.summary().contains("stdio_programs=(none"), "{}", cfg.summary());
    assert_eq!(ENV_STDIO_PROGRAMS, "MCPGW_STDIO_PROGRAMS");
    let cfg = validate(&raw(&["--stdio-programs", "npx, /usr/local/bin/srv,"])).expect("valid");
    assert!(cfg.stdio_programs.allows("npx") && cfg.stdio_programs.allows("/usr/local/bin/srv"));
    assert!(!cfg.stdio_programs.allows("uvx"));
    assert!(cfg.summary().contains("stdio_programs=npx,/usr/local/bin/srv"), "{}", cfg.summary());
    for bad in ["bin/srv", "./srv", "a\tb"] {
        let error = validate(&raw(&["--stdio-programs", bad])).expect_err(bad);
        assert_eq!(error, ConfigError::StdioProgram(bad.to_owned()), "{bad}");
        assert!(error.to_string().contains("--stdio-programs"));
    }
}
