//! The control plane's browser cookies (the authorization server's sign-in and consent, the console's
//! session and sign-in): host-only, `HttpOnly`, `Path=/`; over https `Secure` and `__Host-` prefixed.

use actix_web::http::header::{self, HeaderMap, HeaderValue};

/// Whether a cookie may ride on a cross-site request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Top-level navigations from another site carry it (a redirect back from an IdP).
    Lax,
    /// Only requests started by this site carry it.
    Strict,
}

/// Cookie `base`'s name: `__Host-<base>` when `secure`, which requires `Secure` and forbids a `Domain`.
pub fn name(base: &str, secure: bool) -> String {
    if secure { format!("__Host-{base}") } else { base.to_owned() }
}

/// `Set-Cookie` for cookie `base` (`max_age` 0 removes it); `None` for a value a header cannot hold.
pub fn set(base: &str, value: &str, max_age: u64, same_site: SameSite, secure: bool) -> Option<HeaderValue> {
    let flags = if secure { "; Secure" } else { "" };
    let text = format!(
        "{}={value}; Path=/; HttpOnly; SameSite={same_site:?}; Max-Age={max_age}{flags}",
        name(base, secure)
    );
    HeaderValue::from_str(&text).ok()
}

/// The non-empty value of the cookie named `name` in a request's headers.
pub fn value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// Cookie `base` under either name (a browser may hold the one set over http and the one over https).
pub fn either(headers: &HeaderMap, base: &str) -> Option<String> {
    value(headers, &name(base, true)).or_else(|| value(headers, base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_attributes() {
        let set = set("s", "v1", 60, SameSite::Strict, true).unwrap();
        assert_eq!(set, "__Host-s=v1; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure");
        let lax = set_plain();
        assert_eq!(lax, "s=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; s=; __Host-s=2"));
        assert_eq!(value(&headers, "a").as_deref(), Some("1"));
        assert_eq!(value(&headers, "s"), None, "an empty value is none");
        assert_eq!(either(&headers, "s").as_deref(), Some("2"));
    }

    fn set_plain() -> HeaderValue {
        set("s", "", 0, SameSite::Lax, false).unwrap()
    }
}
