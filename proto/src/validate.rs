//! Validation rules shared by both planes: the control plane refuses bad registrations with them, and the
//! proxy refuses a routing table that breaks them.

use url::Url;

/// Longest server name (a DNS label).
pub const MAX_SERVER_NAME_LEN: usize = 63;

/// Why a server name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is {0} characters long; the limit is 63")]
    TooLong(usize),
    #[error("name may contain only lowercase letters, digits and '-' (found {0:?})")]
    InvalidChar(char),
    #[error("name must start and end with a lowercase letter or digit")]
    BadEdge,
    #[error("the name {0:?} is reserved: /mcp/{0} is a path of the gateway's own")]
    Reserved(&'static str),
}

/// Names no server may be registered under: `/mcp/gateway` is the gateway's own MCP server, `/mcp/sse`
/// and `/mcp/message` the HTTP+SSE transport of `/mcp`.
pub const RESERVED_SERVER_NAMES: &[&str] = &["gateway", "sse", "message"];

/// [`server_name`], and not one of [`RESERVED_SERVER_NAMES`]: what a new or renamed server may be called.
pub fn registrable_server_name(name: &str) -> Result<(), NameError> {
    server_name(name)?;
    match RESERVED_SERVER_NAMES.iter().find(|r| **r == name) {
        Some(reserved) => Err(NameError::Reserved(reserved)),
        None => Ok(()),
    }
}

/// Checks a server name against `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`: the name is a path segment of
/// `/mcp/{name}` and a DNS label, so it needs no escaping anywhere.
pub fn server_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SERVER_NAME_LEN {
        return Err(NameError::TooLong(name.chars().count()));
    }
    if let Some(c) = name.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Err(NameError::InvalidChar(c));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::BadEdge);
    }
    Ok(())
}

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint_url is not a valid absolute URL: {0}")]
    Parse(String),
    #[error("endpoint_url must use http or https (ws or wss for a websocket server), not {0:?}")]
    Scheme(String),
    #[error("endpoint_url must name a host")]
    NoHost,
    #[error("endpoint_url must not carry credentials")]
    Credentials,
    #[error("endpoint_url must not carry a fragment")]
    Fragment,
}

/// Parses an upstream MCP endpoint: an absolute `http`/`https` URL with a host, no credentials, no fragment.
pub fn endpoint_url(raw: &str) -> Result<Url, EndpointError> {
    endpoint_url_with(raw, &["http", "https"])
}

/// [`endpoint_url`] for a WebSocket server: `ws` or `wss`.
pub fn websocket_url(raw: &str) -> Result<Url, EndpointError> {
    endpoint_url_with(raw, &["ws", "wss"])
}

/// The display endpoint of a stdio instance: `stdio:<program>`.
pub const STDIO_SCHEME: &str = "stdio";

fn endpoint_url_with(raw: &str, schemes: &[&str]) -> Result<Url, EndpointError> {
    let url = Url::parse(raw).map_err(|e| EndpointError::Parse(e.to_string()))?;
    if !schemes.contains(&url.scheme()) {
        return Err(EndpointError::Scheme(url.scheme().to_owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EndpointError::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::Credentials);
    }
    if url.fragment().is_some() {
        return Err(EndpointError::Fragment);
    }
    Ok(url)
}

/// An endpoint URL fit for logs and operator views: every query value (where upstream API keys tend to
/// hide) is replaced by `redacted`; the names stay so the shape remains recognisable.
pub fn redacted(url: &Url) -> String {
    if url.query().is_none() {
        return url.to_string();
    }
    let names: Vec<String> = url.query_pairs().map(|(name, _)| name.into_owned()).collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(names.iter().map(|n| (n.as_str(), "redacted")));
    out.to_string()
}

/// [`redacted`] of a URL given as text (text that is not a URL is shown as `<invalid URL>`).
pub fn redacted_str(raw: &str) -> String {
    Url::parse(raw).map_or_else(|_| "<invalid URL>".to_owned(), |url| redacted(&url))
}

/// Header names an upstream credential may not set, because they frame or route the request. Both planes
/// refuse them: the control plane when a credential is registered, the proxy when a table carries one.
pub const RESERVED_CREDENTIAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

/// Prefix of every API key, so that a leaked key is recognisable (secret scanners, logs) and told apart
/// from a JWT without parsing it.
pub const API_KEY_PREFIX: &str = "mcpgw_";

/// SHA-256 digest of an API key as presented: what the control plane stores and streams, and what a proxy
/// looks a presented key up by.
pub fn api_key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// What a `consistent_hash` server hashes to pick an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The value of a request header (lower-cased name); requests without it hash the client address.
    Header(String),
    /// The client's IP address (the default).
    ClientIp,
}

