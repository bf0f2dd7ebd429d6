//! DNS-rebinding protection on the MCP listener: which `Host` and `Origin` a request may carry. A web page on
//! a name that resolves to the gateway's address must not reach it through a browser; the upstream's own
//! check cannot help, because the proxy rewrites `Host` and drops `Origin` before forwarding.

use http::HeaderValue;
use pingora::http::RequestHeader;

use crate::error::ProxyError;
use crate::headers::Noted;

/// Allowed `Host` and `Origin` values, validated from `--allowed-hosts`, `--allowed-origins` and
/// `--public-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoor {
    /// Lowercase host names (`gateway.example`), or `name:port` for one port only; `*` allows any. With
    /// each, whether it names a port (worked out once, not for every request).
    hosts: Vec<(String, bool)>,
    /// Lowercase serialized origins (`https://app.example`); `*` allows any.
    origins: Vec<String>,
}

/// Host names that are always the local machine.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl FrontDoor {
    /// `hosts` and `origins` as configured (empty: the defaults — loopback names and the public URL's host;
    /// the public URL's origin).
    pub fn new(public_url: &url::Url, hosts: &[String], origins: &[String]) -> Self {
        let public_host = public_url.host_str().unwrap_or_default().to_ascii_lowercase();
        let hosts = if hosts.is_empty() {
            let mut defaults: Vec<String> = LOOPBACK_HOSTS.iter().map(|h| (*h).to_owned()).collect();
            if !defaults.contains(&public_host) {
                defaults.push(public_host);
            }
            defaults
        } else {
            hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect()
        };
        let hosts = hosts
            .into_iter()
            .map(|h| {
                let port = has_port(&h);
                (h, port)
            })
            .collect();
        let origins = if origins.is_empty() {
            vec![public_url.origin().ascii_serialization()]
        } else {
            origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect()
        };
        Self { hosts, origins }
    }

    /// Refuses a request whose `Host` is not allowed (421) or whose `Origin`, when present, is not (403).
    /// Compares without allocating (the lists are lowercase, values match case-insensitively); only a
    /// refusal copies the value into its error.
    /// `host` is the request's `Host` field (the client's session keeps it as it reads the head).
    pub fn check(
        &self,
        req: &RequestHeader,
        host: Option<&HeaderValue>,
        noted: Noted,
    ) -> Result<(), ProxyError> {
        let host = host
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .unwrap_or_default()
            .trim_ascii();
        if !self.host_allowed(host) {
            return Err(ProxyError::MisdirectedHost { host: host.to_ascii_lowercase() });
        }
        if let Some(origin) = noted.get(&req.headers, &http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().trim_ascii();
            if !self.origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
                return Err(ProxyError::ForbiddenOrigin { origin: origin.to_ascii_lowercase() });
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        let name = host_name(host);
        self.hosts.iter().any(|(allowed, port)| {
            allowed == "*"
                || allowed.eq_ignore_ascii_case(host)
                || (!port && allowed.eq_ignore_ascii_case(name))
        })
    }
}

/// `name` of `name:port` (`[v6]` of `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|rest| rest.find(']')) {
        return &host[..end + 2];
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn has_port(host: &str) -> bool {
    host_name(host).len() != host.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, origin: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/mcp/a", None).unwrap();
        r.insert_header("host", host).unwrap();
        if let Some(o) = origin {
            r.insert_header("origin", o).unwrap();
        }
        r
    }

    fn status(door: &FrontDoor, host: &str, origin: Option<&str>) -> u16 {
        let req = req(host, origin);
        door.check(&req, req.headers.get(http::header::HOST), Noted::ANY)
            .map_or_else(|e| e.status(), |()| 200)
    }

    #[test]
    fn defaults_allow_loopback_and_the_public_url() {
        let public = url::Url::parse("http://127.0.0.1:8080").unwrap();
        let door = FrontDoor::new(&public, &[], &[]);
        assert_eq!(status(&door, "127.0.0.1:8080", None), 200);
        assert_eq!(status(&door, "localhost:9999", None), 200);
        assert_eq!(status(&door, "[::1]:8080", None), 200);
        assert_eq!(status(&door, "127.0.0.1:8080", Some("http://127.0.0.1:8080")), 200);
        assert_eq!(status(&door, "evil.example:8080", None), 421);
        assert_eq!(status(&door, "evil.example", Some("http://evil.example")), 421);
        assert_eq!(status(&door, "127.0.0.1:8080", Some("http://evil.example")), 403);
        assert_eq!(status(&door, "127.0.0.1:8080", Some("null")), 403);
    }

    #[test]
    fn configured_lists() {
        let public = url::Url::parse("https://mcp.example.com").unwrap();
        let door = FrontDoor::new(&public, &[], &[]);
        assert_eq!(status(&door, "mcp.example.com", Some("https://mcp.example.com")), 200);
        assert_eq!(status(&door, "MCP.example.com:443", None), 200);
        assert_eq!(status(&door, "mcp.example.com", Some("http://mcp.example.com")), 403);

        let door = FrontDoor::new(
            &public,
            &["gw.internal:8443".into()],
            &["https://app.example/".into(), "https://IDE.example".into()],
        );
        assert_eq!(status(&door, "gw.internal:8443", Some("https://ide.example")), 200);
        assert_eq!(status(&door, "gw.internal:8444", None), 421);
        assert_eq!(status(&door, "localhost", None), 421, "a configured list replaces the defaults");
        assert_eq!(status(&door, "gw.internal:8443", Some("https://app.example")), 200);

        let open = FrontDoor::new(&public, &["*".into()], &["*".into()]);
        assert_eq!(status(&open, "anything", Some("http://anywhere")), 200);
    }
}
