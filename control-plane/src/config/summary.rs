//! The summary `validate` prints: every setting, secrets redacted.

use url::Url;

use super::Config;

impl Config {
    /// A human-readable summary without secrets, printed by `validate`.
    pub fn summary(&self) -> String {
        let redis = self.redis_url.as_deref().map_or("(not configured)".to_owned(), redact_url);
        let token = if self.admin_token.is_some() { "set" } else { "NOT SET (admin API keys only)" };
        let proxy_token = if self.proxy_token.is_some() { "set" } else { "NOT SET (loopback proxies only)" };
        let tls = match &self.grpc_tls {
            Some(tls) => format!("{} + {}", tls.cert.display(), tls.key.display()),
            None => "off".to_owned(),
        };
        let secrets_key =
            if self.secrets_key.is_some() { "set" } else { "NOT SET (no upstream credentials)" };
        let h = &self.health;
        let stdio_programs = if self.stdio_programs.is_empty() {
            "(none: stdio servers refused)".to_owned()
        } else {
            self.stdio_programs.iter().collect::<Vec<_>>().join(",")
        };
        format!(
            "http_addr={}\ngrpc_addr={}\ndatabase_url={}\nredis_url={redis}\nadmin_token={token}\n\
             proxy_token={proxy_token}\ngrpc_tls={tls}\n\
             db_pool_size={}\napi_body_limit={}\nlog_format={:?}\nhealth_interval={}\nhealth_timeout={}\n\
             health_healthy_threshold={}\nhealth_unhealthy_threshold={}\nhealth_concurrency={}\n\
             discovery_interval={}\nreplica_id={}\nsecrets_key={secrets_key}\njwks_refresh={}\naudit_retention={}\n\
             stdio_programs={stdio_programs}",
            self.http_addr,
            self.grpc_addr,
            self.database.redacted(),
            self.db_pool_size,
            self.api_body_limit,
            self.log_format,
            humantime::format_duration(h.interval),
            humantime::format_duration(h.timeout),
            h.healthy_threshold,
            h.unhealthy_threshold,
            h.concurrency,
            self.discovery_interval.map_or("off".to_owned(), |d| humantime::format_duration(d).to_string()),
            self.replica_id,
            humantime::format_duration(self.jwks_refresh),
            humantime::format_duration(self.audit_retention),
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