/// Why a hash key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash_key {0:?} is not one of `client_ip` or `header:<name>` with a valid header name")]
pub struct HashKeyError(pub String);

/// Parses a `hash_key`: empty or `client_ip`, or `header:<name>`.
pub fn hash_key(raw: &str) -> Result<HashKey, HashKeyError> {
    match raw.trim() {
        "" | "client_ip" => Ok(HashKey::ClientIp),
        other => {
            let name = other.strip_prefix("header:").ok_or_else(|| HashKeyError(raw.to_owned()))?;
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(HashKeyError(raw.to_owned()));
            }
            Ok(HashKey::Header(name.to_ascii_lowercase()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_query_values() {
        let url = endpoint_url("https://up.example/mcp?api_key=s3cret&region=eu").unwrap();
        assert_eq!(redacted(&url), "https://up.example/mcp?api_key=redacted&region=redacted");
        let plain = endpoint_url("http://127.0.0.1:3001/mcp").unwrap();
        assert_eq!(redacted(&plain), "http://127.0.0.1:3001/mcp");
    }

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "0", "everything", "py-server-2", &"a".repeat(63)] {
            assert_eq!(server_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(server_name(""), Err(NameError::Empty));
        assert_eq!(server_name(&"a".repeat(64)), Err(NameError::TooLong(64)));
        assert_eq!(server_name("Upper"), Err(NameError::InvalidChar('U')));
        assert_eq!(server_name("a_b"), Err(NameError::InvalidChar('_')));
        assert_eq!(server_name("a/b"), Err(NameError::InvalidChar('/')));
        assert_eq!(server_name("-a"), Err(NameError::BadEdge));
        assert_eq!(server_name("a-"), Err(NameError::BadEdge));
        assert_eq!(server_name("é"), Err(NameError::InvalidChar('é')));
    }

    #[test]
    fn endpoint_rules() {
        assert!(endpoint_url("http://127.0.0.1:3001/mcp").is_ok());
        assert!(endpoint_url("https://mcp.example.com/v1/mcp?x=1").is_ok());
        assert!(matches!(endpoint_url("/mcp"), Err(EndpointError::Parse(_))));
        assert!(matches!(endpoint_url("not a url"), Err(EndpointError::Parse(_))));
        assert_eq!(endpoint_url("ftp://host/x"), Err(EndpointError::Scheme("ftp".into())));
        assert_eq!(endpoint_url("file:///etc/passwd"), Err(EndpointError::Scheme("file".into())));
        assert_eq!(endpoint_url("http://u:p@host/mcp"), Err(EndpointError::Credentials));
        assert_eq!(endpoint_url("http://host/mcp#frag"), Err(EndpointError::Fragment));
    }

    #[test]
    fn hash_keys() {
        assert_eq!(hash_key(""), Ok(HashKey::ClientIp));
        assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(hash_key("header:X-User-Id"), Ok(HashKey::Header("x-user-id".into())));
        for bad in ["header:", "header:a b", "cookie:x", "x-user-id"] {
            assert!(hash_key(bad).is_err(), "{bad}");
        }
    }
}
