//! The SSRF guard of both planes. The control plane connects to every registered endpoint (discovery,
//! health checks) and the proxy forwards client traffic to them, so endpoints in cloud-metadata,
//! link-local and other never-legitimate ranges are refused — at registration (clear 400), and again by
//! each plane when it resolves a name (DNS answers are filtered, so a name that later resolves into a
//! refused range is not reached either). Loopback and private ranges stay allowed by default: local MCP
//! servers are the common development case and company MCP servers live on private networks; refuse them
//! with `--ssrf-deny loopback,private` where a plane must not reach them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long registration waits for DNS before accepting a name it cannot resolve yet.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ranges refused unless `--ssrf-allow` names them, with why.
const BUILTIN_DENY: &[(&str, &str)] = &[
    ("169.254.0.0/16", "link-local, where cloud metadata services live (169.254.169.254)"),
    ("fe80::/10", "IPv6 link-local"),
    ("fd00:ec2::254/128", "the AWS IPv6 metadata service"),
    ("100.100.100.200/32", "the Alibaba Cloud metadata service"),
    ("168.63.129.16/32", "the Azure platform endpoint"),
    ("0.0.0.0/8", "'this network', not a real destination"),
    ("::/128", "the unspecified address"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "IPv6 multicast"),
    ("240.0.0.0/4", "reserved (and broadcast)"),
];

/// Host names of metadata services, refused whatever they resolve to.
const METADATA_HOSTS: &[&str] =
    &["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"];

/// Named groups accepted by `--ssrf-deny` / `--ssrf-allow` next to CIDRs.
const PRESETS: &[(&str, &[&str])] = &[
    ("loopback", &["127.0.0.0/8", "::1/128"]),
    ("private", &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"]),
    ("link_local", &["169.254.0.0/16", "fe80::/10"]),
];

/// An address range such as `10.0.0.0/8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip/prefix` or a bare address (a /32 or /128).
    pub fn parse(raw: &str) -> Option<Self> {
        let (ip, prefix) = match raw.trim().split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (raw.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr: ip, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A bad `--ssrf-deny` / `--ssrf-allow` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a CIDR (10.0.0.0/8, ::1/128) nor one of loopback, private, link_local")]
pub struct SsrfError(pub String);

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{host} is a cloud metadata host name, which is refused")]
    MetadataHost { host: String },
    #[error("{ip} is in {range} ({why}), which is refused; allow it with --ssrf-allow {range}")]
    Builtin { ip: IpAddr, range: String, why: &'static str },
    #[error("{ip} is in {range}, refused by --ssrf-deny")]
    Configured { ip: IpAddr, range: String },
}

/// Which destinations the control plane may connect to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    deny: Vec<Cidr>,
    allow: Vec<Cidr>,
}

fn expand(entries: &[String]) -> Result<Vec<Cidr>, SsrfError> {
    let mut out = Vec::new();
    for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        if let Some((_, cidrs)) = PRESETS.iter().find(|(name, _)| *name == entry) {
            out.extend(cidrs.iter().filter_map(|c| Cidr::parse(c)));
        } else {
            out.push(Cidr::parse(entry).ok_or_else(|| SsrfError(entry.to_owned()))?);
        }
    }
    Ok(out)
}

impl SsrfPolicy {
    /// The built-in rules plus `deny` (refused too) and `allow` (exceptions, which win over both).
    pub fn new(deny: &[String], allow: &[String]) -> Result<Self, SsrfError> {
        Ok(Self { deny: expand(deny)?, allow: expand(allow)? })
    }

    /// Checks one address, and the IPv4 address an IPv6 one carries (IPv4-mapped `::ffff:a.b.c.d`,
    /// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::`): each reaches that
    /// IPv4 host on a network that routes it, so it is refused or allowed as that host is.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let candidates: Vec<IpAddr> = match ip {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(v4) => vec![ip, IpAddr::V4(v4)],
                None => vec![ip],
            },
            IpAddr::V4(_) => vec![ip],
        };
        if candidates.iter().any(|c| self.allow.iter().any(|a| a.contains(*c))) {
            return Ok(());
        }
        for c in &candidates {
            if let Some(range) = self.deny.iter().find(|d| d.contains(*c)) {
                return Err(Refusal::Configured { ip, range: range.to_string() });
            }
            for (range, why) in BUILTIN_DENY {
                if Cidr::parse(range).is_some_and(|r| r.contains(*c)) {
                    return Err(Refusal::Builtin { ip, range: (*range).to_owned(), why });
                }
            }
        }
        Ok(())
    }

    /// Checks a URL host without resolving it: IP literals and metadata names.
    pub fn check_host(&self, host: &url::Host<&str>) -> Result<(), Refusal> {
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_HOSTS.contains(&name.as_str()) {
                    return Err(Refusal::MetadataHost { host: name });
                }
                Ok(())
            }
        }
    }

    /// Checks an endpoint URL, resolving a host name (briefly: a name that does not resolve yet is
    /// accepted; connections are checked again when they are made).
    pub async fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        let Some(host) = url.host() else { return Ok(()) };
        self.check_host(&host)?;
        if let url::Host::Domain(name) = host {
            let port = url.port_or_known_default().unwrap_or(80);
            let lookup = tokio::net::lookup_host((name.to_owned(), port));
            if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                for addr in addrs {
                    self.check_ip(addr.ip())?;
                }
            }
        }
        Ok(())
    }

    /// The addresses of `host` this policy allows: an IP literal as itself when allowed; a name resolved,
    /// keeping the allowed addresses. A refused literal or metadata host name, or a name whose every address
    /// is refused, is the refusal; a name that does not resolve is a lookup error.
    pub async fn resolve(&self, host: &url::Host<&str>, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        self.check_host(host).map_err(ResolveError::Refused)?;
        let name = match host {
            url::Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(IpAddr::V4(*ip), port)]),
            url::Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(IpAddr::V6(*ip), port)]),
            url::Host::Domain(name) => *name,
        };
        let found = tokio::net::lookup_host((name, port))
            .await
            .map_err(|e| ResolveError::Lookup(format!("cannot resolve {name}: {e}")))?;
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = found
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                    false
                }
            })
            .collect();
        match first_refusal {
            Some(refusal) if allowed.is_empty() => Err(ResolveError::Refused(refusal)),
            None if allowed.is_empty() => Err(ResolveError::Lookup(format!("{name} has no address"))),
            _ => Ok(allowed),
        }
    }
}

