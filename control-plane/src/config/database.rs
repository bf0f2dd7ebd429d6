//! The `--database-url` value: a PostgreSQL URL that names one database, with its name split out.

use std::fmt;

use url::Url;

use super::ConfigError;

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