/// Why a name gave no address to connect to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Lookup(String),
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let o = v6.octets();
    let last = || std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let seg = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(last());
    }
    // 6to4 2002::/16: the IPv4 address is the next 32 bits.
    if seg[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks); :: and ::1 are not.
    if seg[..6] == [0; 6] && u32::from(last()) > 1 {
        return Some(last());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn builtin_rules() {
        let p = SsrfPolicy::default();
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "100.100.100.200",
            "fd00:ec2::254",
        ] {
            assert!(p.check_ip(ip(refused)).is_err(), "{refused}");
        }
        for allowed in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "8.8.8.8",
            "2001:db8::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(p.check_ip(ip(allowed)), Ok(()), "{allowed}");
        }
        assert!(p.check_host(&url::Host::Domain("Metadata.Google.Internal.")).is_err());
        assert_eq!(p.check_host(&url::Host::Domain("mcp.example.com")), Ok(()));
    }

    #[test]
    fn configured_rules() {
        let p = SsrfPolicy::new(&["loopback".into(), "10.0.0.0/8".into()], &["169.254.10.0/24".into()])
            .expect("valid");
        assert!(matches!(p.check_ip(ip("127.0.0.1")), Err(Refusal::Configured { .. })));
        assert!(p.check_ip(ip("10.9.9.9")).is_err());
        assert_eq!(p.check_ip(ip("169.254.10.5")), Ok(()), "allow wins");
        assert!(p.check_ip(ip("169.254.169.254")).is_err());
        assert!(SsrfPolicy::new(&["nonsense".into()], &[]).is_err());
        assert!(SsrfPolicy::new(&["10.0.0.0/33".into()], &[]).is_err());
        let message = SsrfPolicy::default().check_ip(ip("169.254.169.254")).unwrap_err().to_string();
        assert!(message.contains("metadata") && message.contains("--ssrf-allow"), "{message}");
    }

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("172.16.0.0/12").expect("cidr");
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains(ip("1.2.3.4")));
        assert!(!Cidr::parse("::/0").expect("all v6").contains(ip("1.2.3.4")));
    }
}
